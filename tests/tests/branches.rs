//! Jobs as a graph on the embedded chain (issue 27): `needs` branches side by side, each
//! `run_if` rule with SKIPPED jobs, and a join that starts once however its needs' ends are
//! delivered.

use std::path::Path;
use std::time::{Duration, Instant};

use conveyor_core::event::StepName;
use conveyor_core::ports::RunLogRow;
use conveyor_e2e::{Chain, lines};

/// Waits until `done` holds for the run log, then until the chain is quiet.
async fn wait_for(chain: &Chain, limit: Duration, what: &str, done: impl Fn(&[RunLogRow]) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let log = chain.run_log().await;
        if done(&log) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; run log: {:#?}",
            log.iter()
                .map(|r| format!(
                    "{} {} {} {} {} {:?}",
                    r.run_id,
                    r.step,
                    r.job.as_deref().unwrap_or("-"),
                    r.attempt,
                    r.status,
                    r.error
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chain.settle(limit).await;
}

/// The run ends (`dev.conveyor.run.finished`) of `pipeline`: (status, error).
fn run_ends(log: &[RunLogRow], pipeline: &str) -> Vec<(String, Option<String>)> {
    log.iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some(pipeline) && r.step == "submit" && r.job.is_none()
        })
        .map(|r| (r.status.clone(), r.error.clone()))
        .collect()
}

/// The jobs of `pipeline` with a row of `status`, sorted.
fn jobs_with(log: &[RunLogRow], pipeline: &str, status: &str) -> Vec<String> {
    let mut jobs: Vec<String> = log
        .iter()
        .filter(|r| r.pipeline.as_deref() == Some(pipeline) && r.status == status)
        .filter_map(|r| r.job.clone())
        .collect();
    jobs.sort();
    jobs.dedup();
    jobs
}

/// The (start, end) nanoseconds a branch wrote.
fn span(path: &Path) -> (u128, u128) {
    let l = lines(path);
    assert_eq!(l.len(), 2, "{}: {l:?}", path.display());
    (
        l[0].trim().parse().expect("start"),
        l[1].trim().parse().expect("end"),
    )
}

#[tokio::test]
async fn two_branches_run_side_by_side_and_their_join_starts_once_after_both() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().display().to_string();
    let yaml = r#"
pipelines:
  - name: branches
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: left, engine: local, command: "date +%s%N >> DIR/left; sleep 0.6; date +%s%N >> DIR/left" }
      - { name: right, engine: local, command: "date +%s%N >> DIR/right; sleep 0.6; date +%s%N >> DIR/right" }
      - { name: join, engine: local, command: "echo ran >> DIR/join", needs: [left, right] }
      - { name: report, engine: local, command: "echo ran >> DIR/report", needs: [join] }
"#
    .replace("DIR", &dir);
    let chain = Chain::start(&yaml).await;
    chain
        .accepted(StepName::Submit, r#"{"pipeline":"branches","key":"k1"}"#)
        .await;
    wait_for(&chain, Duration::from_secs(30), "the run's end", |log| {
        !run_ends(log, "branches").is_empty()
    })
    .await;
    let (l0, l1) = span(&tmp.path().join("left"));
    let (r0, r1) = span(&tmp.path().join("right"));
    // Measured: each branch started before the other ended.
    assert!(
        l0 < r1 && r0 < l1,
        "the branches ran one after the other: left {l0}..{l1}, right {r0}..{r1}"
    );
    let overlap_ms = (l1.min(r1) - l0.max(r0)) / 1_000_000;
    assert!(overlap_ms > 200, "only {overlap_ms} ms side by side");
    assert_eq!(
        lines(&tmp.path().join("join")),
        ["ran"],
        "the join ran once"
    );
    assert_eq!(lines(&tmp.path().join("report")), ["ran"]);
    let log = chain.run_log().await;
    assert_eq!(run_ends(&log, "branches"), [("SUCCEEDED".to_owned(), None)]);
    chain.stop().await;
}

#[tokio::test]
async fn each_trigger_rule_runs_or_skips_its_job_and_skips_cascade() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ran = tmp.path().join("ran");
    let yaml = r#"
