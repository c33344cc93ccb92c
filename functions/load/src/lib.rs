//! The Conveyor **load** function: the load step: an object arrived, load it into BigQuery; a
//! message of a message pipeline arrived (`POST /messages/<pipeline>`), write its rows. A Cloud Run service (or AWS Lambda
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
pub const STEP: StepName = StepName::Load;

/// The function's router: `POST /` (every accepted wire shape) and `GET /healthz`.
pub fn router(ctx: Context) -> Router {
    conveyor_core::http::router(STEP, ctx)
}

/// The ports the load step uses, on Google Cloud: Cloud Storage (to read an object's generation), BigQuery (load jobs, the
/// rows of message pipelines, and the run log: a paused pipeline's arrivals are held) and Pub/Sub.
///
/// # Errors
/// When a client cannot be built.
pub async fn ports(gcp: &Gcp) -> Result<Ports, PortError> {
    let bigquery = Arc::new(gcp.bigquery());
    Ok(Ports {
        store: Arc::new(gcp.store()),
        rows: bigquery.clone(),
        run_log: bigquery.clone(),
        warehouse: bigquery,
        bus: Arc::new(gcp.bus().await?),
        ..Ports::unwired()
    })
}
