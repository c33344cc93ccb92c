//! [`Notifier`]: where a pipeline's `on_failure` actions go (a Pub/Sub topic, a webhook).

use async_trait::async_trait;

use super::PortError;
use crate::config::TopicName;
use crate::event::ConveyorEvent;

/// Sends a pipeline's failure notices: publishes an event to a named topic, or POSTs a JSON
/// message to a webhook. Each call has a timeout; a notice may be sent again when the log
/// step's delivery is retried (at least once).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Publishes `event` (JSON, with its attributes) to `topic`.
    async fn publish(&self, topic: &TopicName, event: &ConveyorEvent) -> Result<(), PortError>;
    /// POSTs `body` as JSON to `url`. The URL is a credential: no error names it.
    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<(), PortError>;
}
