//! The Conveyor **console** service: the web console (pipeline graphs, run grids, run
//! timelines, errors, objects and tables touched) on Cloud Run, behind Identity-Aware Proxy,
//! reading the BigQuery run log with read-only roles.
//!
//! With `CONVEYOR_OPERATORS` set it also offers re-run and mark-success to those operators:
//! the caller is the e-mail of IAP's verified signed header, a `group:` entry is checked with
//! the Cloud Identity API, and the action is asked of the submit function (which has the batch
//! engines and the permissions) with the console's own ID token.
//!
//! # Layout
//! - `lib.rs`: [`Settings`] (its `CONVEYOR_*` variables), [`with_actions`] (the operators'
//!   wiring), [`router`] (the console's pages, `/healthz`, traced requests) and [`run`].
//! - `submit.rs`: [`submit::RemoteSubmit`], the actions as calls to the submit function.
//! - `main.rs`: hands [`run`] to [`conveyor_service::start_with`], the functions' runner.

pub mod submit;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use conveyor_console::Console;
use conveyor_console::actions::{Groups, Identify, Operators, Unidentified};
use conveyor_core::http::Denied;
use conveyor_gcp::cloud_identity::CloudIdentity;
use conveyor_gcp::engines::{IdTokens, MetadataIdTokens};
use conveyor_gcp::iap::IapVerifier;
use conveyor_gcp::{Gcp, GcpAuth, GcpSettings};
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
    /// `CONVEYOR_OPERATORS`: who may re-run and mark success, comma-separated: e-mails,
    /// `@example.com` for a domain, `group:ops@example.com` for a Google group's members.
    /// Empty (the default): the console is read-only.
    #[serde(default)]
    pub operators: Vec<String>,
    /// `CONVEYOR_SUBMIT_URL`: the submit function's URL, where actions are asked (`/rerun`,
    /// `/mark-success`), also the audience of the console's ID token. Required with operators.
    #[serde(default)]
    pub submit_url: Option<String>,
    /// `CONVEYOR_IAP_AUDIENCE`: the audience of IAP's signed header,
    /// `/projects/NUMBER/global/backendServices/ID`. Required with operators.
    #[serde(default)]
    pub iap_audience: Option<String>,
    /// `CONVEYOR_IAP_JWKS_URL`: IAP's public keys (default
    /// `https://www.gstatic.com/iap/verify/public_key-jwk`).
    #[serde(default = "default_iap_jwks")]
    pub iap_jwks_url: String,
    /// `CONVEYOR_CLOUD_IDENTITY_ENDPOINT`: the Cloud Identity API, for `group:` operators
    /// (default `https://cloudidentity.googleapis.com`).
    #[serde(default = "default_cloud_identity")]
    pub cloud_identity_endpoint: String,
    /// `CONVEYOR_GROUP_CACHE`: how long a group membership answer is kept (default `5m`).
    #[serde(default = "default_group_cache", with = "humantime_serde")]
    pub group_cache: std::time::Duration,
}

fn default_log() -> String {
    "info".to_owned()
}

fn default_iap_jwks() -> String {
    conveyor_gcp::iap::IAP_JWKS.to_owned()
}

fn default_cloud_identity() -> String {
    conveyor_gcp::cloud_identity::CLOUD_IDENTITY.to_owned()
}

fn default_group_cache() -> std::time::Duration {
    conveyor_gcp::cloud_identity::MEMBERSHIP_TTL
}

impl Settings {
    /// The settings of `vars` (`CONVEYOR_*` names and values): the process's environment
    /// at start-up, or a test's.
    ///
    /// # Errors
    /// A bad variable, named.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        envy::prefixed("CONVEYOR_")
            .from_iter(vars)
            .map_err(|e| anyhow::anyhow!("bad CONVEYOR_* variable: {e}"))
    }
}

/// The caller is the e-mail of IAP's verified signed header.
struct IapIdentity(IapVerifier);

#[async_trait]
impl Identify for IapIdentity {
    async fn caller(&self, headers: &HeaderMap) -> Result<String, Unidentified> {
        self.0.email(headers).await.map_err(|d| match d {
            Denied::Unavailable(w) => Unidentified::Unavailable(w),
            Denied::Unauthenticated(w) | Denied::Forbidden(w) => Unidentified::Nobody(w),
        })
    }
}

/// `group:` operators by the Cloud Identity API.
struct DirectoryGroups(CloudIdentity);

#[async_trait]
impl Groups for DirectoryGroups {
    async fn is_member(&self, group: &str, email: &str) -> Result<bool, String> {
        self.0
            .is_member(group, email)
            .await
            .map_err(|e| e.to_string())
    }
}

/// `console` with the operators' actions of `settings` (unchanged when it names no
/// operators): callers identified by IAP's signed header, `group:` entries checked with the
/// Cloud Identity API on `auth`, actions asked of the submit function with ID tokens from
/// `tokens` (the metadata server on Cloud Run).
///
/// # Errors
/// Operators without `CONVEYOR_SUBMIT_URL` or `CONVEYOR_IAP_AUDIENCE`.
pub fn with_actions(
    console: Console,
    settings: &Settings,
    tokens: Arc<dyn IdTokens>,
    auth: GcpAuth,
) -> anyhow::Result<Console> {
    let allowed: Vec<String> = settings
        .operators
        .iter()
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if allowed.is_empty() {
        return Ok(console);
    }
    let need = |v: &Option<String>, name: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("CONVEYOR_OPERATORS is set, so {name} is needed too"))
    };
    let submit_url = need(
        &settings.submit_url,
        "CONVEYOR_SUBMIT_URL (the submit function's URL)",
    )?;
    let audience = need(
        &settings.iap_audience,
        "CONVEYOR_IAP_AUDIENCE (/projects/NUMBER/global/backendServices/ID)",
    )?;
    let identify = IapIdentity(IapVerifier::new(&settings.iap_jwks_url, &audience));
    let act = submit::RemoteSubmit::new(&submit_url, tokens);
    let mut operators = Operators::new(Arc::new(identify), allowed, Arc::new(act));
    if operators.group_entries().next().is_some() {
        operators = operators.with_groups(Arc::new(DirectoryGroups(
            CloudIdentity::new(&settings.cloud_identity_endpoint, auth)
                .with_ttl(settings.group_cache),
        )));
    }
    info!(operators = ?settings.operators, submit = %submit_url, "operators may re-run and mark success");
    Ok(console.with_operators(operators))
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
    let settings = Settings::from_vars(std::env::vars())?;
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
    let mut console = Console::new(run_log, config).with_title(format!("project {project}"));
    if let Some(location) = &gcp.settings().bigquery_location {
        // `sql` jobs run in the deployment's project and location: their pages can be linked.
        console = console.with_bigquery(conveyor_core::links::BigQueryPlace {
            project: project.clone(),
            location: location.clone(),
        });
    }
    let console = with_actions(
        console,
        &settings,
        Arc::new(MetadataIdTokens::from_env()),
        gcp.auth().clone(),
    )?;
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
