//! [`EventBus`]: Pub/Sub topics, or the in-process bus.

use async_trait::async_trait;

use super::PortError;
use crate::event::ConveyorEvent;

/// Where events go: Pub/Sub topics, or the in-process bus.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// `false` for [`Unwired`] only: what the start-up check of a function looks at.
    fn wired(&self) -> bool {
        true
    }

    /// Publishes one event. Returns once the bus has accepted it.
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError>;
}