pipelines:
  - name: rules
    trigger: { manual: true }
    poll: { interval: 50ms, max_attempts: 1 }
    jobs:
      - { name: good, engine: local, command: "echo good >> RAN" }
      - { name: bad, engine: local, command: "echo bad >> RAN; echo 'disk full' >&2; exit 2" }
      - { name: on_success, engine: local, command: "echo on_success >> RAN", needs: [good] }
      - { name: after_bad, engine: local, command: "echo after_bad >> RAN", needs: [bad] }
      - { name: cleanup, engine: local, command: "echo cleanup >> RAN", needs: [good, bad], run_if: one_failed }
      - { name: always, engine: local, command: "echo always >> RAN", needs: [good, bad], run_if: all_done }
      - { name: both_bad, engine: local, command: "echo both_bad >> RAN", needs: [good, bad], run_if: all_failed }
      - { name: only_bad, engine: local, command: "echo only_bad >> RAN", needs: [bad], run_if: all_failed }
      - { name: after_skip, engine: local, command: "echo after_skip >> RAN", needs: [after_bad] }
      - { name: after_skip_done, engine: local, command: "echo after_skip_done >> RAN", needs: [after_bad], run_if: all_done }
      - { name: quiet, engine: local, command: "echo quiet >> RAN", needs: [good], run_if: one_failed }
"#
    .replace("RAN", &ran.display().to_string());
    let chain = Chain::start(&yaml).await;
    chain
        .accepted(StepName::Submit, r#"{"pipeline":"rules","key":"k1"}"#)
        .await;
    wait_for(&chain, Duration::from_secs(30), "the run's end", |log| {
        !run_ends(log, "rules").is_empty()
    })
    .await;
    let mut ran = lines(&ran);
    ran.sort();
    assert_eq!(
        ran,
        [
            "after_skip_done",
            "always",
            "bad",
            "cleanup",
            "good",
            "on_success",
            "only_bad"
        ]
    );
    let log = chain.run_log().await;
    assert_eq!(
        jobs_with(&log, "rules", "SKIPPED"),
        ["after_bad", "after_skip", "both_bad", "quiet"]
    );
    let skipped = log
        .iter()
        .find(|r| r.job.as_deref() == Some("both_bad") && r.status == "SKIPPED")
        .expect("skipped row");
    assert!(
        skipped
            .error
            .as_deref()
            .is_some_and(|e| e.contains("all_failed") && e.contains("good SUCCEEDED")),
        "{:?}",
        skipped.error
    );
    let ends = run_ends(&log, "rules");
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(
        ends[0].0, "FAILED",
        "a cleanup that ran does not hide the failure"
    );
    assert!(
        ends[0]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("job bad FAILED") && e.contains("disk full")),
        "{ends:?}"
    );
    // The run's state, by the one definition the status views share, is FAILED; no job is
    // left open by a SKIPPED row.
    let rows: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| r.pipeline.as_deref() == Some("rules"))
        .collect();
    let state = conveyor_core::run_state::RunState::from_rows(rows.iter().copied()).expect("state");
    assert_eq!(state.status, "FAILED");
    assert!(conveyor_core::open_jobs::open_jobs(rows.into_iter().cloned()).is_empty());
    chain.stop().await;
}

/// The end of job `job` of `run_id`, SUCCEEDED, as the poll step publishes it.
fn job_end(run_id: &str, job: &str) -> String {
    serde_json::json!({
        "type": "dev.conveyor.batch.finished",
        "run_id": run_id,
        "pipeline": "join",
        "step": "poll",
        "attempt": 1,
        "status": "SUCCEEDED",
        "time": chrono::Utc::now(),
        "detail": {
            "job": job,
            "job_id": conveyor_core::names::JobId::derive(
                job,
                &conveyor_core::names::RunId::parse(run_id).expect("run id"),
                1
            ),
            "engine": "local",
            "vars": { "date": "2026-11-20" },
            "started_at": chrono::Utc::now(),
        },
    })
    .to_string()
}

#[tokio::test]
async fn a_join_whose_needs_end_in_concurrent_deliveries_starts_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let join = tmp.path().join("join");
    let yaml = r#"
pipelines:
  - name: join
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: left, engine: local, command: "true" }
      - { name: right, engine: local, command: "true" }
      - { name: both, engine: local, command: "echo {run_id} >> JOIN", needs: [left, right] }
