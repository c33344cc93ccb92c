//! Running one function as a service: configuration from the environment, adapters, HTTP
//! server with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use tracing::info;

use crate::config;
use crate::event::StepName;
use crate::runtime::{Embedded, RuntimeOptions};
use crate::telemetry::{self, LogFormat};

/// Which adapter set a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Adapters {
    /// Everything on this machine (the default).
    #[default]
    Embedded,
    /// Google Cloud: Pub/Sub, Cloud Storage, BigQuery and the batch engines' APIs.
    Gcp,
}

/// A service's configuration, read once at start-up from `CONVEYOR_*` variables.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceConfig {
    /// `CONVEYOR_CONFIG`: the pipeline configuration file.
    #[serde(default = "default_config")]
    pub config: PathBuf,
    /// `CONVEYOR_ADAPTERS`: `embedded` (default) or `gcp`.
    #[serde(default, deserialize_with = "adapters_var")]
    pub adapters: Adapters,
    /// `CONVEYOR_STATE_DIR`: the embedded state directory (default `.conveyor`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `CONVEYOR_LOG_FORMAT`: `text` (default) or `json` (Cloud Logging).
    #[serde(default, deserialize_with = "log_format_var")]
    pub log_format: LogFormat,
    /// `CONVEYOR_LOG`: a tracing filter such as `info,conveyor=debug`.
    #[serde(default = "default_log")]
    pub log: String,
}

/// envy names the variable for malformed numbers but not for unknown enum words: these do.
fn adapters_var<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Adapters, D::Error> {
    match String::deserialize(d)?.as_str() {
        "embedded" => Ok(Adapters::Embedded),
        "gcp" => Ok(Adapters::Gcp),
        other => Err(serde::de::Error::custom(format!(
            "CONVEYOR_ADAPTERS must be `embedded` or `gcp`, not {other:?}"
        ))),
    }
}

fn log_format_var<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    match String::deserialize(d)?.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(serde::de::Error::custom(format!(
            "CONVEYOR_LOG_FORMAT must be `text` or `json`, not {other:?}"
        ))),
    }
}

fn default_config() -> PathBuf {
    PathBuf::from("conveyor.yaml")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(".conveyor")
}
fn default_log() -> String {
    "info".to_owned()
}

#[derive(Debug, Deserialize)]
struct Platform {
    /// Cloud Run's `PORT`.
    #[serde(default = "default_port")]
    port: u16,
    /// Set by AWS Lambda: run the same router through the Lambda runtime.
    #[serde(default)]
    aws_lambda_runtime_api: Option<String>,
}

fn default_port() -> u16 {
    8080
}

impl ServiceConfig {
    /// Reads `CONVEYOR_*` from the environment.
    ///
    /// # Errors
    /// Names the variable that is missing or malformed.
    pub fn from_env() -> anyhow::Result<Self> {
        envy::prefixed("CONVEYOR_").from_env::<Self>().map_err(|e| {
            anyhow::anyhow!(
                "bad service configuration: {}",
                envy_message(e, "CONVEYOR_")
            )
        })
    }
}

fn envy_message(e: envy::Error, prefix: &str) -> String {
    match e {
        envy::Error::MissingValue(field) => {
            format!("missing variable {prefix}{}", field.to_ascii_uppercase())
        }
        envy::Error::Custom(msg) => msg,
    }
}

/// Waits for SIGTERM (Cloud Run's stop signal) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves `router` on `addr` until `shutdown`, then drains in-flight requests.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    router: axum::Router,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    info!(addr = %listener.local_addr().unwrap_or(addr), "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed")
}

/// `main` of a function binary: runs it, and on failure prints the error chain (no backtrace)
/// and exits with status 1, so a bad variable reads as one clear line in Cloud Logging.
pub async fn main(step: StepName) -> std::process::ExitCode {
    match run_function(step).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the service cannot start");
            eprintln!("conveyor-{step}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole life of a function binary: config, telemetry, adapters, serve (on Cloud Run,
/// or on AWS Lambda when `AWS_LAMBDA_RUNTIME_API` is set).
///
/// # Errors
/// When the configuration is bad or the server cannot start.
pub async fn run_function(step: StepName) -> anyhow::Result<()> {
    let settings = ServiceConfig::from_env()?;
    let platform = envy::from_env::<Platform>()
        .map_err(|e| anyhow::anyhow!("bad platform variable: {}", envy_message(e, "")))?;
    telemetry::init(settings.log_format, &settings.log);
    let pipelines = Arc::new(config::load_file(&settings.config)?);
    let addr = SocketAddr::from(([0, 0, 0, 0], platform.port));
    match settings.adapters {
        Adapters::Embedded => {
            let mut embedded = Embedded::open(pipelines, &settings.state_dir)?;
            let router = crate::http::router(step, embedded.context());
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let runtime = tokio::spawn(async move {
                embedded
                    .run(RuntimeOptions::default(), async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
            let result = serve_on(router, addr, platform.aws_lambda_runtime_api.is_some()).await;
            let _ = stop_tx.send(());
            let _ = runtime.await;
            result
        }
        Adapters::Gcp => {
            let gcp = crate::adapters::gcp::GcpSettings::from_env()?;
            let ports = crate::adapters::gcp::ports(&gcp).await?;
            let ctx = crate::steps::Context {
                config: pipelines,
                ports,
            };
            info!(step = %step, project = %gcp.project, topic = %gcp.topic(), "starting on Google Cloud adapters");
            serve_on(
                crate::http::router(step, ctx),
                addr,
                platform.aws_lambda_runtime_api.is_some(),
            )
            .await
        }
    }
}

/// Serves over HTTP, or through the Lambda runtime API when running on AWS Lambda.
async fn serve_on(router: axum::Router, addr: SocketAddr, lambda: bool) -> anyhow::Result<()> {
    if lambda {
        info!("running on AWS Lambda");
        return lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    }
    serve(router, addr, shutdown_signal()).await
}
