//! The Conveyor **submit** function: the submit step: start a batch after a load. A Cloud Run service (or AWS Lambda
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
pub const STEP: StepName = StepName::Submit;

/// The function's router: `POST /` (every accepted wire shape) and `GET /healthz`.
pub fn router(ctx: Context) -> Router {
    conveyor_core::http::router(STEP, ctx)
}

/// The ports the submit step uses, on Google Cloud: the batch engines (Google Cloud's and SSH), BigQuery (a
/// `for_each` job's configuration table; the run log, for fan-in) and Pub/Sub.
///
/// # Errors
/// When a client cannot be built.
pub async fn ports(gcp: &Gcp) -> Result<Ports, PortError> {
    let bigquery = Arc::new(gcp.bigquery());
    Ok(Ports {
        batch: Arc::new(conveyor_service::engines(gcp)?),
        warehouse: bigquery.clone(),
        run_log: bigquery,
        bus: Arc::new(gcp.bus().await?),
        secrets: Arc::new(gcp.secrets()),
        ..Ports::unwired()
    })
}
