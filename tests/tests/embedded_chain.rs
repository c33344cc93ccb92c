//! End-to-end tests of the embedded chain: real files in watched bucket directories, the
//! real SQLite warehouse, real `sh` processes as batches, and the function routers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor_core::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use conveyor_core::names::{PipelineName, RunId, TableRef};
use conveyor_core::ports::RunLogRow;
use conveyor_e2e::Chain;
use tower::ServiceExt;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/landing/sales/2026-11-20")
        .join(name)
}

/// The (attempt, status) of `pipeline`'s rows of `step` about a job or the load (not the run
/// ends, which `run_ends` reads).
fn statuses(rows: &[RunLogRow], pipeline: &str, step: &str) -> Vec<(u32, String)> {
    rows.iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some(pipeline)
                && r.step == step
                && !(r.step == "submit" && r.job.is_none())
        })
        .map(|r| (r.attempt, r.status.clone()))
        .collect()
}

/// The statuses of `pipeline`'s run ends (`dev.conveyor.run.finished`: submit rows without a job).
fn run_ends(rows: &[RunLogRow], pipeline: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some(pipeline) && r.step == "submit" && r.job.is_none()
        })
        .map(|r| r.status.clone())
        .collect()
}

const FOUR_FORMATS: &str = r#"
pipelines:
  - name: avro
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.avro" } }
    load: { table: "analytics.avro_{date}", format: AVRO }
    batch: { engine: local, command: "true" }
    poll: { interval: 50ms }
  - name: parquet
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.parquet" } }
    load: { table: "analytics.parquet_{date}", format: PARQUET }
  - name: csv
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.csv_{date}", format: CSV, skip_leading_rows: 1 }
  - name: ndjson
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.ndjson" } }
    load: { table: "analytics.ndjson_{date}", format: NDJSON }
"#;

/// Rows in an example file, counted independently of the loader where the format allows.
fn input_rows(file: &str) -> u64 {
    let text = || std::fs::read_to_string(example(file)).expect("read example");
    match file.rsplit('.').next() {
        Some("csv") => text()
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count() as u64,
        Some("ndjson") => text().lines().filter(|l| !l.trim().is_empty()).count() as u64,
        Some("avro") => 5,
        _ => 4,
    }
}

#[tokio::test]
async fn dropped_files_of_every_format_become_table_rows_and_run_log_rows() {
    let chain = Chain::start(FOUR_FORMATS).await;
    for f in [
        "orders.avro",
        "orders.parquet",
        "orders.csv",
        "orders.ndjson",
    ] {
        chain.drop_file("landing", &format!("sales/2026-11-20/{f}"), &example(f));
    }
    chain.settle(Duration::from_secs(30)).await;
    for (format, file) in [
        ("avro", "orders.avro"),
        ("parquet", "orders.parquet"),
        ("csv", "orders.csv"),
        ("ndjson", "orders.ndjson"),
    ] {
        assert_eq!(
            chain.rows(&format!("analytics.{format}_2026_11_20")).await,
            input_rows(file),
            "{format}"
        );
    }
    let log = chain.run_log().await;
    for p in ["avro", "parquet", "csv", "ndjson"] {
        assert_eq!(
            statuses(&log, p, "load"),
            vec![(1, "SUCCEEDED".to_owned())],
            "{p}"
        );
    }
    assert_eq!(
        statuses(&log, "avro", "submit"),
        vec![(1, "SUBMITTED".to_owned())]
    );
    let poll = statuses(&log, "avro", "poll");
    assert_eq!(poll.last(), Some(&(1, "SUCCEEDED".to_owned())), "{poll:?}");
    assert_eq!(
        run_ends(&log, "avro"),
        ["SUCCEEDED"],
        "the batch ends the run"
    );
    assert_eq!(
        run_ends(&log, "csv"),
        ["SUCCEEDED"],
        "without jobs the load ends the run"
    );
    let load_row = log
        .iter()
        .find(|r| r.pipeline.as_deref() == Some("csv") && r.step == "load")
        .expect("csv load row");
    assert_eq!(load_row.db_name.as_deref(), Some("analytics"));
    assert_eq!(load_row.table_name.as_deref(), Some("csv_2026_11_20"));
    assert_eq!(load_row.rows_loaded, Some(6));
    assert_eq!(
        load_row.source_object.as_deref(),
        Some("gs://landing/sales/2026-11-20/orders.csv")
    );
    let batch_row = log
        .iter()
        .find(|r| {
            r.pipeline.as_deref() == Some("avro") && r.status == "SUCCEEDED" && r.step == "poll"
        })
        .expect("batch row");
    assert!(
        batch_row
            .dataproc_job_id
            .as_deref()
            .is_some_and(|j| j.starts_with("cv-batch-"))
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_failing_batch_is_retried_up_to_max_attempts_and_ends_failed_with_its_error() {
    let yaml = r#"
pipelines:
  - name: flaky
    trigger: { object: { bucket: landing, pattern: "in/*.csv" } }
    load: { table: "ds.flaky", format: CSV }
    batch: { engine: local, command: "echo attempt {attempt} >> $MARKS; echo 'spark died' >&2; exit 3" }
    poll: { max_attempts: 3, interval: 50ms, backoff: { initial: 100ms, multiplier: 2, max: 1s } }
"#;
    let tmp = tempfile::tempdir().expect("tempdir");
    let marks = tmp.path().join("marks");
    let chain = Chain::start(&yaml.replace("$MARKS", &marks.display().to_string())).await;
    chain.write_file("landing", "in/a.csv", "x\n1\n2\n");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let submits = statuses(&log, "flaky", "submit");
    assert_eq!(
        submits,
        vec![
            (1, "SUBMITTED".into()),
            (2, "SUBMITTED".into()),
            (3, "SUBMITTED".into())
        ]
    );
    let failures: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some("flaky") && r.status == "FAILED" && r.job.is_some()
        })
        .collect();
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert_eq!(
        run_ends(&log, "flaky"),
        ["FAILED"],
        "the job's final failure ends the run"
    );
    let last = failures.last().expect("final failure");
    assert_eq!(last.attempt, 3);
    assert!(
        last.error
            .as_deref()
            .is_some_and(|e| e.contains("exit status 3") && e.contains("spark died")),
        "{:?}",
        last.error
    );
    assert!(
        !last.detail.contains("retry_at"),
        "the final failure schedules no retry"
    );
    assert!(!log.iter().any(|r| r.pipeline.as_deref() == Some("flaky")
        && r.step == "poll"
        && r.status == "SUCCEEDED"));
    let ran = std::fs::read_to_string(&marks).expect("marks");
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        vec!["attempt 1", "attempt 2", "attempt 3"]
    );
    chain.stop().await;
}

