//! [`GcpNotifier`]: a pipeline's `on_failure` notices on Google Cloud: a Pub/Sub topic of the
//! deployment's project, or a webhook POSTed through the shared client (its timeouts).

use async_trait::async_trait;
use conveyor_core::config::TopicName;
use conveyor_core::event::ConveyorEvent;
use conveyor_core::ports::{EventBus as _, Notifier, PortError};

use crate::Gcp;

/// Failure notices through Pub/Sub and HTTPS.
#[derive(Clone)]
pub struct GcpNotifier {
    gcp: Gcp,
}

impl GcpNotifier {
    /// Notices on `gcp`'s project and client.
    pub fn new(gcp: Gcp) -> Self {
        Self { gcp }
    }
}

#[async_trait]
impl Notifier for GcpNotifier {
    async fn publish(&self, topic: &TopicName, event: &ConveyorEvent) -> Result<(), PortError> {
        self.gcp.bus_on(topic.name()).await?.publish(event).await
    }

    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<(), PortError> {
        // The URL is a credential: no error below repeats it (nor the client's, which may).
        let resp = crate::http_client()
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                PortError::transient(if e.is_timeout() {
                    "the webhook did not answer in time"
                } else {
                    "cannot reach the webhook"
                })
            })?;
        PortError::check_status(resp.status(), "the webhook")
    }
}
