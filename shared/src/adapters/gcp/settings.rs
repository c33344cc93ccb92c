//! The Google Cloud settings of a service, and the ports built from them.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{BigQuery, GcpAuth, GcsStore, PubSubBus, install_crypto_provider};
use crate::adapters::embedded::LocalBatchEngine;
use crate::adapters::engines::{Endpoints, Engines};
use crate::adapters::sources::{Connector, SecretManager};
use crate::ports::{PortError, Ports};

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
    /// `CONVEYOR_ANONYMOUS=true`: no credentials (emulators only; refused without endpoints).
    #[serde(default)]
    pub anonymous: bool,
    /// `CONVEYOR_DATAPROC_ENDPOINT`: override of `https://dataproc.googleapis.com`.
    #[serde(default)]
    pub dataproc_endpoint: Option<String>,
    /// `CONVEYOR_DATAFLOW_ENDPOINT`: override of `https://dataflow.googleapis.com`.
    #[serde(default)]
    pub dataflow_endpoint: Option<String>,
    /// `CONVEYOR_BATCH_DIR`: job directories of the `local` batch engine.
    #[serde(default = "default_batch_dir")]
    pub batch_dir: PathBuf,
}

fn default_gcs() -> String {
    "https://storage.googleapis.com".to_owned()
}

fn default_secretmanager() -> String {
    "https://secretmanager.googleapis.com".to_owned()
}

fn default_batch_dir() -> PathBuf {
    std::env::temp_dir().join("conveyor-batches")
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
        if self.events_topic.starts_with("projects/") {
            self.events_topic.clone()
        } else {
            format!("projects/{}/topics/{}", self.project, self.events_topic)
        }
    }
}

/// Builds every port on Google Cloud from `settings`, with one credentials source.
///
/// # Errors
/// When credentials cannot be loaded or a client cannot be built.
pub async fn ports(settings: &GcpSettings) -> Result<Ports, PortError> {
    install_crypto_provider();
    let auth = if settings.anonymous {
        GcpAuth::Anonymous
    } else {
        GcpAuth::application_default()?
    };
    let bus = PubSubBus::new(
        &settings.topic(),
        settings.pubsub_endpoint.as_deref(),
        &auth,
    )
    .await?;
    let store = GcsStore::new(&settings.gcs_endpoint, auth.clone());
    let secrets = SecretManager::new(&settings.secretmanager_endpoint, auth.clone());
    let sources = Connector::new(Arc::new(store.clone()), Arc::new(secrets));
    let bq = BigQuery::new(
        &settings.project,
        settings.bigquery_location.clone(),
        settings.bigquery_endpoint.as_deref(),
        &auth,
    )
    .await?;
    let batch = LocalBatchEngine::new(&settings.batch_dir)
        .map_err(|e| PortError::Permanent(format!("{}: {e}", settings.batch_dir.display())))?;
    let mut endpoints = Endpoints::google();
    if let Some(ep) = &settings.dataproc_endpoint {
        endpoints.dataproc = ep.clone();
    }
    if let Some(ep) = &settings.dataflow_endpoint {
        endpoints.dataflow = ep.clone();
    }
    // Every engine behind one port, sharing the one credentials source.
    let engines = Engines::new()
        .with_local(Arc::new(batch))
        .with_cloud(endpoints, Arc::new(auth))?;
    Ok(Ports {
        store: Arc::new(store),
        bus: Arc::new(bus),
        warehouse: Arc::new(bq.clone()),
        batch: Arc::new(engines),
        run_log: Arc::new(bq),
        sources: Arc::new(sources),
    })
}