"#
    .replace("JOIN", &join.display().to_string());
    let chain = Chain::start(&yaml).await;
    let run_id = "join-concurrent-1";
    let (left, right) = (job_end(run_id, "left"), job_end(run_id, "right"));
    // Both ends handled at once, twice each (a redelivery), before either is in the run log:
    // each delivery reads the other need as not ended, so none starts the join.
    let replies = futures::future::join_all(
        [&left, &right, &left, &right]
            .map(|body| chain.post(StepName::Submit, body, "application/json")),
    )
    .await;
    for (status, reply) in &replies {
        assert_eq!(*status, axum::http::StatusCode::OK, "{reply}");
        assert!(
            reply["summary"]
                .as_str()
                .is_some_and(|s| s.contains("waiting")),
            "{reply}"
        );
    }
    chain.settle(Duration::from_secs(10)).await;
    assert!(!join.exists(), "no delivery saw both needs ended");
    // The ends' run-log rows, written late (and twice): the poll tick's sweep finds the run
    // with both needs ended, no open job and no end, and starts the join, once.
    for body in [&left, &right, &right] {
        chain.accepted(StepName::Log, body).await;
    }
    wait_for(&chain, Duration::from_secs(30), "the run's end", |log| {
        !run_ends(log, "join").is_empty()
    })
    .await;
    assert_eq!(lines(&join), [run_id], "the join ran once");
    // The same ends delivered again after the join ran: nothing starts twice.
    let replies = futures::future::join_all(
        [&left, &right].map(|b| chain.post(StepName::Submit, b, "application/json")),
    )
    .await;
    assert!(
        replies
            .iter()
            .all(|(s, _)| *s == axum::http::StatusCode::OK)
    );
    chain.settle(Duration::from_secs(10)).await;
    assert_eq!(lines(&join), [run_id]);
    let log = chain.run_log().await;
    assert_eq!(run_ends(&log, "join"), [("SUCCEEDED".to_owned(), None)]);
    chain.stop().await;
}

#[tokio::test]
async fn a_job_whose_condition_is_false_is_skipped_and_what_needs_it_follows_its_rule() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ran = tmp.path().join("ran");
    let yaml = r#"
pipelines:
  - name: conditions
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: produce, engine: sql, query: "SELECT 1 AS x", destination: "ds.ready_{date}" }
      - { name: root_skip, engine: local, command: "echo root_skip >> RAN", when: { table_exists: ds.never } }
      - { name: after_root_skip, engine: local, command: "echo after_root_skip >> RAN", needs: [root_skip], run_if: all_done }
      - { name: if_ready, engine: local, command: "echo if_ready >> RAN", needs: [produce], when: { table_exists: "ds.ready_{date}" } }
      - { name: if_missing, engine: local, command: "echo if_missing >> RAN", needs: [produce], when: { table_exists: "ds.absent_{date}" } }
      - { name: after_missing, engine: local, command: "echo after_missing >> RAN", needs: [if_missing] }
      - { name: after_missing_done, engine: local, command: "echo after_missing_done >> RAN", needs: [if_missing], run_if: all_done }
      - { name: query_true, engine: local, command: "echo query_true >> RAN", needs: [produce], when: { query: "SELECT COUNT(*) > 0 FROM ds.ready_{date}" } }
      - { name: query_false, engine: local, command: "echo query_false >> RAN", needs: [produce], when: { query: "SELECT COUNT(*) > 5 FROM ds.ready_{date}" } }
"#
    .replace("RAN", &ran.display().to_string());
    let chain = Chain::start(&yaml).await;
    chain
        .accepted(
            StepName::Submit,
            r#"{"pipeline":"conditions","key":"k1","time":"2026-11-20T06:00:00Z"}"#,
        )
        .await;
    wait_for(&chain, Duration::from_secs(30), "the run's end", |log| {
        !run_ends(log, "conditions").is_empty()
    })
    .await;
    let mut ran = lines(&ran);
    ran.sort();
    assert_eq!(
        ran,
        [
            "after_missing_done",
            "after_root_skip",
            "if_ready",
            "query_true"
        ]
    );
    let log = chain.run_log().await;
    assert_eq!(
        jobs_with(&log, "conditions", "SKIPPED"),
        ["after_missing", "if_missing", "query_false", "root_skip"]
    );
    let skipped = log
        .iter()
        .find(|r| r.job.as_deref() == Some("if_missing") && r.status == "SKIPPED")
        .expect("skipped row");
    assert!(
        skipped
            .error
            .as_deref()
            .is_some_and(|e| e.contains("when table_exists ds.absent_{date} is false")),
        "{:?}",
        skipped.error
    );
    assert_eq!(
        run_ends(&log, "conditions"),
        [("SUCCEEDED".to_owned(), None)],
        "a skipped job is no failure"
    );
    chain.stop().await;
}
