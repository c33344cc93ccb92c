//! Conveyor's events: every hand-off between steps is a CloudEvent 1.0 of one of these types.
//!
//! The event's `data` is the JSON of [`ConveyorEvent`]; the run id, pipeline, step and attempt
//! are also CloudEvent extension attributes (`conveyorrun`, `conveyorpipeline`, `conveyorstep`,
//! `conveyorattempt`), so a Pub/Sub push subscription can filter on them. Event ids are
//! deterministic: the same transition of the same run always has the same id, which is what
//! makes the run log idempotent under Pub/Sub's at-least-once delivery.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};

use crate::names::{BucketName, JobId, ObjectName, PipelineName, RunId, short_hash};

/// The CloudEvent `source` of events Conveyor emits.
pub const SOURCE_PREFIX: &str = "//conveyor";

/// The prefix of every Conveyor event type: reverse-DNS, as the CloudEvents spec recommends
/// (`dev.conveyor.table.loaded`).
pub const TYPE_PREFIX: &str = "dev.conveyor.";

/// The prefix of the types of earlier releases (`conveyor.table.loaded`), still accepted
/// for a release so events published by a previous release during a deployment are read.
pub const LEGACY_TYPE_PREFIX: &str = "conveyor.";

/// The type of a Conveyor event.
///
/// Serialized as its CloudEvent `type` ([`EventType::as_str`]); read by [`EventType::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An object was copied into the landing bucket by the stage step.
    ObjectStaged,
    /// An object was loaded into its table.
    TableLoaded,
    /// A batch attempt was submitted (or an existing one adopted).
    BatchSubmitted,
    /// A batch attempt was seen running.
    BatchRunning,
    /// A batch attempt reached a terminal state: SUCCEEDED, FAILED or TIMED_OUT.
    BatchFinished,
    /// A step failed or rejected its input; the error says why.
    StepFailed,
    /// A load job outlived its request's wait: the poll tick finishes it.
    LoadRunning,
    /// An arrival named a generation that is no longer live (overwritten or deleted): it is
    /// not loaded; the newer generation's own arrival is.
    ObjectSuperseded,
    /// A run ended: SUCCEEDED after its last job (or its load, without jobs), or FAILED /
    /// TIMED_OUT with the job that ended it. Pipelines started `after` it react to it.
    RunFinished,
    /// A `for_each` row's run is to start: the submit function submits its batch, one row per
    /// delivery (so a table of many rows is not started inside one request). Not a transition:
    /// the run log records the row's batch when it is submitted.
    RowQueued,
    /// A run is waiting for a slot: its pipeline has `max_active_runs` runs going. Recorded as
    /// QUEUED (with what the run needs to start); the submit step starts it, in date order,
    /// when a run of the pipeline ends or on a poll tick.
    RunQueued,
    /// An arrival or a scheduled tick reached a paused pipeline (`conveyor pause`): recorded
    /// as PAUSED, not started; held for `conveyor resume` or skipped (`pause.arrivals`).
    StartPaused,
}

impl EventType {
    /// Every type, for subscriptions.
    pub const ALL: [EventType; 12] = [
        Self::ObjectStaged,
        Self::TableLoaded,
        Self::BatchSubmitted,
        Self::BatchRunning,
        Self::BatchFinished,
        Self::StepFailed,
        Self::LoadRunning,
        Self::ObjectSuperseded,
        Self::RunFinished,
        Self::RowQueued,
        Self::RunQueued,
        Self::StartPaused,
    ];

    /// The CloudEvent `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ObjectStaged => "dev.conveyor.object.staged",
            Self::TableLoaded => "dev.conveyor.table.loaded",
            Self::BatchSubmitted => "dev.conveyor.batch.submitted",
            Self::BatchRunning => "dev.conveyor.batch.running",
            Self::BatchFinished => "dev.conveyor.batch.finished",
            Self::StepFailed => "dev.conveyor.step.failed",
            Self::LoadRunning => "dev.conveyor.load.running",
            Self::ObjectSuperseded => "dev.conveyor.object.superseded",
            Self::RunFinished => "dev.conveyor.run.finished",
            Self::RowQueued => "dev.conveyor.row.queued",
            Self::RunQueued => "dev.conveyor.run.queued",
            Self::StartPaused => "dev.conveyor.start.paused",
        }
    }

    /// The type string of releases before the reverse-DNS prefix (`conveyor.table.loaded`):
    /// still accepted for a release ([`EventType::parse`]), never emitted. Event ids hash it,
    /// so an event keeps its id across the rename.
    pub fn legacy_str(self) -> &'static str {
        &self.as_str()[TYPE_PREFIX.len() - LEGACY_TYPE_PREFIX.len()..]
    }

    /// Parses a CloudEvent `type` string: the current name or the legacy one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s || t.legacy_str() == s)
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format_args!("unknown Conveyor event type {s:?}"))
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepName {
    /// Copy source data into the landing bucket.
    Stage,
    /// Load an object into a table.
    Load,
    /// Start a batch.
    Submit,
    /// Follow a batch to its end.
    Poll,
    /// Write the run log.
    Log,
}

