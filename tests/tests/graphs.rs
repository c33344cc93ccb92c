//! Pipelines as small graphs on the embedded chain: a folder per `_SUCCESS` marker in one load
//! job, a time window of arrivals in one job, jobs in order (SQL after the load, a `for_each`
//! over a configuration table a previous job wrote, a failing middle job that stops the
//! chain), and fan-in (`trigger.after`) once per date however the upstream events arrive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use conveyor_core::clock::ManualClock;
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
                    "{} {} {} {:?} {} {:?}",
                    r.pipeline.as_deref().unwrap_or("-"),
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

/// Rows of `pipeline`'s `step` with `status`.
fn count(log: &[RunLogRow], pipeline: &str, step: &str, status: &str) -> usize {
    log.iter()
        .filter(|r| r.pipeline.as_deref() == Some(pipeline) && r.step == step && r.status == status)
        .count()
}

/// The statuses of `pipeline`'s run ends.
fn run_ends(log: &[RunLogRow], pipeline: &str) -> Vec<String> {
    log.iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some(pipeline) && r.step == "submit" && r.job.is_none()
        })
        .map(|r| r.status.clone())
        .collect()
}

const MARKER: &str = r#"
pipelines:
  - name: gebi
    trigger: { object: { bucket: landing, pattern: "orders/{date}/*.csv" } }
    load:
      table: "staging.orders_{date}"
      format: CSV
      batch: { marker: _SUCCESS }
"#;

#[tokio::test]
async fn a_folders_parts_and_marker_in_any_order_load_in_one_job_once() {
    let chain = Chain::start(MARKER).await;
    // A part that arrives before its marker is acknowledged and waits.
    chain.write_file(
        "landing",
        "orders/2026-11-20/part-0.csv",
        "id,v\n1,a\n2,b\n",
    );
    let reply = chain
        .accepted(
            StepName::Load,
            r#"{"bucket":"landing","name":"orders/2026-11-20/part-0.csv"}"#,
        )
        .await;
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|s| s.contains("waits for its folder's marker")),
        "{reply}"
    );
    chain.write_file("landing", "orders/2026-11-20/part-1.csv", "id,v\n3,c\n");
    chain.write_file(
        "landing",
        "orders/2026-11-20/part-2.csv",
        "id,v\n4,d\n5,e\n6,f\n",
    );
    // Not data: a Spark temporary file and a hidden file in the same folder.
    chain.write_file(
        "landing",
        "orders/2026-11-20/_temporary.csv",
        "id,v\n99,x\n",
    );
    chain.write_file("landing", "orders/2026-11-20/.hidden.csv", "id,v\n98,y\n");
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("staging.orders_2026_11_20").await,
        0,
        "nothing loads before the marker"
    );

    chain.write_file("landing", "orders/2026-11-20/_SUCCESS", "");
    // The marker delivered twice more, by hand, while the watcher delivers it too.
    for _ in 0..2 {
        chain
            .accepted(
                StepName::Load,
                r#"{"bucket":"landing","name":"orders/2026-11-20/_SUCCESS"}"#,
            )
            .await;
    }
    wait_for(
        &chain,
        Duration::from_secs(30),
        "the folder's load",
        |log| count(log, "gebi", "load", "SUCCEEDED") == 1,
    )
    .await;
    assert_eq!(chain.rows("staging.orders_2026_11_20").await, 6);
    let log = chain.run_log().await;
    assert_eq!(
        count(&log, "gebi", "load", "SUCCEEDED"),
        1,
        "one load job, loaded once"
    );
    let load = log
        .iter()
        .find(|r| r.pipeline.as_deref() == Some("gebi") && r.step == "load")
        .expect("load row");
    assert_eq!(load.rows_loaded, Some(6));
    assert!(load.detail.contains(r#""files":"3""#), "{}", load.detail);
    assert_eq!(run_ends(&log, "gebi"), ["SUCCEEDED"]);
    chain.stop().await;
}

#[tokio::test]
async fn arrivals_within_a_window_are_loaded_by_one_job() {
    let chain = Chain::start(
        r#"
pipelines:
  - name: tail
    trigger: { object: { bucket: landing, pattern: "events/{kind}/*.ndjson" } }
    load:
      table: "raw.events_{kind}"
      format: NDJSON
      batch: { window: 2s }
"#,
    )
    .await;
    for i in 0..4 {
        chain.write_file(
            "landing",
            &format!("events/click/e{i}.ndjson"),
            &format!("{{\"n\": {i}}}\n{{\"n\": {}}}\n", i + 10),
        );
    }
    wait_for(
        &chain,
        Duration::from_secs(30),
        "the window's load",
        |log| count(log, "tail", "load", "SUCCEEDED") >= 1,
    )
    .await;
    let log = chain.run_log().await;
    let loads: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| r.pipeline.as_deref() == Some("tail") && r.step == "load")
        .collect();
    let files: usize = loads
        .iter()
        .filter_map(|r| {
            let d: serde_json::Value = serde_json::from_str(&r.detail).ok()?;
            d["vars"]["files"].as_str()?.parse::<usize>().ok()
        })
        .sum();
    assert_eq!(
        files, 4,
        "every arrival is in exactly one window: {loads:#?}"
    );
    assert!(
        loads.len() <= 2,
        "four arrivals within a two-second window are one job (two when they straddle its end)"
    );
    assert_eq!(
        chain.rows("raw.events_click").await,
        8,
        "each arrival loaded once"
    );
    chain.stop().await;
}

