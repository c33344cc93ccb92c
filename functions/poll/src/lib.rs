//! The Conveyor **poll** function: the poll step: follow open batches to a terminal state. A Cloud Run service (or AWS Lambda
//! function) on the Google Cloud adapters.
//!
//! # Layout
//! - `lib.rs`: [`router`], so tests call it without a socket, and [`ports`], the only
//!   adapters this binary links.
//! - `main.rs`: hands both to [`conveyor_service::start`].

use std::sync::Arc;

use axum::Router;
use conveyor_core::event::StepName;
use conveyor_core::ports::{PortError, Ports};
use conveyor_core::steps::Context;
use conveyor_gcp::Gcp;

/// The step this function runs.
pub const STEP: StepName = StepName::Poll;

/// The function's router: `POST /` (every accepted wire shape) and `GET /healthz`.
pub fn router(ctx: Context) -> Router {
    conveyor_core::http::router(STEP, ctx)
}

/// The ports the poll step uses, on Google Cloud: the batch engines (Google Cloud's and SSH), BigQuery (run log, load
/// jobs handed over by the load step), Cloud Storage (load windows) and Pub/Sub.
///
/// # Errors
/// When a client cannot be built.
pub async fn ports(gcp: &Gcp) -> Result<Ports, PortError> {
    Ok(Ports {
        store: Arc::new(gcp.store()),
        ..conveyor_service::batch_ports(gcp).await?
    })
}
