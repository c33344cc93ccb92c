//! CloudEvents as Eventarc sends them, binary or structured: Cloud Storage arrivals, Pub/Sub
//! messages, and Conveyor's own events.

use cloudevents::{AttributesReader, Data, Event};
use serde_json::Value;

use super::storage::object_from_resource;
use super::{Delivery, Inbound, InboundError, parse_json};
use crate::event::ConveyorEvent;

/// The Eventarc type of a Cloud Storage object arrival.
pub(crate) const GCS_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";
/// The Eventarc type of a Pub/Sub message.
pub(crate) const PUBSUB_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

pub(super) fn from_cloudevent(event: &Event) -> (Delivery, Result<Inbound, InboundError>) {
    let data_json = || -> Result<Value, InboundError> {
        match event.data() {
            Some(Data::Json(v)) => Ok(v.clone()),
            Some(Data::Binary(b)) => serde_json::from_slice(b)
                .map_err(|e| InboundError(format!("event data is not JSON: {e}"))),
            Some(Data::String(s)) => serde_json::from_str(s)
                .map_err(|e| InboundError(format!("event data is not JSON: {e}"))),
            None => Err(InboundError(format!("{} event has no data", event.ty()))),
        }
    };
    match event.ty() {
        GCS_FINALIZED => (
            Delivery::default(),
            data_json()
                .and_then(|v| object_from_resource(&v))
                .map(Inbound::Object),
        ),
        PUBSUB_PUBLISHED => match data_json() {
            Ok(v) => parse_json(v),
            Err(e) => (Delivery::default(), Err(e)),
        },
        ty if ty.starts_with(crate::event::TYPE_PREFIX)
            || ty.starts_with(crate::event::LEGACY_TYPE_PREFIX) =>
        {
            (
                Delivery::default(),
                ConveyorEvent::from_cloudevent(event)
                    .map(|e| Inbound::Event(Box::new(e)))
                    .map_err(|e| InboundError(e.to_string())),
            )
        }
        ty if ty.starts_with("google.cloud.storage.object.v1.") => (
            Delivery::default(),
            Ok(Inbound::Ignored(format!("{ty} needs no work"))),
        ),
        ty => (
            Delivery::default(),
            Err(InboundError(format!("unsupported CloudEvent type {ty:?}"))),
        ),
    }
}