/// A run started by a traced request records the request's trace id on its rows (every job's
/// events carry it), so the run links to its trace in Cloud Trace.
#[tokio::test]
async fn a_run_started_by_a_traced_request_records_its_trace_id_for_its_trace_link() {
    let yaml = r#"
pipelines:
  - name: traced
    trigger: { manual: true }
    jobs:
      - { name: one, engine: local, command: "true" }
      - { name: two, engine: local, command: "true" }
    poll: { interval: 50ms }
"#;
    let chain = Chain::start(yaml).await;
    let (status, reply) = chain
        .request(
            StepName::Submit,
            "POST",
            "/",
            r#"{"pipeline":"traced","key":"k"}"#,
            &[
                ("content-type", "application/json"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let rows: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| r.pipeline.as_deref() == Some("traced"))
        .collect();
    assert!(
        rows.iter().any(|r| r.job.as_deref() == Some("two")),
        "{rows:#?}"
    );
    for r in &rows {
        let detail: Detail = serde_json::from_str(&r.detail).expect("detail");
        assert_eq!(
            detail.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{} {} {}",
            r.step,
            r.status,
            r.detail
        );
        let link = conveyor_core::links::trace("acme", detail.trace_id.as_deref().unwrap_or(""))
            .expect("a link");
        assert!(link.url.ends_with("&tid=4bf92f3577b34da6a3ce929d0e0e4736"));
    }
    chain.stop().await;
}

/// A paused pipeline's scheduled ticks are recorded PAUSED (one run-log read each) and start
/// nothing; `pause.arrivals: hold` lists them for `conveyor resume`, which starts the run the
/// tick would have (its run date), and `skip` lists none.
#[tokio::test]
async fn a_paused_pipelines_ticks_are_recorded_paused_and_held_or_skipped_per_its_setting() {
    let yaml = r#"
pipelines:
  - name: held
    trigger: { schedule: { cron: "0 5 * * *", time_zone: Europe/Paris } }
    batch: { engine: local, command: "echo {date} >> $OUT" }
    poll: { interval: 50ms }
  - name: skipped
    trigger: { schedule: { cron: "0 5 * * *" } }
    pause: { arrivals: skip }
    batch: { engine: local, command: "echo {date} >> $OUT" }
    poll: { interval: 50ms }
"#;
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let yaml = yaml.replace("$OUT", &out.display().to_string());
    let chain = Chain::start(&yaml).await;
    let ctx = &chain.ctx;
    let pipeline = |n: &str| ctx.config.pipeline(n).expect("pipeline").clone();
    for p in ["held", "skipped"] {
        conveyor_core::steps::pause::set_paused(ctx, &pipeline(p), true, "ops", "late")
            .await
            .expect("pause");
    }
    let tick = |p: &str| {
        format!(r#"{{"pipeline":"{p}","trigger":"schedule","time":"2026-11-20T04:00:00Z"}}"#)
    };
    for p in ["held", "skipped"] {
        let reply = chain.accepted(StepName::Submit, &tick(p)).await;
        assert!(
            reply
                .to_string()
                .contains(&format!("pipeline {p} is paused")),
            "{reply}"
        );
        // A redelivered tick is the same row.
        chain.accepted(StepName::Submit, &tick(p)).await;
    }
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    for p in ["held", "skipped"] {
        let paused: Vec<&RunLogRow> = log
            .iter()
            .filter(|r| r.pipeline.as_deref() == Some(p) && r.step == "submit")
            .collect();
        assert_eq!(paused.len(), 1, "{p}: {paused:#?}");
        assert_eq!(paused[0].status, "PAUSED");
        assert_eq!(paused[0].run_date.as_deref(), Some("2026-11-20"), "{p}");
    }
    assert!(!out.exists(), "a paused pipeline ran");
    let held = conveyor_core::steps::pause::held(ctx, &pipeline("held"))
        .await
        .expect("held");
    assert_eq!(held.len(), 1, "{held:#?}");
    assert!(
        conveyor_core::steps::pause::held(ctx, &pipeline("skipped"))
            .await
            .expect("held")
            .is_empty(),
        "a skipped tick is not held"
    );
    // Resumed, the held tick starts as the schedule would have: its run date.
    conveyor_core::steps::pause::set_paused(ctx, &pipeline("held"), false, "ops", "")
        .await
        .expect("resume");
    let at = held[0].1.started_at.expect("the tick's time");
    chain
        .accepted(
            StepName::Submit,
            &format!(
                r#"{{"pipeline":"held","trigger":"schedule","time":"{}"}}"#,
                at.to_rfc3339()
            ),
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(
        std::fs::read_to_string(&out).expect("ran").trim(),
        "2026-11-20"
    );
    assert!(
        conveyor_core::steps::pause::held(ctx, &pipeline("held"))
            .await
            .expect("held")
            .is_empty(),
        "nothing held once resumed"
    );
    chain.stop().await;
}

/// A pipeline's whole-run `timeout`: past it, the jobs still running are cancelled and end
/// TIMED_OUT, no further job starts, and the run ends TIMED_OUT once — in a line and in a graph
/// whose two side-by-side jobs are both running.
#[tokio::test]
async fn a_run_past_its_whole_run_timeout_is_cancelled_and_ends_timed_out_once() {
    let yaml = r#"
pipelines:
  - name: line
    trigger: { manual: true }
    timeout: 1s
    jobs:
      - { name: slow, engine: local, command: "sleep 30" }
      - { name: after, engine: local, command: "echo ran > $AFTER" }
    poll: { timeout: 1m, interval: 50ms }
  - name: graph
    trigger: { manual: true }
    timeout: 1s
    jobs:
      - { name: left, engine: local, command: "sleep 30" }
      - { name: right, engine: local, command: "sleep 30" }
      - { name: join, engine: local, command: "echo ran > $AFTER", needs: [left, right], run_if: all_done }
    poll: { timeout: 1m, interval: 50ms }
"#;
    let tmp = tempfile::tempdir().expect("tempdir");
    let after = tmp.path().join("after");
    let yaml = yaml.replace("$AFTER", &after.display().to_string());
    let chain = Chain::start(&yaml).await;
    for p in ["line", "graph"] {
        chain
            .accepted(
                StepName::Submit,
                &format!(r#"{{"pipeline":"{p}","key":"k"}}"#),
            )
            .await;
    }
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    for (p, jobs) in [("line", vec!["slow"]), ("graph", vec!["left", "right"])] {
        assert_eq!(run_ends(&log, p), ["TIMED_OUT"], "{p}: one run end");
        let end = log
            .iter()
            .find(|r| r.pipeline.as_deref() == Some(p) && r.step == "submit" && r.job.is_none())
            .expect("run end");
        assert!(
            end.error.as_deref().is_some_and(
                |e| e.contains("the run timed out") && e.contains("pipeline timeout 1s")
            ),
            "{p}: {:?}",
            end.error
        );
        for job in jobs {
            let ended: Vec<&RunLogRow> = log
                .iter()
                .filter(|r| r.pipeline.as_deref() == Some(p) && r.job.as_deref() == Some(job))
                .filter(|r| r.status == "TIMED_OUT")
                .collect();
            assert_eq!(ended.len(), 1, "{p}/{job}: {ended:#?}");
            assert!(
                ended[0]
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("the run timed out") && e.contains("cancelled")),
                "{:?}",
                ended[0].error
            );
        }
    }
    // No job started after the timeout, and every running job was cancelled.
    assert!(
        !log.iter()
            .any(|r| matches!(r.job.as_deref(), Some("after" | "join"))),
        "a job started after the run's timeout"
    );
    assert!(!after.exists());
    let batches: Vec<PathBuf> = std::fs::read_dir(chain.dir.path().join("state/batches"))
        .expect("batches")
        .flatten()
        .map(|d| d.path())
        .collect();
    assert_eq!(batches.len(), 3, "{batches:?}");
    for b in &batches {
        assert!(
            b.join("cancelled").exists(),
            "{} was not cancelled",
            b.display()
        );
    }
    chain.stop().await;
}

#[tokio::test]
async fn a_batch_that_outlives_its_timeout_is_cancelled_and_ends_timed_out() {
    let yaml = r#"
pipelines:
  - name: slow
    trigger: { object: { bucket: landing, pattern: "in/*.csv" } }
    load: { table: "ds.slow", format: CSV }
    batch: { engine: local, command: "echo started > $STARTED; sleep 4 & echo $! > $CHILD; wait; echo finished > $MARK" }
    poll: { timeout: 1s, max_attempts: 2, interval: 50ms }
"#;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mark = tmp.path().join("finished");
    let started = tmp.path().join("started");
    let child = tmp.path().join("child");
    let yaml = yaml
        .replace("$MARK", &mark.display().to_string())
        .replace("$STARTED", &started.display().to_string())
        .replace("$CHILD", &child.display().to_string());
    let begun = std::time::Instant::now();
    let chain = Chain::start(&yaml).await;
    chain.write_file("landing", "in/a.csv", "x\n1\n");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let poll = statuses(&log, "slow", "poll");
    assert_eq!(poll.last(), Some(&(1, "TIMED_OUT".to_owned())), "{poll:?}");
    assert!(!poll.iter().any(|(_, s)| s == "SUCCEEDED"));
    assert_eq!(
        statuses(&log, "slow", "submit").len(),
        1,
        "a timeout is final, not retried"
    );
    let row = log
        .iter()
        .find(|r| r.status == "TIMED_OUT")
        .expect("timed out row");
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        row.error
    );
    // The command ran: it wrote its start mark and the pid of its `sleep` child.
    assert!(started.exists(), "the batch never started");
    let child_pid = std::fs::read_to_string(&child).expect("the child's pid");
    let pids: Vec<String> = std::fs::read_dir(chain.dir.path().join("state/batches"))
        .expect("batches")
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("pid")).ok())
        .collect();
    assert_eq!(pids.len(), 1);
    // The whole process group is killed: the wrapper, and the `sleep` grandchild too (killing
    // the wrapper alone would leave it running, reparented).
    let running = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .is_ok_and(|stat| !stat.contains(") Z"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while (running(&pids[0]) || running(&child_pid)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!running(&pids[0]), "the cancelled batch is still running");
    assert!(
        !running(&child_pid),
        "the batch's child process {} outlived the cancel",
        child_pid.trim()
    );
    // Had the cancel missed, the command would write its end mark 4 s after it started:
    // wait past that before checking it never did.
    let past_the_end = Duration::from_secs(6);
    if let Some(left) = past_the_end.checked_sub(begun.elapsed()) {
        tokio::time::sleep(left).await;
    }
    assert!(
        !mark.exists(),
        "the command ran to its end after the timeout"
    );
    chain.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_loads_once_and_starts_the_batch_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let runs = tmp.path().join("runs");
    let yaml = format!(
        r#"
pipelines:
  - name: once
    trigger: {{ object: {{ bucket: landing, pattern: "in/{{day}}/*.csv" }} }}
    load: {{ table: "ds.once_{{day}}", format: CSV }}
    batch: {{ engine: local, command: "echo {{run_id}} >> {}" }}
    poll: {{ interval: 50ms }}
"#,
        runs.display()
    );
    let chain = Chain::start(&yaml).await;
    chain.write_file("landing", "in/d1/a.csv", "x,y\n1,a\n2,b\n3,c\n");
    chain.settle(Duration::from_secs(30)).await;
    // The same GCS notification again, twice, through the load function's HTTP endpoint.
    let body = chain.notification("landing", "in/d1/a.csv").await;
    for _ in 0..2 {
        chain.accepted(StepName::Load, &body).await;
    }
    // A hand-written curl without a generation means the object as it is now: the same run.
    chain
        .accepted(
            StepName::Load,
            r#"{"bucket":"landing","name":"in/d1/a.csv"}"#,
        )
        .await;
    let (status, reply) = chain
        .post(
            StepName::Load,
            r#"{"bucket":"landing","name":"in/d1/missing.csv"}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.rows("ds.once_d1").await, 3);
    assert_eq!(chain.batch_dirs(), 1);
    let started = std::fs::read_to_string(&runs).expect("runs file");
    assert_eq!(started.lines().count(), 1, "{started}");
    let log = chain.run_log().await;
    assert_eq!(
        statuses(&log, "once", "load").len(),
        1,
        "one run-log row per transition"
    );
    assert_eq!(statuses(&log, "once", "submit").len(), 1);
    chain.stop().await;
}

#[tokio::test]
async fn a_new_generation_of_the_same_object_is_a_new_run() {
    let chain = Chain::start(FOUR_FORMATS).await;
    chain.write_file("landing", "sales/d/a.ndjson", "{\"a\":1}\n");
    chain.settle(Duration::from_secs(30)).await;
    // No pause: the new content is a new generation (a file renamed in place, a new inode),
    // whatever the clock's granularity.
    chain.write_file("landing", "sales/d/a.ndjson", "{\"a\":1}\n{\"a\":2}\n");
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(
        chain.rows("analytics.ndjson_d").await,
        3,
        "append of 1 then 2 rows"
    );
    chain.stop().await;
}

#[tokio::test]
async fn bad_rows_fail_the_load_with_their_row_numbers_and_load_nothing() {
    let yaml = r#"
pipelines:
  - name: strict
    trigger: { object: { bucket: landing, pattern: "in/*.csv" } }
    load:
      table: "ds.strict"
      format: CSV
      skip_leading_rows: 1   # the header; declared columns take fields by position
      schema:
        - { name: id, type: INT64, mode: REQUIRED }
        - { name: amount, type: FLOAT64 }
    batch: { engine: local, command: "true" }
"#;
    let chain = Chain::start(yaml).await;
    chain.write_file(
        "landing",
        "in/bad.csv",
        "id,amount\n1,2.5\n2,abc\n,3\n4,1\n",
    );
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.rows("ds.strict").await, 0, "nothing half-loaded");
    let log = chain.run_log().await;
    let failed = log
        .iter()
        .find(|r| r.pipeline.as_deref() == Some("strict") && r.step == "load")
        .expect("load row");
    assert_eq!(failed.status, "FAILED");
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("row 3") || error.contains("2 bad row"),
        "{error}"
    );
    assert!(
        statuses(&log, "strict", "submit").is_empty(),
        "no batch after a failed load"
    );
    assert_eq!(chain.batch_dirs(), 0);
    chain.stop().await;
}

#[tokio::test]
async fn a_malformed_direct_call_gets_400_with_the_reason_and_a_run_log_record() {
    let chain = Chain::start(FOUR_FORMATS).await;
    chain
        .refused(StepName::Load, "{this is not json", "not JSON")
        .await;
    chain
        .refused(
            StepName::Load,
            r#"{"bucket":"landing","name":"../../etc/passwd"}"#,
            "object name",
        )
        .await;
    // Airflow's `conf`: refused, not silently ignored.
    chain
        .refused(
            StepName::Submit,
            r#"{"pipeline":"avro","conf":{"region":"eu"}}"#,
            "`conf` is not supported",
        )
        .await;
    chain.settle(Duration::from_secs(10)).await;
    let log = chain.run_log().await;
    let rejected: Vec<&RunLogRow> = log.iter().filter(|r| r.status == "REJECTED").collect();
    assert_eq!(rejected.len(), 3, "{log:#?}");
    assert!(
        rejected
            .iter()
            .all(|r| matches!(r.step.as_str(), "load" | "submit") && r.error.is_some())
    );
    // The service keeps serving.
    chain
        .accepted(StepName::Submit, r#"{"pipeline":"avro"}"#)
        .await;
    chain.stop().await;
}

#[tokio::test]
async fn a_permanent_error_inside_a_pubsub_push_is_acknowledged_and_recorded() {
    let chain = Chain::start(FOUR_FORMATS).await;
    let data = "eyJwaXBlbGluZSI6Im5vX3N1Y2hfcGlwZWxpbmUifQ=="; // {"pipeline":"no_such_pipeline"}
    let envelope = format!(
        r#"{{"subscription":"projects\/test\/subscriptions\/s","message":{{"data":"{data}","messageId":"7","message_id":"7"}}}}"#
    );
    let (status, reply) = chain
        .post(StepName::Submit, &envelope, "application/json")
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "acknowledged so Pub/Sub does not redeliver forever"
    );
    assert_eq!(reply["status"], "rejected");
    assert!(
        reply["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown pipeline")),
        "{reply}"
    );
    chain
        .accepted(
            StepName::Submit,
            r#"{"subscription":"s","message":{"data":"%%%","messageId":"8"}}"#,
        )
        .await;
    chain.settle(Duration::from_secs(10)).await;
    let log = chain.run_log().await;
    assert_eq!(
        log.iter()
            .filter(|r| r.status == "REJECTED" && r.step == "submit")
            .count(),
        2,
        "{log:#?}"
    );
    chain.stop().await;
}

/// A Conveyor event of the `csv` pipeline, as a step would publish it.
fn csv_event(kind: EventType, step: StepName, key: &str) -> ConveyorEvent {
    let p = PipelineName::parse("csv").expect("pipeline");
    ConveyorEvent::new(
        kind,
        RunId::derive(&p, &[key]),
        Some(p),
        step,
        1,
        Status::Running,
        Detail::default(),
    )
}

/// The CloudEvent binary-mode headers of `event`, with `ty` as its type.
fn binary_headers(ty: &str, id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_owned()),
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", id.to_owned()),
        ("ce-source", "//conveyor/test".to_owned()),
        ("ce-type", ty.to_owned()),
    ]
}

