//! What starts a run, and the run id each start gets: the one place the run-id recipes live.
//!
//! A run id is deterministic from what started the run, so a redelivered trigger, a retried
//! request or two instances racing on the same start all compute the same run (and its jobs
//! adopt what another already started). Each [`RunOrigin`] names one kind of start and the
//! parts its id is hashed from; [`RunId::for_origin`] builds it. The recipes never change for
//! a start that already exists: a changed recipe would start a second run for a redelivery.

use chrono::{DateTime, Timelike, Utc};

use crate::names::{PipelineName, RunId, short_hash};

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOrigin<'a> {
    /// An object's arrival (one load per object generation), and the stage step's staged event
    /// of the object it wrote.
    Object {
        /// Its bucket.
        bucket: &'a str,
        /// Its name.
        name: &'a str,
        /// Its generation.
        generation: &'a str,
    },
    /// A load window of a table closing (`load.window`).
    Window {
        /// The table's key (a short hash of the table).
        table_key: &'a str,
        /// The window's id.
        id: &'a str,
    },
    /// A folder's marker object arriving (`trigger.object.marker`).
    Marker {
        /// The marker's bucket.
        bucket: &'a str,
        /// The marker's folder (no trailing `/`; empty at the bucket's root).
        folder: &'a str,
        /// The marker's generation.
        generation: &'a str,
    },
    /// A message pushed to the `messages` endpoint, by its id.
    Message {
        /// The message id.
        id: &'a str,
    },
    /// A start naming a key (`key` of a manual or scheduled start): one run per key.
    Key {
        /// The key.
        key: &'a str,
    },
    /// A scheduled tick: one run per scheduled minute (Cloud Scheduler's retry carries the
    /// same scheduled time).
    ScheduleMinute {
        /// The scheduled time (seconds and below are dropped).
        at: DateTime<Utc>,
    },
    /// A manual start without a key: one run per minute, so a request repeated at once starts
    /// nothing twice.
    ManualMinute {
        /// The start's time (seconds and below are dropped).
        at: DateTime<Utc>,
    },
    /// One row of a `for_each` job of a run.
    ForEachRow {
        /// The job's run.
        run: &'a RunId,
        /// The job's name (`batch` for a pipeline's single `batch:`).
        job: &'a str,
        /// The row's key.
        key: &'a str,
    },
    /// A pipeline started `after` others (fan-in): one run per run date.
    After {
        /// The run date.
        date: &'a str,
    },
    /// A start for a run date (`trigger --date`, `backfill`, a schedule firing at most once a
    /// day): one run per pipeline and date, whichever of them starts it.
    Date {
        /// The run date (`YYYY-MM-DD`).
        date: &'a str,
    },
}

impl RunOrigin<'_> {
    /// The parts the run id is hashed from (the recipe).
    fn parts(&self) -> Vec<String> {
        let own = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect();
        match *self {
            Self::Object {
                bucket,
                name,
                generation,
            } => own(&[bucket, name, generation]),
            Self::Window { table_key, id } => own(&["window", table_key, id]),
            Self::Marker {
                bucket,
                folder,
                generation,
            } => own(&[bucket, folder, "marker", generation]),
            Self::Message { id } => own(&["message", id]),
            Self::Key { key } => own(&["key", key]),
            Self::ScheduleMinute { at } => own(&["schedule", &minute(at)]),
            Self::ManualMinute { at } => own(&["manual", &minute(at)]),
            // As a Data Fusion `runs` row's run was named before jobs existed.
            Self::ForEachRow {
                run,
                job: "batch",
                key,
            } => own(&[run.as_str(), "row", key]),
            Self::ForEachRow { run, job, key } => own(&[run.as_str(), job, "row", key]),
            Self::After { date } => own(&["after", date]),
            Self::Date { date } => own(&["date", date]),
        }
    }
}

/// `at` without its seconds, in RFC 3339.
fn minute(at: DateTime<Utc>) -> String {
    at.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
        .to_rfc3339()
}

impl RunId {
    /// The run id of `pipeline`'s run started by `origin`.
    pub fn for_origin(pipeline: &PipelineName, origin: &RunOrigin<'_>) -> Self {
        let parts = origin.parts();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        Self::derive(pipeline, &parts)
    }
}

