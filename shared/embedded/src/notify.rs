//! [`LocalNotifier`]: a pipeline's `on_failure` notices on one machine: a topic is a file of
//! JSON lines (`.conveyor/topics/TOPIC.ndjson`), a webhook is POSTed to.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use conveyor_core::config::TopicName;
use conveyor_core::event::ConveyorEvent;
use conveyor_core::ports::{Notifier, PortError};
use tokio::io::AsyncWriteExt as _;

/// How long one webhook call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Failure notices: topics as files of JSON lines under `dir`, webhooks over HTTP.
#[derive(Debug, Clone)]
pub struct LocalNotifier {
    dir: PathBuf,
    http: reqwest::Client,
}

impl LocalNotifier {
    /// Topics as `dir/TOPIC.ndjson`; webhook calls bounded by a 10-second timeout.
    pub fn new(dir: PathBuf) -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { dir, http }
    }
}

#[async_trait]
impl Notifier for LocalNotifier {
    async fn publish(&self, topic: &TopicName, event: &ConveyorEvent) -> Result<(), PortError> {
        let path = self.dir.join(format!("{topic}.ndjson"));
        let mut line =
            serde_json::to_vec(event).map_err(|e| PortError::permanent(e.to_string()))?;
        line.push(b'\n');
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| PortError::transient(format!("{}: {e}", self.dir.display())))?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| PortError::transient(format!("{}: {e}", path.display())))?;
        file.write_all(&line)
            .await
            .map_err(|e| PortError::transient(format!("{}: {e}", path.display())))
    }

    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<(), PortError> {
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            // The URL is a credential: the error is told without it.
            .map_err(|e| {
                PortError::transient(format!("cannot POST to the webhook: {}", e.without_url()))
            })?;
        PortError::check_status(resp.status(), "the webhook")
    }
}