async fn post_with(
    chain: &Chain,
    step: StepName,
    body: &str,
    headers: &[(&'static str, String)],
) -> (StatusCode, serde_json::Value) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    chain.request(step, "POST", "/", body, &headers).await
}

#[tokio::test]
async fn every_function_accepts_a_binary_mode_cloudevent_and_answers_healthz() {
    let chain = Chain::start(FOUR_FORMATS).await;
    chain.write_file("landing", "sales/d2/x.csv", "a\n1\n");
    chain.settle(Duration::from_secs(30)).await;
    let router = conveyor_core::http::router(StepName::Load, chain.ctx.clone());
    let req = Request::post("/")
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", "abc")
        .header(
            "ce-source",
            "//storage.googleapis.com/projects/_/buckets/landing",
        )
        .header("ce-type", "google.cloud.storage.object.v1.finalized")
        .body(Body::from(
            r#"{"bucket":"landing","name":"sales/d2/x.csv","generation":"1"}"#,
        ))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let health = router
        .oneshot(Request::get("/healthz").body(Body::empty()).expect("req"))
        .await
        .expect("resp");
    assert_eq!(health.status(), StatusCode::OK);

    // load: only the `ce-type` header says this object was deleted, not written: the same
    // body without the binary-mode headers is an object arrival.
    let object = r#"{"bucket":"landing","name":"sales/d2/x.csv","generation":"1"}"#;
    let deleted = binary_headers("google.cloud.storage.object.v1.deleted", "del-1");
    let (status, reply) = post_with(&chain, StepName::Load, object, &deleted).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        reply["summary"], "google.cloud.storage.object.v1.deleted needs no work",
        "{reply}"
    );
    let plain = [("content-type", "application/json".to_owned())];
    let (_, reply) = post_with(&chain, StepName::Load, object, &plain).await;
    assert_ne!(
        reply["summary"], "google.cloud.storage.object.v1.deleted needs no work",
        "{reply}"
    );

    // submit, poll and log: a binary-mode Conveyor event is read with its `ce-type`; one whose
    // attribute contradicts its data is refused (as plain JSON the body alone would pass).
    let loaded = csv_event(EventType::TableLoaded, StepName::Load, "bin-1");
    let body = serde_json::to_string(&loaded).expect("json");
    for step in [StepName::Submit, StepName::Poll, StepName::Log] {
        let right = binary_headers("dev.conveyor.table.loaded", &loaded.id());
        let (status, reply) = post_with(&chain, step, &body, &right).await;
        assert_eq!(status, StatusCode::OK, "{step}: {reply}");
        let wrong = binary_headers("dev.conveyor.run.finished", &loaded.id());
        let (status, reply) = post_with(&chain, step, &body, &wrong).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{step}: {reply}");
        assert!(
            reply["reason"]
                .as_str()
                .is_some_and(|r| r.contains("data says type dev.conveyor.table.loaded")),
            "{step}: {reply}"
        );
    }
    // poll does not consume table.loaded: acknowledged, not rejected.
    let right = binary_headers("dev.conveyor.table.loaded", &loaded.id());
    let (_, reply) = post_with(&chain, StepName::Poll, &body, &right).await;
    assert_eq!(
        reply["summary"], "dev.conveyor.table.loaded is not for the poll function; ignored",
        "{reply}"
    );
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    assert_eq!(
        log.iter().filter(|r| r.event_id == loaded.id()).count(),
        1,
        "the log function recorded the binary-mode event once: {log:#?}"
    );
    chain.stop().await;
}

