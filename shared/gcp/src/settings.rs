//! The Google Cloud settings of a service, and the adapters built from them.

use std::sync::Arc;

use conveyor_core::engines::Engines;
use conveyor_core::ports::PortError;
use serde::Deserialize;

use crate::engines::{CloudEngines as _, Endpoints, HttpEngine, MetadataIdTokens};
use crate::{
    BigQuery, GcpAuth, GcsStore, PubSubBus, SecretManager, SqlEngine, install_crypto_provider,
};

/// `CONVEYOR_*` variables of a service using the Google Cloud adapters.
#[derive(Debug, Clone, Deserialize)]
pub struct GcpSettings {
    /// `CONVEYOR_PROJECT`: the project of BigQuery jobs and of short topic names.
    pub project: String,
    /// `CONVEYOR_EVENTS_TOPIC`: where steps publish events (`projects/P/topics/T`, or `T`).
    pub events_topic: String,
    /// `CONVEYOR_BIGQUERY_LOCATION`: location of load jobs (e.g. `EU`); default: BigQuery's.
    #[serde(default)]
    pub bigquery_location: Option<String>,
    /// `CONVEYOR_PUBSUB_ENDPOINT`: override, e.g. the emulator's `http://127.0.0.1:8085`.
    #[serde(default)]
    pub pubsub_endpoint: Option<String>,
    /// `CONVEYOR_GCS_ENDPOINT`: Cloud Storage's JSON API root.
    #[serde(default = "default_gcs")]
    pub gcs_endpoint: String,
    /// `CONVEYOR_BIGQUERY_ENDPOINT`: override of `https://bigquery.googleapis.com/bigquery/v2`.
    #[serde(default)]
    pub bigquery_endpoint: Option<String>,
    /// `CONVEYOR_SECRETMANAGER_ENDPOINT`: Secret Manager's REST root, where the stage step
    /// reads the `secret:` of an S3 source.
    #[serde(default = "default_secretmanager")]
    pub secretmanager_endpoint: String,
    /// `CONVEYOR_BIGQUERY_EMULATOR=true`: look jobs up before inserting them, because the
    /// BigQuery emulator runs a job inserted twice instead of answering 409 (emulators only).
    #[serde(default)]
    pub bigquery_emulator: bool,
    /// `CONVEYOR_ANONYMOUS=true`: no credentials (emulators only; refused without endpoints).
    #[serde(default)]
    pub anonymous: bool,
    /// `CONVEYOR_DATAPROC_ENDPOINT`: override of `https://dataproc.googleapis.com`.
    #[serde(default)]
    pub dataproc_endpoint: Option<String>,
    /// `CONVEYOR_DATAFLOW_ENDPOINT`: override of `https://dataflow.googleapis.com`.
    #[serde(default)]
    pub dataflow_endpoint: Option<String>,
    /// `CONVEYOR_HTTP_TIMEOUT`: how long one call to a Google API may take, connecting,
    /// sending and reading the whole answer (`60s` by default; a body read as a stream waits
    /// this long for each piece). Connecting alone is bounded by 5 s.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: std::time::Duration,
}

/// The default of `CONVEYOR_HTTP_TIMEOUT`: [`crate::rest::REQUEST_TIMEOUT`].
fn default_http_timeout() -> std::time::Duration {
    crate::rest::REQUEST_TIMEOUT
}

fn default_gcs() -> String {
    "https://storage.googleapis.com".to_owned()
}

fn default_secretmanager() -> String {
    "https://secretmanager.googleapis.com".to_owned()
}

impl GcpSettings {
    /// Reads the settings from the environment.
    ///
    /// # Errors
    /// Names the variable that is missing or malformed.
    pub fn from_env() -> anyhow::Result<Self> {
        let s: Self = envy::prefixed("CONVEYOR_")
            .from_env()
            .map_err(|e| match e {
                envy::Error::MissingValue(f) => anyhow::anyhow!(
                    "missing variable CONVEYOR_{} (needed with CONVEYOR_ADAPTERS=gcp)",
                    f.to_ascii_uppercase()
                ),
                envy::Error::Custom(m) => anyhow::anyhow!("bad CONVEYOR_* variable: {m}"),
            })?;
        if s.http_timeout.is_zero() {
            anyhow::bail!("CONVEYOR_HTTP_TIMEOUT must be more than 0s");
        }
        if s.anonymous
            && (s.pubsub_endpoint.is_none()
                || s.bigquery_endpoint.is_none()
                || s.gcs_endpoint == default_gcs())
        {
            anyhow::bail!(
                "CONVEYOR_ANONYMOUS=true is for emulators: set CONVEYOR_PUBSUB_ENDPOINT, CONVEYOR_GCS_ENDPOINT and CONVEYOR_BIGQUERY_ENDPOINT too"
            );
        }
        Ok(s)
    }