/// A run id in the hash of `parts`, with no pipeline (a refusal's run): `<prefix>-<hash>`.
pub(crate) fn unowned(prefix: &str, parts: &[&str]) -> String {
    format!("{prefix}-{}", short_hash(parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use sha2::{Digest, Sha256};

    /// The recipe as it was before [`RunOrigin`], written out here on its own: the pipeline,
    /// `-`, the first 12 hex digits of the SHA-256 of the parts each followed by NUL.
    fn old_recipe(pipeline: &str, parts: &[&str]) -> String {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([0u8]);
        }
        let digest = h.finalize();
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("{pipeline}-{hex}")
    }

    #[test]
    fn every_origin_keeps_the_run_id_of_its_old_recipe() {
        let p = PipelineName::parse("sales_daily").expect("name");
        let at = Utc
            .with_ymd_and_hms(2026, 11, 20, 2, 0, 37)
            .single()
            .expect("time")
            + chrono::Duration::milliseconds(250);
        let minute = "2026-11-20T02:00:00+00:00";
        let run = RunId::parse("sales_daily-0123456789ab").expect("run");
        let cases: Vec<(RunOrigin<'_>, Vec<&str>)> = vec![
            (
                RunOrigin::Object {
                    bucket: "landing",
                    name: "sales/a.csv",
                    generation: "1700000000123456",
                },
                vec!["landing", "sales/a.csv", "1700000000123456"],
            ),
            (
                RunOrigin::Window {
                    table_key: "5e1f0c2a9b3d",
                    id: "1765000000",
                },
                vec!["window", "5e1f0c2a9b3d", "1765000000"],
            ),
            (
                RunOrigin::Marker {
                    bucket: "landing",
                    folder: "sales/2026-11-20",
                    generation: "7",
                },
                vec!["landing", "sales/2026-11-20", "marker", "7"],
            ),
            (
                RunOrigin::Marker {
                    bucket: "landing",
                    folder: "",
                    generation: "7",
                },
                vec!["landing", "", "marker", "7"],
            ),
            (
                RunOrigin::Message { id: "msg-42" },
                vec!["message", "msg-42"],
            ),
            (
                RunOrigin::Key { key: "2026-11-20" },
                vec!["key", "2026-11-20"],
            ),
            (RunOrigin::ScheduleMinute { at }, vec!["schedule", minute]),
            (RunOrigin::ManualMinute { at }, vec!["manual", minute]),
            (
                RunOrigin::ForEachRow {
                    run: &run,
                    job: "batch",
                    key: "eu",
                },
                vec![run.as_str(), "row", "eu"],
            ),
            (
                RunOrigin::ForEachRow {
                    run: &run,
                    job: "dedupe",
                    key: "eu",
                },
                vec![run.as_str(), "dedupe", "row", "eu"],
            ),
            (
                RunOrigin::After { date: "2026-11-20" },
                vec!["after", "2026-11-20"],
            ),
            (
                RunOrigin::Date { date: "2026-11-20" },
                vec!["date", "2026-11-20"],
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (origin, parts) in &cases {
            let id = RunId::for_origin(&p, origin);
            assert_eq!(id.as_str(), old_recipe("sales_daily", parts), "{origin:?}");
            assert!(
                seen.insert(id.to_string()),
                "{origin:?}: same id as another"
            );
        }
        // One id pinned as text: the hashing itself did not change.
        assert_eq!(
            RunId::for_origin(&p, &RunOrigin::Key { key: "2026-11-20" }).as_str(),
            "sales_daily-fb8faf3dbfef",
        );
    }

    #[test]
    fn a_start_within_the_same_minute_is_the_same_run_and_the_next_minute_is_not() {
        let p = PipelineName::parse("p").expect("name");
        let t = Utc
            .with_ymd_and_hms(2026, 11, 20, 2, 0, 0)
            .single()
            .expect("time");
        let id = |at| RunId::for_origin(&p, &RunOrigin::ManualMinute { at });
        assert_eq!(id(t), id(t + chrono::Duration::seconds(59)));
        assert_ne!(id(t), id(t + chrono::Duration::seconds(60)));
        assert_ne!(
            id(t),
            RunId::for_origin(&p, &RunOrigin::ScheduleMinute { at: t })
        );
    }

    #[test]
    fn a_refusals_run_has_no_pipeline() {
        assert_eq!(
            unowned("rejected", &["a", "b"]),
            old_recipe("rejected", &["a", "b"])
        );
    }
}
