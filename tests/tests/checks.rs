//! Data-quality checks on the embedded chain (issue 27): each kind passing and failing after
//! its job SUCCEEDED on the engine, run as queries on the embedded warehouse; a failing
//! `error` check fails the job with CHECK_FAILED and the value observed, a `warn` one is
//! recorded on its SUCCEEDED row.

use std::collections::BTreeMap;
use std::time::Duration;

use conveyor_core::event::StepName;
use conveyor_core::ports::RunLogRow;
use conveyor_core::run_state::RunState;
use conveyor_e2e::Chain;

const CHECKS: &str = r#"
pipelines:
  - name: quality
    trigger: { manual: true }
    poll: { interval: 50ms, max_attempts: 1 }
    jobs:
      - name: make
        engine: sql
        query: >
          SELECT 1 AS id, 'a' AS name, CURRENT_TIMESTAMP AS ts, '2020-01-01 00:00:00' AS old
          UNION ALL SELECT 2, NULL, CURRENT_TIMESTAMP, '2020-01-01 00:00:00'
          UNION ALL SELECT 2, 'c', CURRENT_TIMESTAMP, '2020-01-01 00:00:00'
        destination: "ds.orders_{date}"
        checks: [{ row_count: { table: "ds.orders_{date}", min: 1 } }]
      - { name: rc_pass, needs: [make], engine: local, command: "true", checks: [{ row_count: { table: "ds.orders_{date}", min: 3, max: 3 } }] }
      - { name: rc_fail, needs: [make], engine: local, command: "true", checks: [{ row_count: { table: "ds.orders_{date}", min: 4 } }] }
      - { name: nn_pass, needs: [make], engine: local, command: "true", checks: [{ not_null: { table: "ds.orders_{date}", columns: [id, ts] } }] }
      - { name: nn_fail, needs: [make], engine: local, command: "true", checks: [{ not_null: { table: "ds.orders_{date}", columns: [id, name] } }] }
      - { name: uq_pass, needs: [make], engine: local, command: "true", checks: [{ unique: { table: "ds.orders_{date}", columns: [id, name] } }] }
      - { name: uq_fail, needs: [make], engine: local, command: "true", checks: [{ unique: { table: "ds.orders_{date}", columns: [id] } }] }
      - { name: fresh_pass, needs: [make], engine: local, command: "true", checks: [{ fresh: { table: "ds.orders_{date}", column: ts, within: 1h } }] }
      - { name: fresh_fail, needs: [make], engine: local, command: "true", checks: [{ fresh: { table: "ds.orders_{date}", column: old, within: 26h } }] }
      - { name: sql_pass, needs: [make], engine: local, command: "true", checks: [{ name: three, sql: "SELECT COUNT(*) = 3 AS ok FROM ds.orders_{date}" }] }
      - { name: sql_fail, needs: [make], engine: local, command: "true", checks: [{ name: empty, sql: "SELECT COUNT(*) = 0 AS ok, COUNT(*) AS n FROM ds.orders_{date}" }] }
      - { name: warn_only, needs: [make], engine: local, command: "true", checks: [{ not_null: { table: "ds.orders_{date}", columns: [name] }, severity: warn }] }
"#;

/// Each job's state, by the one definition of a run's state, with its error.
fn job_states(log: &[RunLogRow]) -> BTreeMap<String, (String, String)> {
    let mut jobs: BTreeMap<String, Vec<&RunLogRow>> = BTreeMap::new();
    for r in log
        .iter()
        .filter(|r| r.pipeline.as_deref() == Some("quality"))
    {
        if let Some(j) = &r.job {
            jobs.entry(j.clone()).or_default().push(r);
        }
    }
    jobs.into_iter()
        .filter_map(|(j, rows)| {
            let state = RunState::from_rows(rows.iter().copied())?;
            let error = rows
                .iter()
                .filter(|r| r.status == state.status)
                .find_map(|r| r.error.clone())
                .unwrap_or_default();
            Some((j, (state.status, error)))
        })
        .collect()
}

