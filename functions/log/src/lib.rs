//! The Conveyor **log** function: the log step: record every event in the run log. A Cloud Run service (or AWS Lambda
//! function) on the Google Cloud adapters.
//!
//! # Layout
//! - `lib.rs`: [`router`], so tests call it without a socket, and [`ports`], the only
//!   adapters this binary links.
//! - `main.rs`: hands both to [`conveyor_gcp::service::main`].

use std::sync::Arc;

use axum::Router;
use conveyor_core::event::StepName;
use conveyor_core::ports::{EventBus, PortError, Ports};
use conveyor_core::steps::Context;
use conveyor_gcp::Gcp;
use conveyor_postgres::PostgresSinks;

/// The step this function runs.
pub const STEP: StepName = StepName::Log;

/// The function's router: `POST /` (every accepted wire shape) and `GET /healthz`.
pub fn router(ctx: Context) -> Router {
    conveyor_core::http::router(STEP, ctx)
}

/// The ports the log step uses, on Google Cloud: the BigQuery run log, the PostgreSQL sinks
/// (connection strings from Secret Manager, or `CONVEYOR_POSTGRES_URL`), Pub/Sub (it records
/// its own rejections) and the alerts topic (`CONVEYOR_ALERTS_TOPIC`), when there is one.
///
/// # Errors
/// When a client cannot be built.
pub async fn ports(gcp: &Gcp) -> Result<Ports, PortError> {
    let url = gcp
        .settings()
        .postgres_url
        .as_ref()
        .map(|u| u.expose().to_owned());
    let alerts = gcp
        .alerts_bus()
        .await?
        .map(|b| Arc::new(b) as Arc<dyn EventBus>);
    Ok(Ports {
        run_log: Arc::new(gcp.bigquery()),
        sinks: Arc::new(PostgresSinks::new(Arc::new(gcp.secrets()), url)),
        bus: Arc::new(gcp.bus().await?),
        alerts,
        ..Ports::unwired()
    })
}