#[tokio::test]
async fn the_log_function_records_structured_mode_legacy_and_message_published_events() {
    let chain = Chain::start(FOUR_FORMATS).await;
    let recorded = |log: &[RunLogRow], id: &str| log.iter().filter(|r| r.event_id == id).count();

    // Structured mode: the whole CloudEvent is the body.
    let running = csv_event(EventType::BatchRunning, StepName::Poll, "structured");
    let structured = serde_json::to_string(&running.to_cloudevent()).expect("json");
    let headers = [(
        "content-type",
        "application/cloudevents+json; charset=utf-8".to_owned(),
    )];
    let (status, reply) = post_with(&chain, StepName::Log, &structured, &headers).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // A previous release's event: the legacy type, in the attribute and in the data.
    let legacy = csv_event(EventType::BatchSubmitted, StepName::Submit, "legacy");
    let mut data = serde_json::to_value(&legacy).expect("json");
    data["type"] = "conveyor.batch.submitted".into();
    let headers = binary_headers("conveyor.batch.submitted", &legacy.id());
    let (status, reply) = post_with(&chain, StepName::Log, &data.to_string(), &headers).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // Eventarc's Pub/Sub event: `messagePublished` wrapping the message with its attributes.
    let finished = csv_event(EventType::BatchFinished, StepName::Poll, "eventarc");
    let message = serde_json::json!({
        "message": {
            "data": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                serde_json::to_vec(&finished).expect("json"),
            ),
            "attributes": finished.pubsub_attributes(),
            "messageId": "1",
        },
        "subscription": "projects/test/subscriptions/conveyor-log",
    });
    let headers = binary_headers("google.cloud.pubsub.topic.v1.messagePublished", "m-1");
    let (status, reply) = post_with(&chain, StepName::Log, &message.to_string(), &headers).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    assert_eq!(recorded(&log, &running.id()), 1, "structured: {log:#?}");
    assert_eq!(recorded(&log, &legacy.id()), 1, "legacy: {log:#?}");
    assert_eq!(
        recorded(&log, &finished.id()),
        1,
        "messagePublished: {log:#?}"
    );
    let row = log
        .iter()
        .find(|r| r.event_id == legacy.id())
        .expect("the legacy event's row");
    assert_eq!(row.status, "RUNNING");
    assert_eq!(row.step, "submit");
    chain.stop().await;
}