#[tokio::test]
async fn each_check_kind_passes_or_fails_its_job_with_the_value_observed() {
    let chain = Chain::start(CHECKS).await;
    chain
        .accepted(
            StepName::Submit,
            r#"{"pipeline":"quality","key":"q1","time":"2026-11-20T06:00:00Z"}"#,
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let states = job_states(&log);
    let status = |j: &str| states.get(j).map(|s| s.0.as_str()).unwrap_or("none");
    let error = |j: &str| states.get(j).map(|s| s.1.clone()).unwrap_or_default();
    for j in [
        "make",
        "rc_pass",
        "nn_pass",
        "uq_pass",
        "fresh_pass",
        "sql_pass",
        "warn_only",
    ] {
        assert_eq!(status(j), "SUCCEEDED", "{j}: {:?}", states.get(j));
    }
    for (j, says) in [
        ("rc_fail", "observed 3 rows, expected at least 4"),
        (
            "nn_fail",
            "observed 1 rows with a NULL in id, name, expected 0",
        ),
        (
            "uq_fail",
            "observed 1 duplicated values of (id), expected 0",
        ),
        ("fresh_fail", "observed newest old 2020-01-01T00:00:00Z"),
        (
            "sql_fail",
            "check empty: observed n=3, ok=0, expected ok true",
        ),
    ] {
        assert_eq!(status(j), "FAILED", "{j}: {:?}", states.get(j));
        assert!(
            error(j).starts_with("CHECK_FAILED: ") && error(j).contains(says),
            "{j}: {}",
            error(j)
        );
    }
    assert!(
        error("warn_only").starts_with("CHECK_WARN: check not_null ds.orders_{date}: observed 1"),
        "{}",
        error("warn_only")
    );
    let ends: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| {
            r.step == "submit" && r.job.is_none() && r.pipeline.as_deref() == Some("quality")
        })
        .collect();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].status, "FAILED");
    chain.stop().await;
}

#[tokio::test]
async fn a_pipelines_checks_decide_a_run_whose_jobs_all_succeeded() {
    let yaml = r#"
pipelines:
  - name: guarded
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: make, engine: sql, query: "SELECT 1 AS id UNION ALL SELECT 2", destination: "ds.guarded_{date}" }
    checks:
      - { row_count: { table: "ds.guarded_{date}", min: 2 } }
      - { unique: { table: "ds.guarded_{date}", columns: [id] } }
  - name: strict
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: make, engine: sql, query: "SELECT 1 AS id UNION ALL SELECT 1", destination: "ds.strict_{date}" }
    checks:
      - { row_count: { table: "ds.strict_{date}", min: 1 } }
      - { name: no_duplicates, unique: { table: "ds.strict_{date}", columns: [id] } }
      - { row_count: { table: "ds.strict_{date}", max: 1 }, severity: warn }
"#;
    let chain = Chain::start(yaml).await;
    for p in ["guarded", "strict"] {
        chain
            .accepted(
                StepName::Submit,
                &format!(r#"{{"pipeline":"{p}","key":"k","time":"2026-11-20T06:00:00Z"}}"#),
            )
            .await;
    }
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let end = |p: &str| {
        log.iter()
            .find(|r| r.pipeline.as_deref() == Some(p) && r.step == "submit" && r.job.is_none())
            .map(|r| (r.status.clone(), r.error.clone().unwrap_or_default()))
            .unwrap_or_default()
    };
    assert_eq!(end("guarded"), ("SUCCEEDED".to_owned(), String::new()));
    let (status, error) = end("strict");
    assert_eq!(status, "FAILED", "{error}");
    assert!(
        error
            .starts_with("CHECK_FAILED: check no_duplicates: observed 1 duplicated values of (id)"),
        "{error}"
    );
    assert!(
        !error.contains("max"),
        "a warn check does not fail the run: {error}"
    );
    chain.stop().await;
}