    /// The full topic name.
    pub fn topic(&self) -> String {
        self.full_topic(&self.events_topic)
    }

    fn full_topic(&self, topic: &str) -> String {
        if topic.starts_with("projects/") {
            topic.to_owned()
        } else {
            format!("projects/{}/topics/{topic}", self.project)
        }
    }
}

/// The Google Cloud of a service: its settings and the one credentials source every adapter
/// built from it shares. Each builder makes one adapter; a function builds only the ones its
/// step uses.
#[derive(Clone)]
pub struct Gcp {
    settings: GcpSettings,
    auth: GcpAuth,
}

impl Gcp {
    /// Loads the credentials `settings` ask for (Application Default Credentials, or none
    /// for emulators).
    ///
    /// # Errors
    /// When credentials cannot be loaded.
    pub fn connect(settings: GcpSettings) -> Result<Self, PortError> {
        install_crypto_provider();
        // Before any adapter takes the shared client.
        crate::rest::configure(crate::rest::CONNECT_TIMEOUT, settings.http_timeout)
            .map_err(|e| PortError::permanent(e.to_string()))?;
        let auth = if settings.anonymous {
            GcpAuth::Anonymous
        } else {
            GcpAuth::application_default()?
        };
        Ok(Self { settings, auth })
    }

    /// The settings.
    pub fn settings(&self) -> &GcpSettings {
        &self.settings
    }

    /// The credentials source.
    pub fn auth(&self) -> &GcpAuth {
        &self.auth
    }

    /// The event bus on the events topic.
    ///
    /// # Errors
    /// When the events topic is not a topic name.
    pub async fn bus(&self) -> Result<PubSubBus, PortError> {
        PubSubBus::new(
            &self.settings.topic(),
            self.settings.pubsub_endpoint.as_deref(),
            &self.auth,
        )
    }

    /// A bus on another topic (`projects/P/topics/T`, or `T` in the project), such as the
    /// alerts topic.
    ///
    /// # Errors
    /// When `topic` is not a topic name.
    pub async fn bus_on(&self, topic: &str) -> Result<PubSubBus, PortError> {
        PubSubBus::new(
            &self.settings.full_topic(topic),
            self.settings.pubsub_endpoint.as_deref(),
            &self.auth,
        )
    }

    /// Cloud Storage.
    pub fn store(&self) -> GcsStore {
        GcsStore::new(&self.settings.gcs_endpoint, self.auth.clone())
    }

    /// Secret Manager.
    pub fn secrets(&self) -> SecretManager {
        SecretManager::new(&self.settings.secretmanager_endpoint, self.auth.clone())
    }

    /// BigQuery, as warehouse and run log.
    pub fn bigquery(&self) -> BigQuery {
        BigQuery::new(
            &self.settings.project,
            self.settings.bigquery_location.clone(),
            self.settings.bigquery_endpoint.as_deref(),
            &self.auth,
        )
        .emulator(self.settings.bigquery_emulator)
    }

    /// The batch port with every Google Cloud engine (and `sql` on BigQuery), sharing the one
    /// credentials source, and `http` with ID tokens from the metadata server. `engine: local` is the embedded runtime's and is refused here,
    /// saying so.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn engines(&self) -> Result<Engines, PortError> {
        let mut endpoints = Endpoints::google();
        if let Some(ep) = &self.settings.dataproc_endpoint {
            endpoints.dataproc = ep.clone();
        }
        if let Some(ep) = &self.settings.dataflow_endpoint {
            endpoints.dataflow = ep.clone();
        }
        Ok(Engines::new()
            .with_cloud(endpoints, Arc::new(self.auth.clone()))?
            .with("sql", Arc::new(SqlEngine::new(self.bigquery())))
            .with(
                "http",
                Arc::new(HttpEngine::new(Arc::new(MetadataIdTokens::from_env()))),
            ))
    }
}
