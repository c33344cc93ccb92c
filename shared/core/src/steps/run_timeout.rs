//! A pipeline's whole-run `timeout`: how long a run may take from its start (or its latest
//! re-run's) to its end, every job, retry and wait included.
//!
//! Every event of a run carries when the run started (`Detail::run_started_at`, set when its
//! first jobs start). Past the limit:
//! - the poll tick cancels each job of the run still running (and releases what it holds) and
//!   ends it `TIMED_OUT`; a job waiting for a retry ends `TIMED_OUT` without one;
//! - the submit step starts no further job: a job's end read after the limit ends the run
//!   `TIMED_OUT` (one run-end row: its id is the same whichever job's end ends it).
//!
//! Each decision is made on the time of the event (the job's end) or of the check, so a
//! redelivered event decides as the first delivery did, and two ticks cancel (idempotent) and
//! publish the same events (the same ids: one row each).

use chrono::{DateTime, Utc};

use crate::config::Pipeline;
use crate::event::Detail;

/// Why the run `detail` belongs to is past `pipeline`'s whole-run timeout at `at`, or `None`
/// (no timeout, no start time known — runs of earlier releases — or not yet).
pub(super) fn exceeded(pipeline: &Pipeline, detail: &Detail, at: DateTime<Utc>) -> Option<String> {
    let limit = pipeline.timeout?;
    let started = detail.run_started_at?;
    let elapsed = (at - started).to_std().ok()?;
    (elapsed >= limit).then(|| {
        format!(
            "the run timed out: running {} (pipeline timeout {})",
            humantime::format_duration(std::time::Duration::from_secs(elapsed.as_secs())),
            humantime::format_duration(limit)
        )
    })
}

/// Marks `detail` as the start of a run at `at`, unless it names one already.
pub(super) fn start(detail: &mut Detail, at: DateTime<Utc>) {
    detail.run_started_at.get_or_insert(at);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(timeout: Option<&str>) -> Pipeline {
        let yaml = format!(
            "pipelines:\n  - name: p\n    trigger: {{ manual: true }}\n    batch: {{ engine: local, command: \"true\" }}\n{}",
            timeout.map_or(String::new(), |t| format!("    timeout: {t}\n"))
        );
        crate::config::parse_str(&yaml, "t.yaml")
            .expect("config")
            .pipelines
            .remove(0)
    }

    #[test]
    fn a_run_is_past_its_timeout_only_from_its_start_plus_the_limit() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-20T03:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut detail = Detail::default();
        start(&mut detail, t0);
        // A later start (a redelivery, the next job) keeps the run's first start.
        start(&mut detail, t0 + chrono::Duration::hours(1));
        let p = pipeline(Some("2h"));
        assert_eq!(
            exceeded(&p, &detail, t0 + chrono::Duration::minutes(119)),
            None
        );
        let why = exceeded(&p, &detail, t0 + chrono::Duration::hours(2)).expect("past");
        assert!(why.contains("pipeline timeout 2h"), "{why}");
        // No timeout, or a run of an earlier release (no start known): never.
        assert_eq!(
            exceeded(&pipeline(None), &detail, t0 + chrono::Duration::days(9)),
            None
        );
        assert_eq!(
            exceeded(&p, &Detail::default(), t0 + chrono::Duration::days(9)),
            None
        );
    }
}
