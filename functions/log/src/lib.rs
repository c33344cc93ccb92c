//! The Conveyor **log** function: the log step: record every event in the run log. A Cloud Run service (or AWS Lambda
//! function) on the Google Cloud adapters.
//!
//! # Layout
//! - `lib.rs`: [`router`], so tests call it without a socket, and [`ports`], the only
//!   adapters this binary links.
//! - `main.rs`: hands both to [`conveyor_service::start`].

use std::sync::Arc;

use axum::Router;
use conveyor_core::event::StepName;
use conveyor_core::ports::{EventBus, PortError, Ports};
use conveyor_core::steps::Context;
use conveyor_gcp::{DataLineage, Gcp};
use conveyor_postgres::PostgresSinks;
use serde::Deserialize;

/// The log function's own settings, read once at start-up from `CONVEYOR_*` variables.
#[derive(Deserialize)]
struct LogSettings {
    /// `CONVEYOR_POSTGRES_URL`: the connection string of a `run_log.postgres` sink without a
    /// `url_secret` (prefer the secret: a variable is visible to whoever can read the
    /// service). Never logged.
    #[serde(default)]
    postgres_url: Option<Redacted>,
    /// `CONVEYOR_ALERTS_TOPIC`: where every event that ends a run in failure is also
    /// published (`projects/P/topics/T`, or `T`); unset: no alerts topic.
    #[serde(default)]
    alerts_topic: Option<String>,
    /// `CONVEYOR_LINEAGE_LOCATION`: the Data Lineage location OpenLineage events are recorded
    /// in when the pipeline file has `lineage:` (a region, or `us` / `eu`; default `us`).
    #[serde(default = "default_lineage_location")]
    lineage_location: String,
    /// `CONVEYOR_LINEAGE_ENDPOINT`: override of `https://datalineage.googleapis.com`.
    #[serde(default = "default_lineage_endpoint")]
    lineage_endpoint: String,
}

fn default_lineage_location() -> String {
    "us".to_owned()
}

fn default_lineage_endpoint() -> String {
    "https://datalineage.googleapis.com".to_owned()
}

impl LogSettings {
    fn from_env() -> Result<Self, PortError> {
        envy::prefixed("CONVEYOR_").from_env::<Self>().map_err(|e| {
            PortError::permanent(format!(
                "bad CONVEYOR_POSTGRES_URL, CONVEYOR_ALERTS_TOPIC or CONVEYOR_LINEAGE_*: {e}"
            ))
        })
    }
}

/// A setting holding a credential: its `Debug` does not show it.
#[derive(Deserialize)]
#[serde(transparent)]
struct Redacted(String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The step this function runs.
pub const STEP: StepName = StepName::Log;

/// The function's router: `POST /` (every accepted wire shape) and `GET /healthz`.
pub fn router(ctx: Context) -> Router {
    conveyor_core::http::router(STEP, ctx)
}

/// The ports the log step uses, on Google Cloud: the BigQuery run log, the PostgreSQL sinks
/// (connection strings from Secret Manager, or `CONVEYOR_POSTGRES_URL`), Pub/Sub (it records
/// its own rejections), the alerts topic (`CONVEYOR_ALERTS_TOPIC`), when there is one, and
/// Dataplex's Data Lineage API (used when the pipeline file has `lineage:`).
///
/// # Errors
/// When a client cannot be built.
pub async fn ports(gcp: &Gcp) -> Result<Ports, PortError> {
    let settings = LogSettings::from_env()?;
    let url = settings.postgres_url.map(|u| u.0);
    let alerts = match settings.alerts_topic.filter(|t| !t.is_empty()) {
        Some(topic) => Some(Arc::new(gcp.bus_on(&topic).await?) as Arc<dyn EventBus>),
        None => None,
    };
    Ok(Ports {
        run_log: Arc::new(gcp.bigquery()),
        sinks: Arc::new(PostgresSinks::new(Arc::new(gcp.secrets()), url)),
        bus: Arc::new(gcp.bus().await?),
        alerts,
        notifier: Some(Arc::new(conveyor_gcp::GcpNotifier::new(gcp.clone()))),
        secrets: Arc::new(gcp.secrets()),
        lineage: Some(Arc::new(DataLineage::new(
            &settings.lineage_endpoint,
            &gcp.settings().project,
            &settings.lineage_location,
            gcp.auth().clone(),
        ))),
        ..Ports::unwired()
    })
}
