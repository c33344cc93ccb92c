//! `main` of a function binary: configuration from the environment, telemetry, the ports its
//! step uses, and the HTTP server with graceful shutdown (Cloud Run), or the Lambda runtime
//! (AWS Lambda). The embedded mode is the CLI's (`conveyor dev`), not the functions'.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use conveyor_core::config;
use conveyor_core::event::StepName;
use conveyor_core::ports::{PortError, Ports};
use conveyor_core::steps::Context;
use conveyor_gcp::{Gcp, GcpAuth, GcpSettings, oidc};
use serde::Deserialize;
use tracing::info;

use crate::serve::{ServeOptions, bind, serve, shutdown_signal};
use crate::telemetry::{self, LogFormat};

/// A function's own configuration, read once at start-up from `CONVEYOR_*` variables
/// (the Google Cloud ones are [`GcpSettings`]).
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceConfig {
    /// `CONVEYOR_CONFIG`: the pipeline configuration file.
    #[serde(default = "default_config")]
    pub config: PathBuf,
    /// `CONVEYOR_ADAPTERS`: `gcp`, the only adapter set of a function binary; `embedded` is
    /// refused with a pointer to `conveyor dev`.
    #[serde(default)]
    pub adapters: Option<String>,
    /// `CONVEYOR_LOG_FORMAT`: `text` (default) or `json` (Cloud Logging).
    #[serde(default, deserialize_with = "log_format_var")]
    pub log_format: LogFormat,
    /// `CONVEYOR_LOG`: a tracing filter such as `info,conveyor=debug`.
    #[serde(default = "default_log")]
    pub log: String,
    /// `CONVEYOR_AUTH_AUDIENCES`: when set (comma-separated; the service's URL), every
    /// request but `GET /healthz` needs a Google-signed OIDC token for one of these audiences
    /// whose email is in `CONVEYOR_AUTH_ALLOWED` (see [`conveyor_gcp::oidc`]).
    #[serde(default)]
    pub auth_audiences: Vec<String>,
    /// `CONVEYOR_AUTH_ALLOWED`: the service accounts that may call (comma-separated emails).
    #[serde(default)]
    pub auth_allowed: Vec<String>,
    /// `CONVEYOR_AUTH_JWKS_URL`: where the signing keys are (default Google's).
    #[serde(default = "default_jwks")]
    pub auth_jwks_url: String,
    /// `CONVEYOR_AUTH_MODE`: `verify` (default: the function verifies each token's signature;
    /// AWS Lambda, `--allow-unauthenticated`) or `cloud-run` (the service requires
    /// authentication, so Cloud Run verified the token and removed its signature: its claims
    /// are checked). See [`oidc::AuthMode`].
    #[serde(default, deserialize_with = "auth_mode_var")]
    pub auth_mode: oidc::AuthMode,
    /// `CONVEYOR_LOAD_WAIT`: how long a load request waits for its BigQuery job before the
    /// poll tick takes it over (`10s` by default; at most `60s`, so no request holds compute).
    #[serde(default = "default_load_wait", with = "humantime_serde")]
    pub load_wait: std::time::Duration,
    /// `CONVEYOR_TICK_BUDGET`: how long one poll tick may work before it leaves the rest to
    /// the next tick (`45s` by default; keep it under the tick's interval so ticks never
    /// overlap).
    #[serde(default = "default_tick_budget", with = "humantime_serde")]
    pub tick_budget: std::time::Duration,
    /// `CONVEYOR_HEADER_READ_TIMEOUT`: how long a connection may take to send a request's
    /// headers, or stay idle between requests, before it is closed (`10s` by default).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: std::time::Duration,
    /// `CONVEYOR_MAX_CONNECTIONS`: most connections open at once; at the limit a new one
    /// closes the longest-open idle one (default: from the open-file limit, 768 for 1,024).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// `CONVEYOR_STATE_BUCKET`: the bucket where submit and poll take the objects that must be
    /// created once (`_conveyor/slots/…` for `max_active_runs`, `_conveyor/claims/…` for the
    /// submits of `engine: cloud_run_job` and `engine: http`); Terraform sets the landing
    /// bucket. Unset: `max_active_runs` counts the runs in the run log (a burst of starts can
    /// pass it) and those submits are not claimed.
    #[serde(default)]
    pub state_bucket: Option<String>,
}

fn default_header_read_timeout() -> std::time::Duration {
    crate::serve::DEFAULT_HEADER_READ_TIMEOUT
}

fn default_tick_budget() -> std::time::Duration {
    conveyor_core::steps::StepOptions::default().tick_budget
}

fn default_jwks() -> String {
    oidc::GOOGLE_JWKS.to_owned()
}

fn default_load_wait() -> std::time::Duration {
    conveyor_core::steps::StepOptions::default().load_wait
}