const WINDOW: &str = r#"
pipelines:
  - name: tail
    trigger: { object: { bucket: landing, pattern: "events/{kind}/*.ndjson" } }
    load:
      table: "raw.events_{kind}"
      format: NDJSON
      batch: { window: 1s }
"#;

/// Delivers the arrival of `object` in `landing` to the load function again, by hand (as a
/// Pub/Sub redelivery would), and returns its summary.
async fn redeliver(chain: &Chain, object: &str) -> String {
    let (status, reply) = chain
        .post(
            StepName::Load,
            &format!(r#"{{"bucket":"landing","name":"{object}"}}"#),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["summary"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_arrival_redelivered_after_its_window_loaded_is_a_duplicate_even_after_a_restart() {
    let chain = Chain::start(WINDOW).await;
    for i in 0..3 {
        chain.write_file(
            "landing",
            &format!("events/click/e{i}.ndjson"),
            &format!("{{\"n\": {i}}}\n{{\"n\": {}}}\n", i + 10),
        );
    }
    wait_for(
        &chain,
        Duration::from_secs(30),
        "the window's load",
        |log| count(log, "tail", "load", "SUCCEEDED") >= 1,
    )
    .await;
    assert_eq!(chain.rows("raw.events_click").await, 6);
    // Later windows: redelivered after the window closed and loaded. The window is 1 s of
    // time: waiting past it is the behaviour under test, not a guess at how long work takes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..3 {
        let summary = redeliver(&chain, &format!("events/click/e{i}.ndjson")).await;
        assert!(summary.contains("a duplicate delivery"), "{summary}");
    }
    chain.settle(Duration::from_secs(20)).await;
    // Nothing must happen: a window a redelivery wrongly opened would close (1 s) and load in
    // this time. An absence has no event to wait for; the window's length is the wait.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("raw.events_click").await,
        6,
        "a redelivered arrival is not loaded again"
    );
    // A restarted runtime announces every file again.
    let chain = chain.restart().await;
    // As above: a window the restart's announcements wrongly opened closes within 1 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    chain.settle(Duration::from_secs(20)).await;
    let summary = redeliver(&chain, "events/click/e0.ndjson").await;
    assert!(summary.contains("a duplicate delivery"), "{summary}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("raw.events_click").await,
        6,
        "nothing loads twice after a restart"
    );
    // A new file still joins a window and loads.
    chain.write_file("landing", "events/click/e9.ndjson", "{\"n\": 9}\n");
    chain
        .wait_rows("raw.events_click", 7, Duration::from_secs(30))
        .await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("raw.events_click").await, 7);
    chain.stop().await;
}

