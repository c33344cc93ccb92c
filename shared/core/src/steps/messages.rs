//! messages: a Pub/Sub message of a pipeline with `trigger.topic` becomes rows of its table
//! (seed 003's mobile-app issue events). The load function serves it at
//! `POST /messages/<pipeline>` (a push subscription's endpoint); `conveyor dev` at
//! `/load/messages/<pipeline>`.
//!
//! A message's data is one JSON object or an array of them. Each object that fits the
//! declared schema becomes a row; the rows of a message are written once whatever its
//! deliveries (the row sink is idempotent on a batch id derived from the pipeline and the
//! message id). An object that does not fit (a missing REQUIRED field, a wrong type, an
//! unknown field), or a message that is not JSON at all, is acknowledged, written with its
//! reason to the quarantine table `<table>_rejected`, and recorded in the run log as
//! REJECTED: it is never redelivered forever. A backend outage answers 503, so Pub/Sub
//! redelivers.

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{Context, Outcome, StepError, active_pipeline, publish};
use crate::config::{Pipeline, SchemaSpec};
use crate::event::{Detail, EventType, Status, StepName};
use crate::format::{Column, ColumnType};
use crate::names::{JobId, RunId, TableRef};
use crate::ports::{PortError, RowBatch};
use crate::run_origin::RunOrigin;

/// The most characters of a rejected object or message kept in the quarantine table.
const MAX_QUARANTINED: usize = 1_000_000;

/// The columns of a quarantine table `<table>_rejected`.
pub fn quarantine_columns() -> Vec<Column> {
    let col = |name: &str, ty, nullable| Column {
        name: name.to_owned(),
        ty,
        nullable,
    };
    vec![
        col("message_id", ColumnType::String, false),
        col("object_index", ColumnType::Int64, true),
        col("reason", ColumnType::String, false),
        col("data", ColumnType::String, true),
        col("attributes", ColumnType::String, true),
        col("publish_time", ColumnType::Timestamp, true),
        col("received_at", ColumnType::Timestamp, false),
        col("subscription", ColumnType::String, true),
    ]
}

/// A Pub/Sub push message, read from either field spelling (the emulator sends both).
struct Message {
    id: String,
    data: Vec<u8>,
    attributes: Value,
    publish_time: Option<DateTime<Utc>>,
    subscription: Option<String>,
}

fn either<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel)
        .or_else(|| v.get(snake))
        .filter(|x| !x.is_null())
}