impl StepName {
    /// Every step.
    pub const ALL: [StepName; 5] = [Self::Stage, Self::Load, Self::Submit, Self::Poll, Self::Log];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stage => "stage",
            Self::Load => "load",
            Self::Submit => "submit",
            Self::Poll => "poll",
            Self::Log => "log",
        }
    }

    /// Parses a lowercase step name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status a run-log row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// A batch attempt was submitted.
    Submitted,
    /// A batch attempt is running.
    Running,
    /// Done, successfully.
    Succeeded,
    /// Failed (a retry may follow; see `retry_at`).
    Failed,
    /// Cancelled after its timeout.
    TimedOut,
    /// The input was refused (malformed, unknown pipeline): it is not retried.
    Rejected,
    /// An arrival for a generation that is no longer live: acknowledged, not loaded.
    Superseded,
    /// A job that did not run: its `run_if` rule could not be met (or its `when` was false).
    Skipped,
    /// A run waiting for a slot of its pipeline's `max_active_runs`.
    Queued,
    /// An arrival or tick of a paused pipeline, not started (held or skipped); also the
    /// status of `conveyor pause`'s own row.
    Paused,
}

impl Status {
    /// The upper-case name written to the run log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "SUBMITTED",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::TimedOut => "TIMED_OUT",
            Self::Rejected => "REJECTED",
            Self::Superseded => "SUPERSEDED",
            Self::Skipped => "SKIPPED",
            Self::Queued => "QUEUED",
            Self::Paused => "PAUSED",
        }
    }

    /// Parses the upper-case name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Submitted,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::TimedOut,
            Self::Rejected,
            Self::Superseded,
            Self::Skipped,
            Self::Queued,
            Self::Paused,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object in a bucket, as a trigger names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The bucket.
    pub bucket: BucketName,
    /// The object name.
    pub name: ObjectName,
    /// The object generation (GCS), or the content's size and hash (embedded); distinguishes
    /// an overwrite from a redelivery.
    #[serde(default)]
    pub generation: String,
    /// Size in bytes, when known.
    #[serde(default)]
    pub size: Option<u64>,
}

impl ObjectRef {
    /// `gs://bucket/name`.
    pub fn uri(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.name)
    }
}

/// What a step did, carried by every event. Fields that do not apply are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    /// The object the run is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// The destination table (`dataset.table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Rows loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The load or batch job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// The batch engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The engine's own state name (e.g. Data Fusion's `COMPLETED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_state: Option<String>,
    /// When this step (or attempt) started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When a failed attempt will be resubmitted; `None` on a final failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Values for batch parameters: the trigger's captures and `table`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The pipeline's job this event is about (`jobs[].name`; `batch` for `batch:`; `load`
    /// for the load step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The `for_each` row a job runs for, column → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row: BTreeMap<String, String>,
    /// A `for_each` job's rows: the run of each row (the job ends when every one has ended).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildRun>,
    /// The tails of a local or SSH job's standard output and error, as its engine last read
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::task_log::TaskLog>,
    /// When the run (or its latest re-run) started: what the pipeline's whole-run `timeout`
    /// counts from. Carried by every job's events of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_at: Option<DateTime<Utc>>,
    /// The Cloud Trace id of the request that started the run (its `traceparent` or
    /// `X-Cloud-Trace-Context`), when it carried one: the run's trace link
    /// ([`crate::links::trace`]). Carried by every job's events of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One row's run of a `for_each` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    /// The row's key.
    pub key: String,
    /// The row's run.
    pub run_id: RunId,
}