/// The `joined/` records of `pipeline`'s windows in `landing`: one per arrival that found
/// its window.
fn joined(chain: &Chain, pipeline: &str) -> usize {
    let dir = chain
        .bucket("landing")
        .join("_conveyor/windows")
        .join(pipeline);
    std::fs::read_dir(&dir)
        .map(|tables| {
            tables
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_dir(t.path().join("joined")).ok())
                .map(Iterator::count)
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn auto_batching_loads_a_burst_in_two_jobs_with_every_file_once_and_says_so() {
    // The steps' clock stands still at the start of a 62 s window until the test moves it.
    let now = chrono::Utc::now().timestamp();
    let start = now - now.rem_euclid(62) + 1;
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(start, 0).expect("time"),
    ));
    let chain = Chain::start_with_clock(
        r#"
pipelines:
  - name: feed
    trigger: { object: { bucket: landing, pattern: "events/{kind}/*.ndjson" } }
    load:
      table: "raw.events_{kind}"
      format: NDJSON
      batch: { auto: true }
"#,
        clock.clone(),
    )
    .await;
    for i in 0..40 {
        chain.write_file(
            "landing",
            &format!("events/click/e{i:02}.ndjson"),
            &format!("{{\"n\": {i}}}\n{{\"n\": {}}}\n", i + 100),
        );
    }
    // Every file found its window; the quiet table's first arrival loaded at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while joined(&chain, "feed") < 40 {
        assert!(
            Instant::now() < deadline,
            "{} of 40 joined",
            joined(&chain, "feed")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&chain, Duration::from_secs(30), "the first load", |log| {
        count(log, "feed", "load", "SUCCEEDED") == 1
    })
    .await;
    let first = chain.rows("raw.events_click").await;
    assert!(
        (2..80).contains(&first),
        "the first arrival (and any racing it) loaded at once, the rest wait: {first} rows"
    );
    // The window ends: the poll tick closes it.
    clock.advance(chrono::Duration::seconds(62));
    chain
        .wait_rows("raw.events_click", 80, Duration::from_secs(30))
        .await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("raw.events_click").await,
        80,
        "each file loaded once"
    );
    let log = chain.run_log().await;
    let loads: Vec<serde_json::Value> = log
        .iter()
        .filter(|r| r.pipeline.as_deref() == Some("feed") && r.step == "load")
        .filter(|r| r.status == "SUCCEEDED")
        .filter_map(|r| serde_json::from_str(&r.detail).ok())
        .collect();
    assert_eq!(loads.len(), 2, "40 arrivals in two load jobs: {loads:#?}");
    let files: usize = loads
        .iter()
        .filter_map(|d| d["vars"]["files"].as_str()?.parse::<usize>().ok())
        .sum();
    assert_eq!(files, 40, "every arrival in exactly one job: {loads:#?}");
    let notes: Vec<&str> = loads
        .iter()
        .filter_map(|d| d["vars"]["batch"].as_str())
        .collect();
    assert!(
        notes.iter().any(|n| n.starts_with("auto: at once"))
            && notes
                .iter()
                .any(|n| n.starts_with("auto window=62s (rate ")),
        "the run log says what auto batching did: {notes:?}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_rewritten_marker_loads_only_the_parts_no_earlier_marker_loaded() {
    let chain = Chain::start(MARKER).await;
    chain.write_file(
        "landing",
        "orders/2026-11-21/part-0.csv",
        "id,v\n1,a\n2,b\n",
    );
    chain.write_file("landing", "orders/2026-11-21/_SUCCESS", "");
    wait_for(
        &chain,
        Duration::from_secs(30),
        "the folder's load",
        |log| count(log, "gebi", "load", "SUCCEEDED") == 1,
    )
    .await;
    assert_eq!(chain.rows("staging.orders_2026_11_21").await, 2);
    // The producer marks the folder again (a new generation of the marker), nothing new in it.
    chain.write_file("landing", "orders/2026-11-21/_SUCCESS", "again");
    let summary = redeliver(&chain, "orders/2026-11-21/_SUCCESS").await;
    assert!(
        summary.contains("was loaded by an earlier marker"),
        "{summary}"
    );
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(
        chain.rows("staging.orders_2026_11_21").await,
        2,
        "no part is loaded twice"
    );
    // A new part and a new marker: only the new part loads.
    chain.write_file("landing", "orders/2026-11-21/part-1.csv", "id,v\n3,c\n");
    chain.write_file("landing", "orders/2026-11-21/_SUCCESS", "third");
    wait_for(
        &chain,
        Duration::from_secs(30),
        "the new part's load",
        |log| count(log, "gebi", "load", "SUCCEEDED") == 2,
    )
    .await;
    assert_eq!(chain.rows("staging.orders_2026_11_21").await, 3);
    // And after a restart, nothing again. An absence has no event to wait for: the restart's
    // watcher (every 30 ms) gets a few looks at every file before the chain settles.
    let chain = chain.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.rows("staging.orders_2026_11_21").await, 3);
    chain.stop().await;
}