/// envy names the variable for malformed numbers but not for unknown enum words: this does.
fn log_format_var<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    match String::deserialize(d)?.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(serde::de::Error::custom(format!(
            "CONVEYOR_LOG_FORMAT must be `text` or `json`, not {other:?}"
        ))),
    }
}

fn auth_mode_var<'de, D: serde::Deserializer<'de>>(d: D) -> Result<oidc::AuthMode, D::Error> {
    oidc::AuthMode::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn default_config() -> PathBuf {
    PathBuf::from("conveyor.yaml")
}

fn default_log() -> String {
    "info".to_owned()
}

/// What the platform tells a service: where to listen, or that it runs on AWS Lambda.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// Cloud Run's `PORT` (8080 when unset; `0` takes a free port, logged as `listening`).
    #[serde(default = "default_port")]
    pub port: u16,
    /// `AWS_LAMBDA_RUNTIME_API`, set by AWS Lambda: run the same router through the Lambda
    /// runtime.
    #[serde(default)]
    pub aws_lambda_runtime_api: Option<String>,
}

impl Platform {
    /// Reads `PORT` and `AWS_LAMBDA_RUNTIME_API`.
    ///
    /// # Errors
    /// When `PORT` is not a port number (the error names it).
    pub fn from_env() -> anyhow::Result<Self> {
        envy::from_env::<Self>()
            .map_err(|e| anyhow::anyhow!("bad platform variable: {}", envy_message(e, "")))
    }
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
        let c = envy::prefixed("CONVEYOR_")
            .from_env::<Self>()
            .map_err(|e| {
                anyhow::anyhow!(
                    "bad service configuration: {}",
                    envy_message(e, "CONVEYOR_")
                )
            })?;
        if c.load_wait > std::time::Duration::from_secs(60) {
            anyhow::bail!(
                "CONVEYOR_LOAD_WAIT must be at most 60s (a request should not hold compute while BigQuery works), not {}",
                humantime::format_duration(c.load_wait)
            );
        }
        if c.tick_budget.is_zero() || c.tick_budget > std::time::Duration::from_secs(3600) {
            anyhow::bail!(
                "CONVEYOR_TICK_BUDGET must be more than 0 and at most 1h (keep it under the poll tick's interval), not {}",
                humantime::format_duration(c.tick_budget)
            );
        }
        if c.header_read_timeout.is_zero()
            || c.header_read_timeout > std::time::Duration::from_secs(300)
        {
            anyhow::bail!(
                "CONVEYOR_HEADER_READ_TIMEOUT must be more than 0 and at most 5m, not {}",
                humantime::format_duration(c.header_read_timeout)
            );
        }
        if c.max_connections == Some(0) {
            anyhow::bail!("CONVEYOR_MAX_CONNECTIONS must be at least 1");
        }
        if !c.auth_audiences.is_empty() && c.auth_allowed.is_empty() {
            anyhow::bail!(
                "CONVEYOR_AUTH_AUDIENCES is set but CONVEYOR_AUTH_ALLOWED is empty: name the service accounts that may call (comma-separated)"
            );
        }
        match c.adapters.as_deref() {
            None | Some("gcp") => Ok(c),
            Some("embedded") => anyhow::bail!(
                "CONVEYOR_ADAPTERS=embedded: the function binaries run on Google Cloud; for \
                 the embedded mode on one machine run `conveyor dev`, which serves all five \
                 functions"
            ),
            Some(other) => anyhow::bail!("CONVEYOR_ADAPTERS must be `gcp`, not {other:?}"),
        }
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

/// Runs a function binary on a Tokio runtime sized to the CPUs the instance may use (see
/// [`start_with`]): [`run`] of `step`, its ports wired by `ports` (the others stay
/// [`Ports::unwired`]).
pub fn start(
    step: StepName,
    ports: impl AsyncFnOnce(&Gcp) -> Result<Ports, PortError>,
) -> std::process::ExitCode {
    start_with(&format!("conveyor-{step}"), run(step, ports))
}

/// `main` of a service binary named `name`: runs `service` on a Tokio runtime sized to the
/// CPUs the instance may use — on one CPU (Cloud Run's default) a single-threaded runtime (no
/// worker thread, no wake-ups across threads: less CPU per event); otherwise a worker thread
/// per CPU. On failure it prints the error chain (no backtrace) and exits with status 1, so a
/// bad variable reads as one clear line in Cloud Logging.
pub fn start_with(
    name: &str,
    service: impl Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(service) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the service cannot start");
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves `router` on `0.0.0.0:port` until SIGTERM or Ctrl-C ([`shutdown_signal`]), draining
/// in-flight requests: a Cloud Run service's life.
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve_port(router: Router, port: u16, options: ServeOptions) -> anyhow::Result<()> {
    let listener = bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    serve(listener, router, shutdown_signal(), options)
        .await
        .context("server failed")
}

/// Serves `router` through the AWS Lambda runtime.
#[cfg(feature = "lambda")]
async fn run_on_lambda(router: Router) -> anyhow::Result<()> {
    info!("running on AWS Lambda");
    lambda_http::run(router)
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

/// Without the `lambda` feature (the Cloud Run build) there is no Lambda runtime to run on.
#[cfg(not(feature = "lambda"))]
async fn run_on_lambda(_router: Router) -> anyhow::Result<()> {
    anyhow::bail!(
        "AWS_LAMBDA_RUNTIME_API is set, but this binary was built for Cloud Run, without the \
         `lambda` feature: build the Lambda binary with `cargo build -p conveyor-<step> --features lambda`"
    )
}

/// The whole life of a function binary: config, telemetry, ports, serve (on Cloud Run, or on
/// AWS Lambda when `AWS_LAMBDA_RUNTIME_API` is set).
///
/// # Errors
/// When the configuration is bad or the server cannot start.
pub async fn run(
    step: StepName,
    ports: impl AsyncFnOnce(&Gcp) -> Result<Ports, PortError>,
) -> anyhow::Result<()> {
    let platform = Platform::from_env()?;
    let (router, options) = prepare(step, ports, &platform).await?;
    if platform.aws_lambda_runtime_api.is_some() {
        return run_on_lambda(router).await;
    }
    serve_port(router, platform.port, options).await
}

/// A function binary up to serving: reads its configuration, starts telemetry, wires the
/// ports and checks them against the pipeline file; returns the router (with the caller
/// check when configured) and the serving options. [`run`] serves it; a test can
/// [`serve`](crate::serve()) it on a listener it bound.
///
/// # Errors
/// When the configuration is bad or a port cannot be built.
pub async fn prepare(
    step: StepName,
    ports: impl AsyncFnOnce(&Gcp) -> Result<Ports, PortError>,
    platform: &Platform,
) -> anyhow::Result<(Router, ServeOptions)> {
    let settings = ServiceConfig::from_env()?;
    if platform.aws_lambda_runtime_api.is_some() && settings.auth_mode == oidc::AuthMode::CloudRun {
        anyhow::bail!(
            "CONVEYOR_AUTH_MODE=cloud-run on AWS Lambda: nothing in front of a Lambda function \
             verifies Google's tokens, so the function must (CONVEYOR_AUTH_MODE=verify)"
        );
    }
    telemetry::init(settings.log_format, &settings.log);
    let pipelines = Arc::new(config::load_file(&settings.config)?);
    let gcp = Gcp::connect(GcpSettings::from_env()?)?;
    if let GcpAuth::Metadata(token) = gcp.auth() {
        // The first request needs the token: ask the metadata server while the server starts
        // (a request that comes first waits for this fetch instead of making its own).
        let token = token.clone();
        tokio::spawn(async move {
            if let Err(e) = token.token().await {
                tracing::warn!(error = %e, "no token from the metadata server yet; the first request asks again");
            }
        });
    }
    crate::cloud_logging::set_project(&gcp.settings().project);
    let ports = ports(&gcp).await?;
    // A port the pipeline file needs and this function lacks is a deployment mistake: say so
    // now, not on the first event that needs it.
    conveyor_core::steps::check_wiring(step, &pipelines, &ports)
        .with_context(|| format!("{}", settings.config.display()))?;
    let mut ctx = Context::new(pipelines, ports);
    ctx.options.load_wait = settings.load_wait;
    ctx.options.tick_budget = settings.tick_budget;
    if let Some(bucket) = &settings.state_bucket {
        ctx.options.state_bucket = Some(
            conveyor_core::names::BucketName::parse(bucket)
                .map_err(|e| anyhow::anyhow!("CONVEYOR_STATE_BUCKET={bucket}: {e}"))?,
        );
    }
    info!(step = %step, project = %gcp.settings().project, topic = %gcp.settings().topic(), "starting on Google Cloud adapters");
    let mut router = conveyor_core::http::router(step, ctx);
    if !settings.auth_audiences.is_empty() {
        info!(audiences = ?settings.auth_audiences, allowed = ?settings.auth_allowed, mode = ?settings.auth_mode, "callers are checked (OIDC)");
        router = conveyor_core::http::with_caller_check(
            router,
            Arc::new(
                oidc::OidcVerifier::new(
                    &settings.auth_jwks_url,
                    settings.auth_audiences.clone(),
                    settings.auth_allowed.clone(),
                )
                .with_mode(settings.auth_mode),
            ),
        );
    }
    let mut options = ServeOptions {
        header_read_timeout: settings.header_read_timeout,
        ..Default::default()
    };
    if let Some(n) = settings.max_connections {
        options.max_connections = n;
    }
    Ok((router, options))
}