/// One Conveyor event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConveyorEvent {
    /// The type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The run.
    pub run_id: RunId,
    /// The pipeline; `None` only for a rejection that could not name one.
    pub pipeline: Option<PipelineName>,
    /// The step that emitted it.
    pub step: StepName,
    /// The attempt (1-based; loads and stages are attempt 1).
    pub attempt: u32,
    /// The status the run log records for it.
    pub status: Status,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What happened.
    #[serde(default)]
    pub detail: Detail,
}

/// A CloudEvent could not be read as a Conveyor event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The type is not a Conveyor type.
    #[error("not a Conveyor event type: {0:?}")]
    UnknownType(String),
    /// The data is missing or not the expected JSON.
    #[error("bad data in {kind} event: {reason}")]
    BadData {
        /// The type.
        kind: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConveyorEvent {
    /// A new event at the system clock's time (the steps stamp their clock's:
    /// [`crate::steps::Context::event`]; another time with [`Self::at`]).
    pub fn new(
        kind: EventType,
        run_id: RunId,
        pipeline: Option<PipelineName>,
        step: StepName,
        attempt: u32,
        status: Status,
        detail: Detail,
    ) -> Self {
        Self {
            kind,
            run_id,
            pipeline,
            step,
            attempt,
            status,
            time: Utc::now(),
            detail,
        }
    }

    /// The same event at `time`.
    #[must_use]
    pub fn at(mut self, time: DateTime<Utc>) -> Self {
        self.time = time;
        self
    }

    /// The deterministic id: the same transition of the same run has the same id however
    /// often it is emitted.
    pub fn id(&self) -> String {
        let job = self.detail.job_id.as_ref().map_or("", |j| j.as_str());
        let error = if self.status == Status::Rejected {
            self.detail.error.as_deref().unwrap_or("")
        } else {
            ""
        };
        short_hash(&[
            // The legacy name: the rename of the types does not change any event's id, so
            // an event re-emitted across an upgrade is still recorded once.
            self.kind.legacy_str(),
            self.run_id.as_str(),
            self.step.as_str(),
            &self.attempt.to_string(),
            self.status.as_str(),
            job,
            error,
        ])
    }

    /// As a CloudEvent 1.0 with JSON data.
    pub fn to_cloudevent(&self) -> Event {
        let data = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut builder = EventBuilderV10::new()
            .id(self.id())
            .ty(self.kind.as_str())
            .source(format!("{SOURCE_PREFIX}/{}", self.step))
            .subject(self.run_id.as_str())
            .time(self.time)
            .extension("conveyorrun", self.run_id.as_str())
            .extension("conveyorstep", self.step.as_str())
            .extension("conveyorattempt", i64::from(self.attempt))
            .extension("conveyorstatus", self.status.as_str())
            .data("application/json", data);
        if let Some(p) = &self.pipeline {
            builder = builder.extension("conveyorpipeline", p.as_str());
        }
        // Every attribute set above is valid by construction.
        builder.build().unwrap_or_default()
    }

    /// Reads a Conveyor event from a CloudEvent.
    ///
    /// # Errors
    /// [`EventError`] when the type is not Conveyor's or the data does not parse.
    pub fn from_cloudevent(event: &Event) -> Result<Self, EventError> {
        let kind = event.ty();
        let Some(expected) = EventType::parse(kind) else {
            return Err(EventError::UnknownType(kind.to_owned()));
        };
        let bad = |reason: String| EventError::BadData {
            kind: kind.to_owned(),
            reason,
        };
        let parsed: Self = match event.data() {
            Some(Data::Json(v)) => {
                serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?
            }
            Some(Data::Binary(b)) => serde_json::from_slice(b).map_err(|e| bad(e.to_string()))?,
            Some(Data::String(s)) => serde_json::from_str(s).map_err(|e| bad(e.to_string()))?,
            None => return Err(bad("no data".to_owned())),
        };
        if parsed.kind != expected {
            return Err(bad(format!("data says type {}", parsed.kind)));
        }
        Ok(parsed)
    }

    /// Pub/Sub message attributes for this event: the CloudEvent attributes in the Pub/Sub
    /// protocol binding's binary mode (`ce-` prefix), so subscriptions can filter on type.
    pub fn pubsub_attributes(&self) -> BTreeMap<String, String> {
        self.attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_owned()))
            .collect()
    }

    /// [`Self::pubsub_attributes`] as pairs, borrowing what the event holds: what a
    /// publisher writes out without building a map.
    pub fn attributes(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let mut a = vec![
            ("ce-specversion", Cow::Borrowed("1.0")),
            ("ce-id", Cow::Owned(self.id())),
            ("ce-type", Cow::Borrowed(self.kind.as_str())),
            (
                "ce-source",
                Cow::Owned(format!("{SOURCE_PREFIX}/{}", self.step)),
            ),
            ("ce-subject", Cow::Borrowed(self.run_id.as_str())),
            ("ce-time", Cow::Owned(self.time.to_rfc3339())),
            ("ce-conveyorrun", Cow::Borrowed(self.run_id.as_str())),
            ("ce-conveyorstep", Cow::Borrowed(self.step.as_str())),
            ("ce-conveyorattempt", Cow::Owned(self.attempt.to_string())),
            ("ce-conveyorstatus", Cow::Borrowed(self.status.as_str())),
            ("content-type", Cow::Borrowed("application/json")),
        ];
        if let Some(p) = &self.pipeline {
            a.push(("ce-conveyorpipeline", Cow::Borrowed(p.as_str())));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConveyorEvent {
        let p = PipelineName::parse("sales").unwrap();
        ConveyorEvent::new(
            EventType::TableLoaded,
            RunId::derive(&p, &["x"]),
            Some(p),
            StepName::Load,
            1,
            Status::Succeeded,
            Detail {
                rows: Some(5),
                ..Detail::default()
            },
        )
    }

    #[test]
    fn events_round_trip_through_cloudevents() {
        let e = sample();
        let ce = e.to_cloudevent();
        assert_eq!(ce.ty(), "dev.conveyor.table.loaded");
        assert_eq!(ce.id(), e.id());
        assert_eq!(ConveyorEvent::from_cloudevent(&ce).unwrap(), e);
    }

    #[test]
    fn event_ids_do_not_depend_on_time() {
        let a = sample();
        let mut b = a.clone();
        b.time += chrono::Duration::seconds(5);
        assert_eq!(a.id(), b.id());
        let mut c = a.clone();
        c.attempt = 2;
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn legacy_types_are_parsed_and_the_new_ones_emitted() {
        for t in EventType::ALL {
            assert!(t.as_str().starts_with(TYPE_PREFIX), "{t}");
            assert_eq!(t.legacy_str(), &t.as_str()["dev.".len()..]);
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(EventType::parse(t.legacy_str()), Some(t));
        }
        // An event of the previous release, in structured form: read, and re-emitted with the
        // new type and the same id.
        let e = sample();
        let mut json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "dev.conveyor.table.loaded");
        json["type"] = "conveyor.table.loaded".into();
        let old: ConveyorEvent = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old, e);
        let ce = EventBuilderV10::new()
            .id(e.id())
            .ty("conveyor.table.loaded")
            .source("//conveyor/load")
            .data("application/json", json)
            .build()
            .unwrap();
        let read = ConveyorEvent::from_cloudevent(&ce).unwrap();
        assert_eq!(read.kind, EventType::TableLoaded);
        assert_eq!(read.to_cloudevent().ty(), "dev.conveyor.table.loaded");
        assert_eq!(read.id(), ce.id(), "the rename keeps event ids");
        assert_eq!(
            read.pubsub_attributes()["ce-type"],
            "dev.conveyor.table.loaded"
        );
    }

    #[test]
    fn a_data_type_that_differs_from_the_attribute_is_refused() {
        let e = sample();
        let ce = EventBuilderV10::new()
            .id("1")
            .ty("dev.conveyor.batch.finished")
            .source("//conveyor/load")
            .data("application/json", serde_json::to_value(&e).unwrap())
            .build()
            .unwrap();
        assert!(matches!(
            ConveyorEvent::from_cloudevent(&ce),
            Err(EventError::BadData { .. })
        ));
    }

    #[test]
    fn foreign_event_types_are_refused() {
        let ce = EventBuilderV10::new()
            .id("1")
            .ty("com.example.other")
            .source("//x")
            .build()
            .unwrap();
        assert!(matches!(
            ConveyorEvent::from_cloudevent(&ce),
            Err(EventError::UnknownType(_))
        ));
    }
}
