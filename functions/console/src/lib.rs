//! The Conveyor **console** service: the web console (pipeline graphs, run grids, run
//! timelines, errors, objects and tables touched) on Cloud Run, behind Identity-Aware Proxy,
//! reading the BigQuery run log with read-only roles.
//!
//! # Layout
//! - `lib.rs`: [`Settings`] (its `CONVEYOR_*` variables), [`router`] (the console's pages,
//!   `/healthz`, traced requests) and [`run`].
//! - `main.rs`: hands [`run`] to [`conveyor_service::start_with`], the functions' runner.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use conveyor_console::Console;
use conveyor_gcp::{Gcp, GcpSettings};
use conveyor_service::telemetry::{self, LogFormat};
use conveyor_service::{Platform, ServeOptions};
use serde::Deserialize;
use tracing::info;

/// The console's own settings, read once at start-up; the Google Cloud ones are
/// [`GcpSettings`] (`CONVEYOR_PROJECT`, `CONVEYOR_BIGQUERY_*`; the events topic is not used).
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `CONVEYOR_CONFIG`: the pipeline file the graphs are drawn from (optional: without it
    /// the console shows the run log only).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// `CONVEYOR_LOG_FORMAT`: `text` or `json` (Cloud Logging).
    #[serde(default)]
    pub log_format: LogFormat,
    /// `CONVEYOR_LOG`: a tracing filter.
    #[serde(default = "default_log")]
    pub log: String,
}

fn default_log() -> String {
    "info".to_owned()
}

/// The service's router: the console's pages, `/healthz`, and a traced span per request.
pub fn router(console: Console) -> Router {
    conveyor_console::router(console)
        .route("/healthz", get(|| async { "ok" }))
        .layer(conveyor_core::trace::layer())
}

/// Reads the settings, opens the BigQuery run log and serves until SIGTERM.
///
/// # Errors
/// A bad or missing variable (named), unreadable pipeline file, or a server failure.
pub async fn run() -> anyhow::Result<()> {
    let settings: Settings = envy::prefixed("CONVEYOR_")
        .from_env()
        .map_err(|e| anyhow::anyhow!("bad CONVEYOR_* variable: {e}"))?;
    telemetry::init(settings.log_format, &settings.log);
    let platform = Platform::from_env()?;
    let gcp_settings: GcpSettings = envy::prefixed("CONVEYOR_")
        .from_env::<GcpEnv>()
        .map_err(|e| anyhow::anyhow!("bad CONVEYOR_* variable: {e}"))?
        .into();
    let config = match &settings.config {
        Some(path) => Some(Arc::new(
            conveyor_core::config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        None => None,
    };
    let project = gcp_settings.project.clone();
    conveyor_service::cloud_logging::set_project(&project);
    let gcp = Gcp::connect(gcp_settings).context("Google Cloud credentials")?;
    let run_log = Arc::new(gcp.bigquery());
    let console = Console::new(run_log, config).with_title(format!("project {project}"));
    info!(project = %project, port = platform.port, "console starting");
    conveyor_service::serve_port(router(console), platform.port, ServeOptions::default()).await
}

/// The Google Cloud variables the console reads: [`GcpSettings`] without the events topic.
#[derive(Debug, Deserialize)]
struct GcpEnv {
    project: String,
    #[serde(default)]
    bigquery_location: Option<String>,
    #[serde(default)]
    bigquery_endpoint: Option<String>,
    #[serde(default)]
    anonymous: bool,
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    http_timeout: std::time::Duration,
}

fn default_http_timeout() -> std::time::Duration {
    conveyor_gcp::rest::REQUEST_TIMEOUT
}

impl From<GcpEnv> for GcpSettings {
    fn from(e: GcpEnv) -> Self {
        GcpSettings {
            project: e.project,
            events_topic: String::new(),
            bigquery_location: e.bigquery_location,
            pubsub_endpoint: None,
            gcs_endpoint: "https://storage.googleapis.com".to_owned(),
            bigquery_endpoint: e.bigquery_endpoint,
            secretmanager_endpoint: "https://secretmanager.googleapis.com".to_owned(),
            bigquery_emulator: false,
            anonymous: e.anonymous,
            dataproc_endpoint: None,
            dataflow_endpoint: None,
            http_timeout: e.http_timeout,
        }
    }
}