#[tokio::test]
async fn the_same_router_answers_a_recorded_lambda_function_url_event() {
    let chain = Chain::start(FOUR_FORMATS).await;
    let event = include_str!("fixtures/lambda-function-url.json");
    let req = lambda_http::request::from_str(event).expect("a Function URL event");
    let req = req.map(|body| Body::from(body.to_vec()));
    let resp = conveyor_core::http::router(StepName::Submit, chain.ctx.clone())
        .oneshot(req)
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let reply: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("submitted cv-batch-avro-")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.batch_dirs(), 1);
    chain.stop().await;
}

/// Serves `body` at `/exports/orders.csv` on a local port, with an ETag.
async fn serve_csv(body: Vec<u8>) -> String {
    let app = axum::Router::new().route(
        "/exports/orders.csv",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("etag", "\"orders-v1\"")], body) }
        }),
    );
    let url = conveyor_e2e::serve(app).await;
    format!("{url}/exports/orders.csv")
}

#[tokio::test]
async fn a_url_is_staged_into_the_local_bucket_once_and_the_chain_loads_it() {
    let url = serve_csv(std::fs::read(example("orders.csv")).expect("example")).await;
    let chain = Chain::start(&web_sales(&url)).await;
    let body = r#"{"pipeline": "web_sales"}"#;
    let reply = chain.accepted(StepName::Stage, body).await;
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("staged 1 object(s)")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(30)).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        chain
            .rows(&format!("analytics.web_{}", today.replace('-', "_")))
            .await,
        input_rows("orders.csv")
    );
    let log = chain.run_log().await;
    assert_eq!(
        statuses(&log, "web_sales", "stage"),
        vec![(1, "SUCCEEDED".to_owned())]
    );
    assert_eq!(
        statuses(&log, "web_sales", "load"),
        vec![(1, "SUCCEEDED".to_owned())]
    );
    assert!(
        chain
            .bucket("landing")
            .join(format!("sales/{today}/orders.csv"))
            .exists()
    );

    // The same URL, unchanged: nothing is copied again and nothing is loaded twice.
    let reply = chain.accepted(StepName::Stage, body).await;
    assert!(
        reply["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("staged 0 object(s)") && s.contains("1 unchanged")),
        "{reply}"
    );
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(
        statuses(&chain.run_log().await, "web_sales", "load").len(),
        1
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_pipeline_with_manual_false_refuses_a_manual_start_and_starts_nothing() {
    let chain = Chain::start(
        r#"
pipelines:
  - name: scheduled_only
    trigger: { schedule: { cron: "0 2 * * *" }, manual: false }
    batch: { engine: local, command: "true" }
  - name: by_hand
    trigger: { manual: true }
    batch: { engine: local, command: "true" }
"#,
    )
    .await;
    chain
        .refused(
            StepName::Submit,
            r#"{"pipeline":"scheduled_only"}"#,
            "does not allow manual starts",
        )
        .await;
    chain.settle(Duration::from_secs(10)).await;
    assert_eq!(chain.batch_dirs(), 0, "nothing started");
    let log = chain.run_log().await;
    assert!(
        log.iter().any(|r| r.status == "REJECTED"
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("does not allow manual starts"))),
        "the refusal is recorded: {log:#?}"
    );
    assert!(
        log.iter()
            .filter(|r| r.pipeline.as_deref() == Some("scheduled_only"))
            .all(|r| r.status == "REJECTED"),
        "{log:#?}"
    );
    // The same call for a pipeline that allows it starts a run.
    chain
        .accepted(StepName::Submit, r#"{"pipeline":"by_hand"}"#)
        .await;
    chain.settle(Duration::from_secs(20)).await;
    assert_eq!(chain.batch_dirs(), 1, "the manual pipeline ran");
    chain.stop().await;
}

fn web_sales(url: &str) -> String {
    format!(
        r#"
pipelines:
  - name: web_sales
    trigger:
      object: {{ bucket: landing, pattern: "sales/{{date}}/*.csv" }}
      manual: true
    stage:
      source: {{ https: {{ urls: ["{url}"] }} }}
      bucket: landing
      prefix: "sales/{{date}}/"
    load: {{ table: "analytics.web_{{date}}", format: CSV, skip_leading_rows: 1 }}
"#
    )
}

/// How many times the chain published `kind` for `pipeline`.
fn published(events: &[ConveyorEvent], pipeline: &str, kind: EventType) -> usize {
    events
        .iter()
        .filter(|e| e.kind == kind && e.pipeline.as_ref().is_some_and(|p| p.as_str() == pipeline))
        .count()
}

/// How many times the chain published `kind`, for any pipeline.
fn published_anywhere(events: &[ConveyorEvent], kind: EventType) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

#[tokio::test]
async fn a_staged_object_reaches_load_once_by_its_arrival_not_also_by_its_staged_event() {
    let url = serve_csv(std::fs::read(example("orders.csv")).expect("example")).await;
    let chain = Chain::start(&web_sales(&url)).await;
    chain
        .accepted(StepName::Stage, r#"{"pipeline": "web_sales"}"#)
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let events = chain.dispatched();
    assert_eq!(published(&events, "web_sales", EventType::ObjectStaged), 1);
    assert_eq!(
        published(&events, "web_sales", EventType::TableLoaded),
        1,
        "the load step ran once for the object: {:#?}",
        events.iter().map(|e| e.kind).collect::<Vec<_>>()
    );
    let today = chrono::Utc::now().format("%Y_%m_%d").to_string();
    assert_eq!(
        chain.rows(&format!("analytics.web_{today}")).await,
        input_rows("orders.csv")
    );
    chain.stop().await;
}

#[tokio::test]
async fn without_a_bucket_watcher_the_staged_event_stands_in_for_the_arrival() {
    let url = serve_csv(std::fs::read(example("orders.csv")).expect("example")).await;
    let chain = Chain::start_unwatched(&web_sales(&url)).await;
    chain
        .accepted(StepName::Stage, r#"{"pipeline": "web_sales"}"#)
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let events = chain.dispatched();
    assert_eq!(published(&events, "web_sales", EventType::TableLoaded), 1);
    let today = chrono::Utc::now().format("%Y_%m_%d").to_string();
    assert_eq!(
        chain.rows(&format!("analytics.web_{today}")).await,
        input_rows("orders.csv")
    );
    chain.stop().await;
}

/// A batch engine whose every state read takes `DELAY` (a slow engine API).
struct SlowEngine;

const SLOW_READ: Duration = Duration::from_millis(300);

#[async_trait::async_trait]
impl conveyor_core::ports::BatchEngine for SlowEngine {
    async fn submit(
        &self,
        req: &conveyor_core::ports::BatchRequest,
    ) -> Result<conveyor_core::ports::Submitted, conveyor_core::ports::PortError> {
        Ok(conveyor_core::ports::Submitted {
            job_id: req.job_id.clone(),
            adopted: false,
        })
    }
    async fn state(
        &self,
        _: &conveyor_core::config::BatchSpec,
        _: &conveyor_core::names::JobId,
    ) -> Result<conveyor_core::ports::JobState, conveyor_core::ports::PortError> {
        tokio::time::sleep(SLOW_READ).await;
        Ok(conveyor_core::ports::JobState {
            log: None,
            state: "RUNNING".to_owned(),
            terminal: false,
            error: None,
        })
    }
    async fn cancel(
        &self,
        _: &conveyor_core::config::BatchSpec,
        _: &conveyor_core::names::JobId,
    ) -> Result<(), conveyor_core::ports::PortError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_poll_tick_ends_within_its_budget_and_leaves_the_rest_to_the_next_tick() {
    const JOBS: usize = 12;
    let engines =
        conveyor_core::engines::Engines::new().with_local(std::sync::Arc::new(SlowEngine));
    let mut chain = Chain::start_with(
        r#"
pipelines:
  - name: slow
    trigger: { manual: true }
    batch: { engine: local, command: "true" }
    poll: { timeout: 1h }
"#,
        Some(engines),
    )
    .await;
    for i in 0..JOBS {
        let (status, reply) = chain
            .post(
                StepName::Submit,
                &format!(r#"{{"pipeline":"slow","key":"k{i}"}}"#),
                "application/json",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while statuses(&chain.run_log().await, "slow", "submit").len() < JOBS {
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs were not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let budget = Duration::from_millis(700);
    chain.ctx.options.tick_budget = budget;
    let began = std::time::Instant::now();
    let (status, reply) = chain
        .post(StepName::Poll, r#"{"tick":true}"#, "application/json")
        .await;
    let took = began.elapsed();
    assert_eq!(status, StatusCode::OK, "{reply}");
    // Checking all of them one after another takes JOBS × SLOW_READ = 3.6 s.
    assert!(
        took < Duration::from_millis(2500),
        "the tick took {took:?} with a budget of {budget:?}"
    );
    let summary = reply["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("left for the next tick"), "{reply}");
    chain.stop().await;
}

/// Issue 26 items 1–3 on the chain: pipe-delimited, gzip-compressed CSV with a NULL marker,
/// each folder truncating only its own day's partition.
#[tokio::test]
async fn gzip_csv_with_its_own_delimiter_truncates_only_its_days_partition() {
    let yaml = r#"
pipelines:
  - name: parts
    trigger: { object: { bucket: landing, pattern: "parts/{date}/*.csv.gz" } }
    load:
      table: "ds.parts"
      format: CSV
      write_disposition: WRITE_TRUNCATE
      partition: { field: day, decorator: "{date_nodash}" }
      csv: { field_delimiter: "|", null_marker: "\\N", skip_leading_rows: 1 }
      schema:
        - { name: id, type: INT64 }
        - { name: day, type: DATE }
        - { name: note, type: INT64 }
"#;
    let chain = Chain::start(yaml).await;
    let drop_gz = |object: &str, text: &str| {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("gzip");
        let src = std::env::temp_dir().join(format!(
            "conveyor-gz-{}-{}",
            std::process::id(),
            object.replace('/', "_")
        ));
        std::fs::write(&src, gz.finish().expect("gzip")).expect("write");
        chain.drop_file("landing", object, &src);
        std::fs::remove_file(&src).expect("remove");
    };
    for (object, csv, rows) in [
        (
            "parts/2026-11-20/a.csv.gz",
            "id|day|note\n1|2026-11-20|\\N\n2|2026-11-20|7\n",
            2,
        ),
        (
            "parts/2026-11-21/a.csv.gz",
            "id|day|note\n3|2026-11-21|\\N\n",
            3,
        ),
        // The 20th again: its partition is replaced, the 21st's row stays.
        (
            "parts/2026-11-20/b.csv.gz",
            "id|day|note\n4|2026-11-20|\\N\n",
            2,
        ),
    ] {
        drop_gz(object, csv);
        chain.settle(Duration::from_secs(30)).await;
        assert_eq!(
            chain.rows("ds.parts").await,
            rows,
            "after {object}: {:?}",
            chain.run_log().await
        );
    }
    chain.stop().await;
}

/// Issue 26 item 8: a `sql` job written for BigQuery (MOD, SAFE_CAST, IFNULL, FORMAT_DATE,
/// DATE_SUB … INTERVAL, CURRENT_DATE(), INSERT without INTO) runs unchanged on the chain.
#[tokio::test]
async fn a_googlesql_job_runs_unchanged_on_the_embedded_warehouse() {
    let yaml = r#"
pipelines:
  - name: fn
    trigger: { object: { bucket: landing, pattern: "fn/{date}/*.csv" } }
    load: { table: "staging.fn_{date}", format: CSV }
    jobs:
      - name: shape
        engine: sql
        query: "SELECT id, MOD(id, 2) AS odd, SAFE_CAST(v AS INT64) AS v_int, FORMAT_DATE('%Y%m%d', DATE_SUB(d, INTERVAL 1 DAY)) AS prev FROM staging.fn_{date} WHERE IFNULL(SAFE_CAST(v AS INT64), -1) >= 0"
        destination: "analytics.fn_{date}"
        write_disposition: WRITE_TRUNCATE
      - name: stamp
        engine: sql
        query: "INSERT analytics.fn_{date} SELECT 100, MOD(100, 7), 0, FORMAT_DATE('%Y', CURRENT_DATE())"
"#;
    let chain = Chain::start(yaml).await;
    chain.write_file(
        "landing",
        "fn/2026-11-20/a.csv",
        "id,v,d\n1,5,2026-11-20\n2,x,2026-11-20\n3,7,2026-03-01\n",
    );
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    assert_eq!(chain.rows("staging.fn_2026_11_20").await, 3, "{log:#?}");
    assert_eq!(chain.rows("analytics.fn_2026_11_20").await, 3, "{log:#?}");
    let rows = chain
        .ctx
        .ports
        .warehouse
        .read_table(
            &TableRef::parse("analytics.fn_2026_11_20").expect("table"),
            10,
        )
        .await
        .expect("read");
    let prev: Vec<String> = rows.iter().filter_map(|r| r.get("prev").cloned()).collect();
    assert!(prev.contains(&"20261119".to_owned()), "{rows:?}");
    assert!(prev.contains(&"20260228".to_owned()), "{rows:?}");
    chain.stop().await;
}

/// Issue 26 item 5 (in part): a `_SUCCESS` one folder above the parts (Spark's partitioned
/// output) loads every part below it in one job; parts wait until it arrives.
#[tokio::test]
async fn a_marker_covering_subfolders_loads_the_parts_below_it() {
    let yaml = r#"
pipelines:
  - name: spark_out
    trigger: { object: { bucket: landing, pattern: "out/{date}/{region}/*.csv" } }
    load:
      table: "ds.out_{date}"
      format: CSV
      skip_leading_rows: 1
      batch: { marker: { name: _SUCCESS, covers: subfolders } }
"#;
    let chain = Chain::start(yaml).await;
    chain.write_file("landing", "out/2026-11-20/eu/part-0.csv", "n\n1\n2\n");
    chain.write_file("landing", "out/2026-11-20/us/part-0.csv", "n\n3\n");
    chain.write_file("landing", "out/2026-11-21/us/part-0.csv", "n\n9\n");
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.rows("ds.out_2026_11_20").await, 0, "the parts wait");
    chain.write_file("landing", "out/2026-11-20/_SUCCESS", "");
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(
        chain.rows("ds.out_2026_11_20").await,
        3,
        "{:#?}",
        chain.run_log().await
    );
    let loads: Vec<RunLogRow> = chain
        .run_log()
        .await
        .into_iter()
        .filter(|r| r.step == "load" && r.status == "SUCCEEDED")
        .collect();
    assert_eq!(loads.len(), 1, "one job for the folder: {loads:#?}");
    assert_eq!(
        chain.rows("ds.out_2026_11_21").await,
        0,
        "not under that marker"
    );
    chain.stop().await;
}

/// The source objects of a pipeline's SUCCEEDED load rows, in the order they loaded.
fn loaded_in_order(log: &[RunLogRow], pipeline: &str) -> Vec<String> {
    let mut rows: Vec<&RunLogRow> = log
        .iter()
        .filter(|r| {
            r.pipeline.as_deref() == Some(pipeline) && r.step != "submit" && r.status == "SUCCEEDED"
        })
        .collect();
    rows.sort_by_key(|r| r.td_timestamp);
    rows.iter()
        .filter_map(|r| r.source_object.clone())
        .map(|o| o.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn ordered_incrementals_wait_for_the_history_marker_then_load_in_name_order_once() {
    let yaml = r#"
pipelines:
  - name: incr
    trigger: { object: { bucket: landing, pattern: "ds/t/incr/{file}.csv" } }
    load:
      table: ds.t
      format: CSV
      write_disposition: WRITE_TRUNCATE
      schema: [ { name: v, type: STRING } ]
      order: by_name
      start_after: { marker: _HISTORYDONE }
"#;
    let chain = Chain::start(yaml).await;
    // Arrivals out of name order; a load of each as it came would leave "b" in the table.
    for name in ["c", "a", "b"] {
        chain.write_file(
            "landing",
            &format!("ds/t/incr/{name}.csv"),
            &format!("{name}\n"),
        );
        chain.settle(Duration::from_secs(30)).await;
    }
    assert_eq!(
        chain.rows("ds.t").await,
        0,
        "nothing loads before the marker"
    );
    chain.write_file("landing", "ds/t/_HISTORYDONE", "");
    let loaded = std::cell::Cell::new(0);
    let all_loaded = || {
        let now = published_anywhere(&chain.dispatched(), EventType::TableLoaded);
        loaded.set(loaded.get() + now);
        loaded.get() >= 3
    };
    chain
        .settle_when(Duration::from_secs(30), all_loaded, String::new)
        .await;
    let log = chain.run_log().await;
    assert_eq!(
        loaded_in_order(&log, "incr"),
        ["a.csv", "b.csv", "c.csv"],
        "{log:#?}"
    );
    let table = TableRef::parse("ds.t").expect("table");
    let values = || async {
        let rows = chain
            .ctx
            .ports
            .warehouse
            .read_table(&table, 10)
            .await
            .expect("read");
        rows.iter()
            .map(|r| r.get("v").cloned().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(values().await, ["c"], "the last name loaded last");
    // A redelivered arrival of the first file adopts its job: nothing loads again (a reload
    // would truncate the table back to "a").
    let body = chain.notification("landing", "ds/t/incr/a.csv").await;
    chain.accepted(StepName::Load, &body).await;
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(values().await, ["c"], "{:#?}", chain.run_log().await);
    assert_eq!(
        loaded_in_order(&chain.run_log().await, "incr").len(),
        3,
        "one SUCCEEDED row per load"
    );
    chain.stop().await;
}

#[tokio::test]
async fn loaded_sources_are_moved_or_deleted_once_after_done_even_when_done_is_seen_again() {
    let yaml = r#"
pipelines:
  - name: mv
    trigger: { object: { bucket: landing, pattern: "in/{day}/*.csv" } }
    load:
      table: "ds.mv_{day}"
      format: CSV
      schema: [ { name: v, type: STRING } ]
      check_generation: false
      on_success: { move_to: "done/{path}" }
  - name: rm
    trigger: { object: { bucket: landing, pattern: "rm/{day}/*.csv" } }
    load:
      table: "ds.rm_{day}"
      format: CSV
      schema: [ { name: v, type: STRING } ]
      check_generation: false
      on_success: { delete_source: true }
"#;
    let chain = Chain::start(yaml).await;
    chain.write_file("landing", "in/d1/a.csv", "x\ny\n");
    chain.write_file("landing", "rm/d1/b.csv", "z\n");
    let bucket = chain.bucket("landing");
    // `table.loaded` is published after the actions.
    let loaded = std::cell::Cell::new(0);
    let both_loaded = || {
        let now = published_anywhere(&chain.dispatched(), EventType::TableLoaded);
        loaded.set(loaded.get() + now);
        loaded.get() >= 2
    };
    chain
        .settle_when(Duration::from_secs(30), both_loaded, String::new)
        .await;
    assert_eq!(
        chain.rows("ds.mv_d1").await,
        2,
        "{:#?}",
        chain.run_log().await
    );
    assert_eq!(chain.rows("ds.rm_d1").await, 1);
    assert!(!bucket.join("in/d1/a.csv").exists(), "moved away");
    assert_eq!(
        std::fs::read_to_string(bucket.join("done/in/d1/a.csv")).expect("moved"),
        "x\ny\n"
    );
    assert!(!bucket.join("rm/d1/b.csv").exists(), "deleted");
    // The same arrivals again, generation named (`check_generation: false` trusts it): the
    // load adopts its DONE job and the actions find their sources gone — nothing fails,
    // nothing loads or moves twice.
    let log = chain.run_log().await;
    let generation = |file: &str| {
        log.iter()
            .find(|r| {
                r.source_object
                    .as_deref()
                    .is_some_and(|o| o.ends_with(file))
            })
            .and_then(|r| serde_json::from_str::<Detail>(&r.detail).ok())
            .and_then(|d| d.object)
            .map(|o| o.generation)
            .expect("the load's object")
    };
    for (name, file) in [("in/d1/a.csv", "a.csv"), ("rm/d1/b.csv", "b.csv")] {
        let g = generation(file);
        let body =
            serde_json::json!({"bucket": "landing", "name": name, "generation": g}).to_string();
        chain.accepted(StepName::Load, &body).await;
    }
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.rows("ds.mv_d1").await, 2);
    assert_eq!(chain.rows("ds.rm_d1").await, 1);
    let log = chain.run_log().await;
    assert!(
        log.iter()
            .all(|r| r.status != "FAILED" && !r.detail.contains("on_success_error")),
        "{log:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(bucket.join("done/in/d1/a.csv")).expect("moved"),
        "x\ny\n"
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_batchs_bad_file_is_quarantined_with_its_reason_and_the_good_files_load_once() {
    let yaml = r#"
pipelines:
  - name: parts
    trigger: { object: { bucket: landing, pattern: "in/{day}/*.csv" } }
    load:
      table: "ds.parts_{day}"
      format: CSV
      write_disposition: WRITE_TRUNCATE
      schema: [ { name: n, type: INTEGER } ]
      batch: { marker: _SUCCESS, bad_files: quarantine }
"#;
    let chain = Chain::start(yaml).await;
    chain.write_file("landing", "in/d1/a.csv", "1\n2\n");
    chain.write_file("landing", "in/d1/b.csv", "3\nthree\n");
    chain.write_file("landing", "in/d1/c.csv", "4\n");
    chain.settle(Duration::from_secs(30)).await;
    chain.write_file("landing", "in/d1/_SUCCESS", "");
    let loaded = std::cell::Cell::new(0);
    let done = || {
        let now = chain
            .dispatched()
            .iter()
            .filter(|e| matches!(e.kind, EventType::TableLoaded | EventType::StepFailed))
            .count();
        loaded.set(loaded.get() + now);
        loaded.get() >= 1
    };
    chain
        .settle_when(Duration::from_secs(30), done, String::new)
        .await;
    let log = chain.run_log().await;
    assert_eq!(chain.rows("ds.parts_d1").await, 3, "a and c: {log:#?}");
    let bucket = chain.bucket("landing");
    assert!(!bucket.join("in/d1/b.csv").exists());
    assert_eq!(
        std::fs::read_to_string(bucket.join("_quarantine/in/d1/b.csv")).expect("quarantined"),
        "3\nthree\n"
    );
    let row = log
        .iter()
        .find(|r| r.step == "load" && r.status == "SUCCEEDED")
        .expect("the load succeeded");
    let detail: Detail = serde_json::from_str(&row.detail).expect("detail");
    assert_eq!(detail.vars["quarantined_files"], "1");
    let why = &detail.vars["quarantined"];
    assert!(
        why.contains("gs://landing/in/d1/b.csv") && why.contains("three"),
        "{why}"
    );
    assert!(!why.contains("a.csv") && !why.contains("c.csv"), "{why}");
    // The marker again: its run adopts its jobs, nothing loads twice.
    chain.write_file("landing", "in/d1/_SUCCESS", "");
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(chain.rows("ds.parts_d1").await, 3);
    chain.stop().await;
}

/// Issue 26 item 9: a later NDJSON file of a marker batch with a key the first lacks adds its
/// column (the first file's rows NULL there), into a new table and into an existing one;
/// the run records the added keys.
#[tokio::test]
async fn a_later_ndjson_file_of_a_batch_adds_its_new_fields_as_nullable_columns() {
    let yaml = r#"
pipelines:
  - name: events
    trigger: { object: { bucket: landing, pattern: "ev/{day}/*.json" } }
    load:
      table: "ds.events"
      format: NDJSON
      batch: { marker: _SUCCESS }
"#;
    let chain = Chain::start(yaml).await;
    chain.write_file("landing", "ev/d1/a.json", "{\"id\":1}\n{\"id\":2}\n");
    chain.write_file("landing", "ev/d1/b.json", "{\"id\":3,\"country\":\"fr\"}\n");
    chain.settle(Duration::from_secs(30)).await;
    chain.write_file("landing", "ev/d1/_SUCCESS", "");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    assert_eq!(chain.rows("ds.events").await, 3, "{log:#?}");
    let row = log
        .iter()
        .find(|r| r.step == "load" && r.status == "SUCCEEDED")
        .expect("the load succeeded");
    let detail: Detail = serde_json::from_str(&row.detail).expect("detail");
    assert_eq!(detail.vars["schema_added"], "country");
    // The next folder's second file adds another field to the existing table.
    chain.write_file("landing", "ev/d2/a.json", "{\"id\":4,\"country\":\"de\"}\n");
    chain.write_file("landing", "ev/d2/b.json", "{\"id\":5,\"score\":2.5}\n");
    chain.settle(Duration::from_secs(30)).await;
    chain.write_file("landing", "ev/d2/_SUCCESS", "");
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    assert_eq!(chain.rows("ds.events").await, 5, "{log:#?}");
    let rows = chain
        .ctx
        .ports
        .warehouse
        .read_table(&TableRef::parse("ds.events").expect("table"), 10)
        .await
        .expect("read");
    let by_id = |id: &str| {
        rows.iter()
            .find(|r| r.get("id").map(String::as_str) == Some(id))
            .unwrap_or_else(|| panic!("row {id} in {rows:?}"))
    };
    for id in ["1", "2"] {
        assert!(by_id(id).get("country").is_none(), "{rows:?}");
    }
    assert_eq!(by_id("3")["country"], "fr", "{rows:?}");
    assert_eq!(by_id("4")["country"], "de", "{rows:?}");
    assert_eq!(by_id("5")["score"], "2.5", "{rows:?}");
    for id in ["1", "2", "3", "4"] {
        assert!(by_id(id).get("score").is_none(), "{rows:?}");
    }
    chain.stop().await;
}
