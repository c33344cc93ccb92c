//! The in-process event bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::mpsc;

use conveyor_core::event::ConveyorEvent;
use conveyor_core::ports::{EventBus, PortError};

/// Publishes events into a channel that the embedded runtime drains and routes to the steps
/// subscribed to each type, as Pub/Sub push subscriptions do in production.
#[derive(Clone)]
pub struct InProcessBus {
    tx: mpsc::UnboundedSender<ConveyorEvent>,
    pending: Arc<AtomicUsize>,
}

impl InProcessBus {
    /// A bus and the receiving end of its channel.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ConveyorEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                pending: Arc::new(AtomicUsize::new(0)),
            },
            rx,
        )
    }

    /// The count of published events not yet fully handled: raised here on publish, lowered
    /// by the runtime once every subscriber has had the event.
    pub fn pending(&self) -> Arc<AtomicUsize> {
        self.pending.clone()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.tx.send(event.clone()).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            PortError::transient("the in-process bus is closed")
        })
    }
}
