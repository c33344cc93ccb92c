//! Cloud Storage's wire shapes: an object resource (Eventarc's data, a `JSON_API_V1`
//! notification's payload, a plain `{"bucket", "name"}` body) and a Pub/Sub notification's
//! attributes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{Inbound, InboundError, ObjectOnly};
use crate::event::ObjectRef;
use crate::names::{BucketName, ObjectName};

/// A Cloud Storage Pub/Sub notification (`eventType` among its `attributes`, the object
/// resource in `data` when `payloadFormat` is `JSON_API_V1`): an arrival for
/// `OBJECT_FINALIZE`, nothing to do for the others.
pub(super) fn from_notification(
    event_type: &str,
    attributes: &BTreeMap<String, String>,
    data: &[u8],
) -> Result<Inbound, InboundError> {
    let format = attributes
        .get("payloadFormat")
        .map_or("NONE", String::as_str);
    match event_type {
        "OBJECT_FINALIZE" => {
            let bucket = attributes
                .get("bucketId")
                .ok_or_else(|| InboundError("GCS notification without bucketId".to_owned()))?;
            let name = attributes
                .get("objectId")
                .ok_or_else(|| InboundError("GCS notification without objectId".to_owned()))?;
            let size = if format == "JSON_API_V1" {
                resource_size(data)
            } else {
                None
            };
            Ok(Inbound::Object(ObjectRef {
                bucket: BucketName::parse(bucket)?,
                name: ObjectName::parse(name)?,
                generation: attributes
                    .get("objectGeneration")
                    .cloned()
                    .unwrap_or_default(),
                size,
            }))
        }
        other => Ok(Inbound::Ignored(format!(
            "GCS {other} notification needs no work"
        ))),
    }
}

/// The `size` of a Cloud Storage object resource (JSON_API_V1 notification data), read
/// without a JSON tree of the whole resource; as [`number_or_string`] reads it.
pub(super) fn resource_size(data: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Size {
        #[serde(default)]
        size: Option<Value>,
    }
    match serde_json::from_slice::<ObjectOnly<Size>>(data) {
        Ok(ObjectOnly(s)) => number_or_string(s.size.as_ref()),
        // Not an object with one `size` (repeated keys, another shape): read it whole.
        Err(_) => serde_json::from_slice::<Value>(data)
            .ok()
            .and_then(|v| number_or_string(v.get("size"))),
    }
}

pub(super) fn number_or_string(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn object_from_resource(v: &Value) -> Result<ObjectRef, InboundError> {
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let bucket =
        field("bucket").ok_or_else(|| InboundError("object has no `bucket`".to_owned()))?;
    let name = field("name").ok_or_else(|| InboundError("object has no `name`".to_owned()))?;
    let generation = match v.get("generation") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    Ok(ObjectRef {
        bucket: BucketName::parse(bucket)?,
        name: ObjectName::parse(name)?,
        generation,
        size: number_or_string(v.get("size")),
    })
}
