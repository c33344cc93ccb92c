//! The Conveyor **stage** function: the stage step: copies source data into the landing bucket. A Cloud Run service (or AWS Lambda
//! function) on the Google Cloud adapters.
//!
//! # Layout
//! - `lib.rs`: [`router`], so tests call it without a socket, and [`ports`], the only
//!   adapters this binary links.
//! - `main.rs`: hands both to [`conveyor_service::start`].

use std::sync::Arc;

use axum::Router;
use conveyor_core::event::StepName;
use conveyor_core::ports::{ObjectStore, PortError, Ports};
use conveyor_core::steps::Context;
use conveyor_gcp::{DataLineage, Gcp};
use conveyor_sources::Connector;

/// The step this function runs.
pub const STEP: StepName = StepName::Stage;

/// The function's router: `POST /` (every accepted wire shape) and `GET /healthz`.
pub fn router(ctx: Context) -> Router {
    conveyor_core::http::router(STEP, ctx)
}

/// The ports the stage step uses, on Google Cloud: Cloud Storage (the landing bucket and bucket sources), the stage sources with Secret
/// Manager for their credentials, BigQuery's run log (a paused pipeline's ticks are held), Pub/Sub, and
/// Dataplex's Data Lineage API (a stage run's OpenLineage events, when the pipeline file has
/// `lineage:`; `CONVEYOR_LINEAGE_LOCATION`, default `us`, and `CONVEYOR_LINEAGE_ENDPOINT`, as
/// the log function reads them).
///
/// # Errors
/// When a client cannot be built.
pub async fn ports(gcp: &Gcp) -> Result<Ports, PortError> {
    let store: Arc<dyn ObjectStore> = Arc::new(gcp.store());
    let sources = Connector::new(store.clone(), Arc::new(gcp.secrets()));
    Ok(Ports {
        store,
        sources: Arc::new(sources),
        run_log: Arc::new(gcp.bigquery()),
        bus: Arc::new(gcp.bus().await?),
        lineage: Some(Arc::new(DataLineage::new(
            &setting(
                "CONVEYOR_LINEAGE_ENDPOINT",
                "https://datalineage.googleapis.com",
            ),
            &gcp.settings().project,
            &setting("CONVEYOR_LINEAGE_LOCATION", "us"),
            gcp.auth().clone(),
        ))),
        ..Ports::unwired()
    })
}

/// The variable `name`, or `default` when it is unset or empty.
fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}