#[tokio::test]
async fn a_sql_job_writes_its_destination_after_the_load() {
    let chain = Chain::start(
        r#"
pipelines:
  - name: orders
    trigger: { object: { bucket: landing, pattern: "orders/{date}/*.csv" } }
    load: { table: "staging.orders_{date}", format: CSV }
    jobs:
      - name: dedupe
        engine: sql
        query: "SELECT DISTINCT * FROM staging.orders_{date}"
        destination: "analytics.orders_{date}"
        write_disposition: WRITE_TRUNCATE
"#,
    )
    .await;
    chain.write_file(
        "landing",
        "orders/2026-11-20/a.csv",
        "id,v\n1,a\n1,a\n2,b\n2,b\n3,c\n",
    );
    wait_for(&chain, Duration::from_secs(30), "the run's end", |log| {
        !run_ends(log, "orders").is_empty()
    })
    .await;
    assert_eq!(chain.rows("staging.orders_2026_11_20").await, 5);
    assert_eq!(chain.rows("analytics.orders_2026_11_20").await, 3);
    let log = chain.run_log().await;
    assert_eq!(run_ends(&log, "orders"), ["SUCCEEDED"]);
    let dedupe: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| r.job.as_deref() == Some("dedupe"))
        .collect();
    assert!(
        dedupe
            .iter()
            .any(|r| r.status == "SUCCEEDED" && r.step == "poll"),
        "the job is its own step row: {dedupe:#?}"
    );
    assert!(dedupe.iter().all(|r| {
        r.dataproc_job_id
            .as_deref()
            .is_some_and(|j| j.starts_with("cv-dedupe-"))
    }));
    chain.stop().await;
}

#[tokio::test]
async fn for_each_runs_the_active_rows_of_a_table_a_previous_job_wrote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let marks = tmp.path().join("units");
    let done = tmp.path().join("done");
    let yaml = r#"
pipelines:
  - name: units
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - name: configure
        engine: sql
        query: >
          CREATE TABLE IF NOT EXISTS cdf.configuration (business_unit TEXT, is_active TEXT);
          DELETE FROM cdf.configuration WHERE TRUE;
          INSERT INTO cdf.configuration VALUES ('hr', 'true'), ('fin', 'false'), ('ops', '1')
      - name: per_unit
        engine: local
        command: "echo {business_unit} >> MARKS"
        for_each: { table: cdf.configuration, active_column: is_active }
      - name: report
        engine: local
        command: "echo done >> DONE"