/// Reads a push envelope. A body that is not one is refused: its sender is not Pub/Sub, and
/// without a message id nothing could be written once.
fn envelope(body: &[u8]) -> Result<Message, StepError> {
    let bad = |why: &str| {
        StepError::Rejected(format!(
            "expected a Pub/Sub push envelope {{\"message\": {{\"messageId\": ..., \"data\": BASE64}}}}: {why}"
        ))
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("the body is not JSON"))?;
    let m = v.get("message").ok_or_else(|| bad("no `message`"))?;
    let id = match either(m, "messageId", "message_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad("no `message.messageId`")),
    };
    let data = match m.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| bad("`message.data` is not base64"))?,
        Some(_) => return Err(bad("`message.data` is not a string")),
    };
    Ok(Message {
        id,
        data,
        attributes: m.get("attributes").cloned().unwrap_or(Value::Null),
        publish_time: either(m, "publishTime", "publish_time")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        subscription: v
            .get("subscription")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The objects of a message's data, or why it has none.
fn objects(data: &[u8]) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_slice(data).map_err(|e| {
        if data.is_empty() {
            "the message has no data".to_owned()
        } else {
            format!("the message data is not JSON: {e}")
        }
    })?;
    match v {
        Value::Object(_) => Ok(vec![v]),
        Value::Array(items) if items.is_empty() => Err("the message is an empty array".to_owned()),
        Value::Array(items) => Ok(items),
        other => Err(format!(
            "the message data is a JSON {}, not an object or an array of objects",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value of `v` for a column of type `ty`, as [`RowBatch`] holds it; or why it does not
/// fit. Conversions follow BigQuery's JSON loads: numbers and booleans may be given as
/// strings, a number or boolean fits a STRING column.
fn cell(ty: ColumnType, v: &Value) -> Result<Value, String> {
    let wrong = || format!("expected {ty}, got the {} {v}", kind(v));
    match (ty, v) {
        (ColumnType::String, Value::String(_)) => Ok(v.clone()),
        (ColumnType::String, Value::Number(n)) => Ok(json!(n.to_string())),
        (ColumnType::String, Value::Bool(b)) => Ok(json!(b.to_string())),
        (ColumnType::Int64, Value::Number(n)) => n
            .as_i64()
            .map(|i| json!(i))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| json!(f as i64))
            })
            .ok_or_else(wrong),
        (ColumnType::Int64, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(|i| json!(i))
            .map_err(|_| wrong()),
        (ColumnType::Float64, Value::Number(n)) => n.as_f64().map(|f| json!(f)).ok_or_else(wrong),
        (ColumnType::Float64, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| json!(f))
            .ok_or_else(wrong),
        (ColumnType::Bool, Value::Bool(_)) => Ok(v.clone()),
        (ColumnType::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(json!(true)),
            "false" => Ok(json!(false)),
            _ => Err(wrong()),
        },
        (ColumnType::Bytes, Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(|_| v.clone())
            .map_err(|_| format!("expected BYTES as base64, got {v}")),
        (ColumnType::Timestamp, Value::String(s)) => timestamp(s)
            .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
            .ok_or_else(|| {
                format!("expected a TIMESTAMP (RFC 3339, such as 2026-11-20T08:30:00Z), got {v}")
            }),
        (ColumnType::Timestamp, Value::Number(n)) => n
            .as_f64()
            .and_then(|secs| DateTime::from_timestamp_micros((secs * 1e6).round() as i64))
            .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
            .ok_or_else(wrong),
        (ColumnType::Date, Value::String(s)) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(|d| json!(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| format!("expected a DATE (YYYY-MM-DD), got {v}")),
        (ColumnType::Json, _) => Ok(json!(v.to_string())),
        _ => Err(wrong()),
    }
}

fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// The row of `object` for `columns`, or why it does not fit.
pub fn row_of(object: &Value, columns: &[Column]) -> Result<Vec<Value>, String> {
    let Value::Object(map) = object else {
        return Err(format!("a {}, not a JSON object", kind(object)));
    };
    if let Some(unknown) = map.keys().find(|k| !columns.iter().any(|c| &c.name == *k)) {
        return Err(format!("unknown field {unknown:?}"));
    }
    columns
        .iter()
        .map(|c| match map.get(&c.name) {
            None | Some(Value::Null) if c.nullable => Ok(Value::Null),
            None | Some(Value::Null) => Err(format!("missing REQUIRED field {:?}", c.name)),
            Some(v) => cell(c.ty, v).map_err(|e| format!("field {:?}: {e}", c.name)),
        })
        .collect()
}

fn clip(s: String) -> String {
    if s.len() <= MAX_QUARANTINED {
        return s;
    }
    let mut end = MAX_QUARANTINED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The message pipeline called `name`: active, with a topic trigger and a declared schema.
fn message_pipeline<'a>(ctx: &'a Context, name: &str) -> Result<&'a Pipeline, StepError> {
    let p = active_pipeline(ctx, name)?;
    if p.trigger.topic.is_none() {
        return Err(StepError::Rejected(format!(
            "pipeline {name:?} takes no messages (it has no `trigger.topic`)"
        )));
    }
    Ok(p)
}

/// Handles one pushed message for `pipeline`.
///
/// # Errors
/// [`StepError::Rejected`] when the request is not a push envelope or names no message
/// pipeline; [`StepError::Transient`] when a table could not be written (Pub/Sub redelivers).
pub async fn handle(ctx: &Context, pipeline: &str, body: &[u8]) -> Result<Outcome, StepError> {
    let p = message_pipeline(ctx, pipeline)?;
    let message = envelope(body)?;
    let Some(load) = &p.load else {
        return Err(StepError::Rejected(format!(
            "pipeline {pipeline:?} has no `load`"
        )));
    };
    let SchemaSpec::Columns(columns) = &load.schema else {
        return Err(StepError::Rejected(format!(
            "pipeline {pipeline:?} declares no columns"
        )));
    };
    let table = TableRef::parse(&load.table).map_err(|e| StepError::Rejected(e.to_string()))?;
    let run_id = RunId::for_origin(&p.name, &RunOrigin::Message { id: &message.id });

    let mut rows = Vec::new();
    let mut rejected: Vec<(Option<usize>, String, String)> = Vec::new();
    match objects(&message.data) {
        Err(reason) => rejected.push((
            None,
            reason,
            String::from_utf8_lossy(&message.data).into_owned(),
        )),
        Ok(objects) => {
            for (i, object) in objects.iter().enumerate() {
                match row_of(object, columns) {
                    Ok(row) => rows.push(row),
                    Err(reason) => rejected.push((Some(i), reason, object.to_string())),
                }
            }
        }
    }

    let mut written = 0;
    if !rows.is_empty() {
        let batch = RowBatch {
            batch_id: JobId::derive("msg", &run_id, 1).to_string(),
            table: table.clone(),
            columns: columns.clone(),
            partition: load.partition.clone(),
            clustering: load.clustering.clone(),
            rows,
        };
        match ctx.ports.rows.insert_rows(&batch).await {
            Ok(_) => written = batch.rows.len(),
            Err(e @ PortError::Transient(_)) => {
                return Err(StepError::Transient(format!("write rows to {table}: {e}")));
            }
            // The table refuses the rows (another shape, no permission): keep them in the
            // quarantine with the reason rather than redeliver forever.
            Err(e) => {
                warn!(pipeline = %p.name, table = %table, error = %e, "the table refused a message's rows; quarantining them");
                let objects = objects(&message.data).unwrap_or_default();
                for (i, object) in objects.iter().enumerate() {
                    if !rejected.iter().any(|(j, _, _)| *j == Some(i)) {
                        rejected.push((
                            Some(i),
                            format!("{table} refused the row: {e}"),
                            object.to_string(),
                        ));
                    }
                }
                rejected.sort_by_key(|(i, _, _)| *i);
            }
        }
    }

    let mut outcome = Outcome {
        summary: format!(
            "message {}: {written} row(s) written to {table}",
            message.id
        ),
        events: Vec::new(),
    };
    if rejected.is_empty() {
        info!(pipeline = %p.name, message_id = %message.id, rows = written, table = %table, "message loaded");
        return Ok(outcome);
    }

    let quarantine = TableRef {
        table: format!("{}_rejected", table.table),
        ..table.clone()
    };
    let received = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let attributes = (!message.attributes.is_null()).then(|| message.attributes.to_string());
    let quarantined = RowBatch {
        batch_id: JobId::derive("quarantine", &run_id, 1).to_string(),
        table: quarantine.clone(),
        columns: quarantine_columns(),
        partition: None,
        clustering: Vec::new(),
        rows: rejected
            .iter()
            .map(|(i, reason, data)| {
                vec![
                    json!(message.id),
                    i.map_or(Value::Null, |i| json!(i)),
                    json!(reason),
                    json!(clip(data.clone())),
                    attributes.clone().map_or(Value::Null, Value::String),
                    message.publish_time.map_or(Value::Null, |t| {
                        json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                    }),
                    json!(received),
                    message
                        .subscription
                        .clone()
                        .map_or(Value::Null, Value::String),
                ]
            })
            .collect(),
    };
    ctx.ports
        .rows
        .insert_rows(&quarantined)
        .await
        .map_err(|e| StepError::Transient(format!("quarantine in {quarantine}: {e}")))?;
    let (first_index, first_reason, _) = &rejected[0];
    let error = match first_index {
        None => first_reason.clone(),
        Some(i) => format!(
            "{} object(s) quarantined in {quarantine}; first: object {i}: {first_reason}",
            rejected.len()
        ),
    };
    warn!(pipeline = %p.name, message_id = %message.id, quarantined = rejected.len(), error = %error, "message objects quarantined");
    let event = ctx.event(
        EventType::StepFailed,
        run_id,
        Some(p.name.clone()),
        StepName::Load,
        1,
        Status::Rejected,
        Detail {
            table: Some(table.to_string()),
            rows: Some(written as u64),
            error: Some(error.chars().take(2000).collect()),
            vars: [("message_id".to_owned(), message.id.clone())].into(),
            ..Detail::default()
        },
    );
    publish(ctx, &mut outcome, event).await?;
    outcome.summary = format!(
        "{}; {} quarantined in {quarantine}",
        outcome.summary,
        rejected.len()
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        let c = |name: &str, ty, nullable| Column {
            name: name.into(),
            ty,
            nullable,
        };
        vec![
            c("machine", ColumnType::String, false),
            c("severity", ColumnType::Int64, true),
            c("reported_at", ColumnType::Timestamp, true),
            c("ok", ColumnType::Bool, true),
            c("extra", ColumnType::Json, true),
            c("day", ColumnType::Date, true),
        ]
    }

    #[test]
    fn objects_are_checked_and_normalized_against_the_schema() {
        let r = row_of(
            &json!({"machine": "drill-7", "severity": "3", "reported_at": "2026-11-20 08:30:00",
                   "ok": "TRUE", "extra": {"a": [1]}, "day": "2026-11-20"}),
            &cols(),
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                json!("drill-7"),
                json!(3),
                json!("2026-11-20T08:30:00.000000Z"),
                json!(true),
                json!("{\"a\":[1]}"),
                json!("2026-11-20")
            ]
        );
        let err = |v| row_of(&v, &cols()).unwrap_err();
        assert_eq!(
            err(json!({"severity": 1})),
            "missing REQUIRED field \"machine\""
        );
        assert!(err(json!({"machine": "x", "severity": "high"})).contains("expected INT64"));
        assert!(err(json!({"machine": "x", "colour": "red"})).contains("unknown field \"colour\""));
        assert!(err(json!({"machine": "x", "reported_at": "yesterday"})).contains("TIMESTAMP"));
        assert!(err(json!(["machine"])).contains("not a JSON object"));
        assert_eq!(
            row_of(&json!({"machine": 7}), &cols()).unwrap()[0],
            json!("7")
        );
    }

    #[test]
    fn message_data_is_an_object_or_an_array_of_them() {
        assert_eq!(objects(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(objects(br#"[{"a":1},{"a":2}]"#).unwrap().len(), 2);
        assert!(objects(b"not json").unwrap_err().contains("not JSON"));
        assert!(objects(b"").unwrap_err().contains("no data"));
        assert!(objects(b"42").unwrap_err().contains("number"));
        assert!(objects(b"[]").unwrap_err().contains("empty"));
    }

    #[test]
    fn an_envelope_needs_a_message_id_and_base64_data() {
        let ok = envelope(br#"{"subscription":"s","message":{"data":"eyJhIjoxfQ==","message_id":"7","publish_time":"2026-11-20T08:30:00Z"}}"#).unwrap();
        assert_eq!(ok.id, "7");
        assert_eq!(ok.data, br#"{"a":1}"#);
        assert!(ok.publish_time.is_some());
        assert!(envelope(br#"{"message":{"data":"eyJhIjoxfQ=="}}"#).is_err());
        assert!(envelope(br#"{"message":{"messageId":"1","data":"%%"}}"#).is_err());
        assert!(envelope(br#"{"pipeline":"x"}"#).is_err());
    }
}
