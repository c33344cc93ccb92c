//! Plain JSON bodies, for Cloud Scheduler and `curl`: an object arrived, start a pipeline, a
//! tick, or a Conveyor event's JSON.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::storage::object_from_resource;
use super::{Inbound, InboundError, Origin, StartRequest};
use crate::event::ConveyorEvent;
use crate::names::PipelineName;

pub(super) fn plain(value: Value) -> Result<Inbound, InboundError> {
    if !value.is_object() {
        return Err(InboundError("the JSON body must be an object".to_owned()));
    }
    if value.get("type").is_some() && value.get("run_id").is_some() {
        let event: ConveyorEvent = serde_json::from_value(value)
            .map_err(|e| InboundError(format!("not a Conveyor event: {e}")))?;
        return Ok(Inbound::Event(Box::new(event)));
    }
    if value.get("bucket").is_some() || value.get("name").is_some() {
        return object_from_resource(&value).map(Inbound::Object);
    }
    if value.get("pipeline").is_some() || value.get("tick").is_some() {
        let pipeline = match value.get("pipeline") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(PipelineName::parse(s)?),
            Some(_) => return Err(InboundError("`pipeline` must be a string".to_owned())),
        };
        let origin = match value.get("trigger").and_then(Value::as_str) {
            Some("schedule") => Origin::Schedule,
            None | Some("manual") => {
                if pipeline.is_none() {
                    Origin::Schedule
                } else {
                    Origin::Manual
                }
            }
            Some(other) => {
                return Err(InboundError(format!(
                    "`trigger` must be \"schedule\" or \"manual\", not {other:?}"
                )));
            }
        };
        let at = match value.get("time").and_then(Value::as_str) {
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map_err(|e| InboundError(format!("`time` is not RFC 3339: {e}")))?
                .with_timezone(&Utc),
            None => Utc::now(),
        };
        let key = value.get("key").and_then(Value::as_str).map(str::to_owned);
        if let Some(k) = &key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(InboundError("`key` must be 1 to 200 characters".to_owned()));
        }
        let date = match value.get("date") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|e| InboundError(format!("`date` is not YYYY-MM-DD: {e}")))?,
            ),
            Some(_) => return Err(InboundError("`date` must be a string".to_owned())),
        };
        if value.get("conf").is_some() {
            // Airflow's `conf`: nothing here would read it, and a start that ignored it
            // would run with other values than the caller asked for.
            return Err(InboundError(
                "`conf` is not supported: a run's values come from its pipeline, its `date` \
                 and its `key`; drop `conf` (or name the date with `date`)"
                    .to_owned(),
            ));
        }
        return Ok(Inbound::Start(StartRequest {
            pipeline,
            origin,
            at,
            key,
            date,
        }));
    }
    Err(InboundError(
        "unrecognized JSON body: expected {\"bucket\", \"name\"}, {\"pipeline\"}, {\"tick\": true}, a Conveyor event or a Pub/Sub push envelope".to_owned(),
    ))
}