"#
    .replace("MARKS", &marks.display().to_string())
    .replace("DONE", &done.display().to_string());
    let chain = Chain::start(&yaml).await;
    chain
        .accepted(StepName::Submit, r#"{"pipeline":"units","key":"k1"}"#)
        .await;
    wait_for(&chain, Duration::from_secs(30), "the run's end", |log| {
        !run_ends(log, "units").is_empty()
    })
    .await;
    let mut units = lines(&marks);
    units.sort();
    assert_eq!(units, ["hr", "ops"], "only the active rows run");
    assert_eq!(
        lines(&done),
        ["done"],
        "the next job starts once, after every row"
    );
    let log = chain.run_log().await;
    assert_eq!(run_ends(&log, "units"), ["SUCCEEDED"]);
    let rows: std::collections::BTreeSet<&str> = log
        .iter()
        .filter(|r| r.job.as_deref() == Some("per_unit") && r.status == "SUCCEEDED")
        .map(|r| r.run_id.as_str())
        .collect();
    assert_eq!(
        rows.len(),
        3,
        "each row's run, and the job, end on their own: {rows:?}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_failing_middle_job_is_retried_per_poll_and_stops_the_chain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tries = tmp.path().join("tries");
    let last = tmp.path().join("last");
    let yaml = r#"
pipelines:
  - name: chain
    trigger: { manual: true }
    poll: { interval: 50ms, max_attempts: 2, backoff: { initial: 100ms, max: 200ms } }
    jobs:
      - { name: first, engine: local, command: "true" }
      - { name: middle, engine: local, command: "echo try >> TRIES; echo 'no input' >&2; exit 4" }
      - { name: last, engine: local, command: "echo ran >> LAST" }
"#
    .replace("TRIES", &tries.display().to_string())
    .replace("LAST", &last.display().to_string());
    let chain = Chain::start(&yaml).await;
    chain
        .accepted(StepName::Submit, r#"{"pipeline":"chain","key":"k"}"#)
        .await;
    wait_for(&chain, Duration::from_secs(30), "the run's end", |log| {
        !run_ends(log, "chain").is_empty()
    })
    .await;
    assert_eq!(
        lines(&tries).len(),
        2,
        "two attempts, per poll.max_attempts"
    );
    assert!(!last.exists(), "nothing after the failed job starts");
    let log = chain.run_log().await;
    assert_eq!(run_ends(&log, "chain"), ["FAILED"]);
    let end = log
        .iter()
        .find(|r| r.pipeline.as_deref() == Some("chain") && r.step == "submit" && r.job.is_none())
        .expect("run end");
    assert!(
        end.error
            .as_deref()
            .is_some_and(|e| e.contains("job middle") && e.contains("no input")),
        "{:?}",
        end.error
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_pipeline_after_two_others_runs_once_per_date_however_their_ends_arrive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let daily = tmp.path().join("daily");
    let yaml = r#"
pipelines:
  - name: orders
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs: [{ name: extract, engine: local, command: "true" }]
  - name: customers
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs: [{ name: extract, engine: local, command: "true" }]
  - name: daily
    trigger: { after: [orders, customers] }
    poll: { interval: 50ms }
    jobs: [{ name: report, engine: local, command: "echo {date} >> DAILY" }]
"#
    .replace("DAILY", &daily.display().to_string());
    let chain = Chain::start(&yaml).await;
    let time = "2026-11-20T06:00:00Z";
    let (status, reply) = chain
        .post(
            StepName::Submit,
            &format!(r#"{{"pipeline":"orders","key":"o1","time":"{time}"}}"#),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    wait_for(&chain, Duration::from_secs(30), "orders' end", |log| {
        run_ends(log, "orders") == ["SUCCEEDED"]
    })
    .await;
    assert!(!daily.exists(), "one upstream is not enough");
    let (status, reply) = chain
        .post(
            StepName::Submit,
            &format!(r#"{{"pipeline":"customers","key":"c1","time":"{time}"}}"#),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    wait_for(&chain, Duration::from_secs(30), "daily's end", |log| {
        run_ends(log, "daily") == ["SUCCEEDED"]
    })
    .await;

    // The upstreams' ends again, duplicated and in the other order: nothing runs twice.
    let ends: Vec<RunLogRow> = chain
        .run_log()
        .await
        .into_iter()
        .filter(|r| r.step == "submit" && r.job.is_none() && r.pipeline.as_deref() != Some("daily"))
        .collect();
    assert_eq!(ends.len(), 2);
    for row in ends.iter().rev().chain(ends.iter()) {
        let event = serde_json::json!({
            "type": "dev.conveyor.run.finished",
            "run_id": row.run_id,
            "pipeline": row.pipeline,
            "step": "submit",
            "attempt": 1,
            "status": "SUCCEEDED",
            "time": row.td_timestamp,
            "detail": serde_json::from_str::<serde_json::Value>(&row.detail).expect("detail"),
        });
        let (status, reply) = chain
            .post(StepName::Submit, &event.to_string(), "application/json")
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(
        lines(&daily),
        ["2026-11-20"],
        "one run for the date, with that date"
    );
    let log = chain.run_log().await;
    assert_eq!(run_ends(&log, "daily"), ["SUCCEEDED"]);
    chain.stop().await;
}

#[test]
fn validate_refuses_a_cycle_of_after_and_unknown_upstreams() {
    let yaml = r#"
pipelines:
  - name: a
    trigger: { after: [b] }
    jobs: [{ name: x, engine: local, command: "true" }]
  - name: b
    trigger: { after: [a] }
    jobs: [{ name: x, engine: local, command: "true" }]
  - name: c
    trigger: { after: [nope] }
    jobs: [{ name: x, engine: local, command: "true" }]
"#;
    let err = conveyor_core::config::parse_str(yaml, "cycle.yaml")
        .expect_err("a cycle is refused")
        .to_string();
    assert!(
        err.contains("`after` makes a cycle: a after b after a"),
        "{err}"
    );
    assert!(err.contains("no pipeline is called \"nope\""), "{err}");
}

#[test]
fn every_example_configuration_validates() {
    let dir = conveyor_e2e::repo().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            conveyor_core::config::load_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} example files");
}

#[tokio::test]
async fn a_for_each_job_starts_each_row_by_its_own_event_not_inside_the_starting_request() {
    const ROWS: usize = 40;
    let tmp = tempfile::tempdir().expect("tempdir");
    let marks = tmp.path().join("units");
    let rows: Vec<String> = (0..ROWS).map(|i| format!("{{unit: u{i}}}")).collect();
    let yaml = format!(
        r#"
pipelines:
  - name: many
    trigger: {{ manual: true }}
    poll: {{ interval: 50ms }}
    jobs:
      - name: per_unit
        engine: local
        command: "echo {{unit}} >> MARKS"
        for_each: {{ rows: [{}] }}
"#,
        rows.join(", ")
    )
    .replace("MARKS", &marks.display().to_string());
    let chain = Chain::start(&yaml).await;
    let reply = chain
        .accepted(StepName::Submit, r#"{"pipeline":"many","key":"k1"}"#)
        .await;
    let events: Vec<&str> = reply["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("dev.conveyor.row.queued "))
            .count(),
        ROWS,
        "one event per row: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.starts_with("dev.conveyor.batch.submitted ")),
        "the starting request submitted rows itself: {events:?}"
    );
    wait_for(&chain, Duration::from_secs(60), "the run's end", |log| {
        !run_ends(log, "many").is_empty()
    })
    .await;
    let mut units = lines(&marks);
    units.sort();
    units.dedup();
    assert_eq!(units.len(), ROWS, "every row ran, each by its own delivery");
    assert_eq!(run_ends(&chain.run_log().await, "many"), ["SUCCEEDED"]);
    chain.stop().await;
}
