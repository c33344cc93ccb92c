//! The event bus on a Pub/Sub topic.

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;

use super::GcpAuth;
use conveyor_core::event::ConveyorEvent;
use conveyor_core::ports::{EventBus, PortError};

/// Publishes each event to one topic: data is the event's JSON, attributes are its CloudEvent
/// attributes with the `ce-` prefix (the Pub/Sub protocol binding's binary mode), so push
/// subscriptions filter on `attributes.ce-type`.
#[derive(Clone)]
pub struct PubSubBus {
    publisher: Publisher,
    topic: String,
}

impl PubSubBus {
    /// A bus on `topic` (`projects/P/topics/T`); `endpoint` overrides the service address
    /// (the emulator's `http://127.0.0.1:PORT`).
    ///
    /// # Errors
    /// When the client cannot be built.
    pub async fn new(
        topic: &str,
        endpoint: Option<&str>,
        auth: &GcpAuth,
    ) -> Result<Self, PortError> {
        let mut builder = Publisher::builder(topic.to_owned())
            .with_credentials(auth.credentials())
            // An event is published on its own, at once: steps wait for the publish.
            .set_delay_threshold(std::time::Duration::from_millis(1));
        if let Some(ep) = endpoint {
            builder = builder.with_endpoint(ep.to_owned());
        }
        let publisher = builder.build().await.map_err(|e| {
            PortError::Permanent(format!(
                "cannot build the Pub/Sub publisher for {topic}: {e}"
            ))
        })?;
        Ok(Self {
            publisher,
            topic: topic.to_owned(),
        })
    }
}

#[async_trait]
impl EventBus for PubSubBus {
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError> {
        let data = serde_json::to_vec(event).map_err(|e| PortError::Permanent(e.to_string()))?;
        let message = Message::new()
            .set_data(data)
            .set_attributes(event.pubsub_attributes());
        self.publisher
            .publish(message)
            .await
            .map(|_| ())
            .map_err(|e| {
                PortError::Transient(format!("publish {} to {}: {e}", event.kind, self.topic))
            })
    }
}
