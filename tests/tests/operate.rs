//! Operating Conveyor: `conveyor status` against bqemulator, `trigger` and `backfill` on the
//! embedded runtime, `replay` of a dead-lettered message on the Pub/Sub emulator, and traced
//! request logs of a function binary. The CLI and the functions run as real processes.
//!
//! The emulator tests skip loudly where an emulator cannot be had; under `CI=true` they fail.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use conveyor_core::names::TableRef;
use conveyor_core::ports::{RunLog, RunLogRow};
use conveyor_e2e::fake_engines::Fake;
use conveyor_e2e::{Emulators, binary, free_port, lines};
use serde_json::{Value, json};
use tokio::process::Command;

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `conveyor ARGS` in `cwd`, with only the given `CONVEYOR_*` variables.
pub(crate) async fn conveyor(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary("conveyor"));
    cmd.current_dir(cwd).args(args).env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("CONVEYOR_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run conveyor")
}

// ---------------------------------------------------------------------------------------
// conveyor status against bqemulator

fn row(run: &str, pipeline: &str, step: &str, status: &str, secs: i64) -> RunLogRow {
    let t = chrono::Utc::now() - chrono::Duration::minutes(10) + chrono::Duration::seconds(secs);
    RunLogRow {
        td_timestamp: t,
        last_modified_at: t,
        environment: "prod".into(),
        status: status.into(),
        event_id: format!("{run}-{step}-{status}"),
        run_id: run.into(),
        pipeline: Some(pipeline.into()),
        step: step.into(),
        attempt: 1,
        started_at: Some(t),
        detail: "{}".into(),
        ..RunLogRow::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_production_run_log_in_bigquery_one_row_per_run_without_a_pipeline_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start-bigquery"],
        "the status test against bqemulator",
    ) else {
        return;
    };
    let http = reqwest::Client::new();
    emu.dataset("conveyor").await;

    // What the log function writes in production, through the same adapter.
    let bq = conveyor_gcp::BigQuery::new(
        "test",
        None,
        Some(&format!("{}/bigquery/v2", emu.wire.bq)),
        &conveyor_gcp::GcpAuth::Anonymous,
    );
    let table = TableRef::parse("conveyor.run_log").expect("table");
    let mut load = row("sales-aaa", "sales", "load", "SUCCEEDED", 0);
    load.db_name = Some("analytics".into());
    load.table_name = Some("sales_2026_11_20".into());
    load.rows_loaded = Some(6);
    load.source_object = Some("gs://landing/sales/2026-11-20/orders.csv".into());
    let mut submitted = row("sales-aaa", "sales", "submit", "SUBMITTED", 2);
    submitted.dataproc_job_id = Some("cv-batch-sales-aaa-a1".into());
    let mut done = row("sales-aaa", "sales", "poll", "SUCCEEDED", 65);
    done.dataproc_job_id = Some("cv-batch-sales-aaa-a1".into());
    let mut failed = row("nightly-bbb", "nightly", "poll", "FAILED", 120);
    failed.dataproc_job_id = Some("cv-batch-nightly-bbb-a1".into());
    failed.error = Some("Dataproc batch FAILED: Job aborted due to stage failure".into());
    for r in [&load, &submitted, &done, &failed, &done] {
        // `done` twice: insertAll does not de-duplicate on the emulator; reads must.
        bq.record(&table, r).await.expect("record");
    }

    let cwd = dir.path().join("somewhere");
    std::fs::create_dir_all(&cwd).expect("cwd");
    let endpoint = format!("{}/bigquery/v2", emu.wire.bq);
    let env = [
        ("CONVEYOR_PROJECT", "test"),
        ("CONVEYOR_BIGQUERY_ENDPOINT", endpoint.as_str()),
        ("CONVEYOR_ANONYMOUS", "true"),
    ];

    let out = conveyor(&cwd, &["status"], &env).await;
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("sales-aaa") && shown.contains("nightly-bbb"),
        "{shown}"
    );
    assert!(
        shown.contains("Job aborted due to stage failure"),
        "{shown}"
    );
    assert_eq!(
        shown.matches("sales-aaa").count(),
        1,
        "one row per run: {shown}"
    );
    assert!(shown.contains("1m 05s"), "the run's duration: {shown}");

    let out = conveyor(&cwd, &["status", "--json"], &env).await;
    let runs: Value = serde_json::from_slice(&out.stdout).expect("json");
    let runs = runs.as_array().expect("array");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let sales = runs
        .iter()
        .find(|r| r["run_id"] == "sales-aaa")
        .expect("sales");
    assert_eq!(sales["status"], "SUCCEEDED");
    assert_eq!(sales["rows_loaded"], 6);
    assert_eq!(sales["tables"][0], "analytics.sales_2026_11_20");
    let nightly = runs
        .iter()
        .find(|r| r["run_id"] == "nightly-bbb")
        .expect("nightly");
    assert_eq!(nightly["status"], "FAILED");

    let out = conveyor(&cwd, &["status", "--run", "sales-aaa", "--json"], &env).await;
    let one: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(one["events"].as_array().map(Vec::len), Some(3), "{one}");

    let out = conveyor(&cwd, &["status", "--pipeline", "nightly", "--events"], &env).await;
    let shown = text(&out);
    assert!(
        shown.contains("nightly-bbb") && !shown.contains("sales-aaa"),
        "{shown}"
    );

    let out = conveyor(&cwd, &["status", "--run", "no-such-run"], &env).await;
    assert_eq!(out.status.code(), Some(1), "an unknown run is an error");
    let said = text(&out);
    assert!(
        said.contains("no run \"no-such-run\" in the run log conveyor.run_log")
            && !said.contains("is empty"),
        "{said}"
    );

    // The console service, as deployed (without a pipeline file), reads the same run log.
    let (mut console, port) = conveyor_e2e::start_listening("conveyor-console", |port| {
        Command::new(binary("conveyor-console"))
            .env("PORT", port.to_string())
            .env("CONVEYOR_PROJECT", "test")
            .env("CONVEYOR_BIGQUERY_ENDPOINT", &endpoint)
            .env("CONVEYOR_ANONYMOUS", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("conveyor-console")
    })
    .await;
    let url = format!("http://127.0.0.1:{port}");
    let home = http.get(format!("{url}/")).send().await.expect("home");
    assert!(home.status().is_success());
    let home = home.text().await.expect("html");
    assert!(home.contains("sales-aaa") && home.contains(r#"data-pipeline="nightly""#));
    let run = http
        .get(format!("{url}/runs/nightly-bbb"))
        .send()
        .await
        .expect("run")
        .text()
        .await
        .expect("html");
    assert!(run.contains("Job aborted due to stage failure") && run.contains("timeline"));
    let missing = http
        .get(format!("{url}/runs/nope"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status().as_u16(), 404);
    let _ = console.kill().await;
}

// ---------------------------------------------------------------------------------------
// trigger and backfill, embedded

const OPERATE_YAML: &str = r#"
environment: test
pipelines:
  - name: nightly
    trigger: { manual: true }
    batch:
      engine: local
      command: "echo {date} >> nightly.out"
  - name: sales
    trigger:
      object: { bucket: landing, pattern: "sales/{date}/*.csv" }
    load:
      table: "analytics.sales_{date}"
      format: CSV
      skip_leading_rows: 1
      schema:
        - { name: id, type: INT64 }
        - { name: amount, type: FLOAT64 }
    batch:
      engine: local
      command: "echo {date} >> sales.out"
"#;

async fn runs(cwd: &Path, pipeline: &str) -> Vec<Value> {
    let out = conveyor(
        cwd,
        &["status", "--pipeline", pipeline, "--json", "-n", "100"],
        &[],
    )
    .await;
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_over_three_dates_runs_three_runs_once_each_even_when_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    for (i, d) in ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
        .iter()
        .enumerate()
    {
        let folder = cwd.join(format!(".conveyor/buckets/landing/sales/{d}"));
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(
            folder.join("orders.csv"),
            format!("id,amount\n{i},1.5\n{i},2\n"),
        )
        .expect("object");
    }

    for round in 1..=2 {
        for pipeline in ["nightly", "sales"] {
            let out = conveyor(
                cwd,
                &[
                    "backfill",
                    pipeline,
                    "--from",
                    "2026-11-01",
                    "--to",
                    "2026-11-03",
                ],
                &[],
            )
            .await;
            assert!(
                out.status.success(),
                "round {round}, {pipeline}: {}",
                text(&out)
            );
        }
        let mut nightly = lines(&cwd.join("nightly.out"));
        nightly.sort(); // the dates' batches run side by side
        assert_eq!(
            nightly,
            ["2026-11-01", "2026-11-02", "2026-11-03"],
            "round {round}: one batch per date, never twice"
        );
        let mut sales = lines(&cwd.join("sales.out"));
        sales.sort();
        assert_eq!(
            sales,
            ["2026-11-01", "2026-11-02", "2026-11-03"],
            "round {round}: the objects of each date loaded and their batch ran once (2026-11-04 is outside the range)"
        );
        let nightly = runs(cwd, "nightly").await;
        assert_eq!(nightly.len(), 3, "round {round}: {nightly:?}");
        assert!(
            nightly.iter().all(|r| r["status"] == "SUCCEEDED"),
            "{nightly:?}"
        );
        let sales = runs(cwd, "sales").await;
        assert_eq!(sales.len(), 3, "round {round}: {sales:?}");
        assert!(
            sales
                .iter()
                .all(|r| r["status"] == "SUCCEEDED" && r["rows_loaded"] == 2),
            "{sales:?}"
        );
    }
    // The loads were adopted, not repeated: each table holds its two rows once.
    let config =
        Arc::new(conveyor_core::config::load_file(&cwd.join("conveyor.yaml")).expect("config"));
    let embedded =
        conveyor_embedded::runtime::Embedded::open(config, &cwd.join(".conveyor")).expect("open");
    for d in ["2026_11_01", "2026_11_02", "2026_11_03"] {
        let t = TableRef::parse(&format!("analytics.sales_{d}")).expect("table");
        let n = conveyor_core::ports::Warehouse::row_count(embedded.warehouse(), &t)
            .await
            .expect("rows");
        assert_eq!(n, 2, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_nine_dates_shows_nine_dates_and_trigger_date_names_the_same_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    let dates: Vec<String> = (1..=9).map(|d| format!("2026-11-0{d}")).collect();
    let out = conveyor(
        cwd,
        &[
            "backfill",
            "nightly",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-09",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    for d in &dates {
        assert!(
            report.matches(d.as_str()).count() >= 2,
            "{d}: its start and its run in the report: {report}"
        );
    }
    let run_dates = |runs: &[Value]| -> Vec<String> {
        let mut d: Vec<String> = runs
            .iter()
            .map(|r| r["run_date"].as_str().unwrap_or("none").to_owned())
            .collect();
        d.sort();
        d
    };
    let all = runs(cwd, "nightly").await;
    assert_eq!(run_dates(&all), dates, "{all:?}");
    // The table names the date of each run.
    let out = conveyor(cwd, &["status", "--pipeline", "nightly"], &[]).await;
    let table = text(&out);
    assert!(table.contains("date"), "{table}");
    for d in &dates {
        assert!(table.contains(d.as_str()), "{d}: {table}");
    }
    // Filters by run date, not by when the runs happened.
    let json = |out: &Output| -> Vec<Value> {
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(out)))
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let out = conveyor(cwd, &["status", "--date", "2026-11-05", "--json"], &[]).await;
    assert_eq!(run_dates(&json(&out)), ["2026-11-05"], "{}", text(&out));
    let out = conveyor(
        cwd,
        &[
            "status",
            "--from",
            "2026-11-03",
            "--to",
            "2026-11-04",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(
        run_dates(&json(&out)),
        ["2026-11-03", "2026-11-04"],
        "{}",
        text(&out)
    );
    // `trigger --date` of a backfilled date is the backfill's run: adopted, not run again.
    let out = conveyor(cwd, &["trigger", "nightly", "--date", "2026-11-05"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut ran = lines(&cwd.join("nightly.out"));
    ran.sort();
    assert_eq!(ran, dates, "each date's batch ran once");
    assert_eq!(runs(cwd, "nightly").await.len(), 9);
}

const FLAKY_YAML: &str = r#"
environment: test
pipelines:
  - name: flaky
    trigger: { manual: true }
    batch:
      engine: local
      command: "echo {date} >> flaky.out; test {date} != 2026-11-02"
    poll: { max_attempts: 1 }
  - name: downstream
    trigger: { after: [flaky] }
    batch:
      engine: local
      command: "sleep 20"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_a_failed_date_exits_non_zero_every_time_and_waits_only_for_its_own_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), FLAKY_YAML).expect("config");
    let backfill = [
        "backfill",
        "flaky",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-03",
        "--timeout",
        "2m",
    ];
    for round in 1..=2 {
        let began = std::time::Instant::now();
        let out = conveyor(cwd, &backfill, &[]).await;
        let report = text(&out);
        assert!(!out.status.success(), "round {round}: {report}");
        assert!(
            report.contains("1 run(s) failed (2026-11-02)"),
            "round {round}: {report}"
        );
        // The downstream runs the successful dates started are not this command's: it does
        // not wait for their 20 s batches.
        assert!(
            began.elapsed() < std::time::Duration::from_secs(15),
            "round {round}: waited {:?} for other pipelines' runs: {report}",
            began.elapsed()
        );
    }
    let mut ran = lines(&cwd.join("flaky.out"));
    ran.sort();
    assert_eq!(
        ran,
        ["2026-11-01", "2026-11-02", "2026-11-03"],
        "the second backfill adopted each date's run: it ran nothing again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_jobs_real_stderr_line_is_its_error_and_its_output_is_kept_on_its_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(
        cwd.join("conveyor.yaml"),
        r#"
environment: test
pipelines:
  - name: upload
    trigger: { manual: true }
    batch:
      engine: local
      command: "echo uploading {date}; echo 'sftp: Permission denied (publickey,password).' >&2; echo 'Connection closed' >&2; echo 'lost connection' >&2; exit 1"
    poll: { max_attempts: 1 }
"#,
    )
    .expect("config");
    let out = conveyor(cwd, &["trigger", "upload", "--date", "2026-11-20"], &[]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let runs = runs(cwd, "upload").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0]["error"],
        "job batch FAILED: exit status 1: sftp: Permission denied (publickey,password).",
        "the telling line, not the last: {runs:?}"
    );
    let run = runs[0]["run_id"].as_str().expect("run id");
    let out = conveyor(cwd, &["status", "--run", run, "--json"], &[]).await;
    let value: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let task = value["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["node"] == "batch"))
        .unwrap_or_else(|| panic!("no batch task: {value}"));
    assert_eq!(
        task["log"]["stderr"],
        "sftp: Permission denied (publickey,password).\nConnection closed\nlost connection"
    );
    assert_eq!(task["log"]["stdout"], "uploading 2026-11-20");
    let out = conveyor(cwd, &["status", "--run", run], &[]).await;
    assert!(
        text(&out).contains("batch attempt 1 FAILED: stderr (end)")
            && text(&out).contains("  Connection closed"),
        "{}",
        text(&out)
    );
}

const CHAIN_YAML: &str = r#"
environment: test
pipelines:
  - name: chain
    trigger: { manual: true }
    poll: { max_attempts: 1 }
    jobs:
      - { name: extract, engine: local, command: "echo extract {date} >> ran.out" }
      - name: transform
        engine: local
        command: "test -e fixed-{date} || { echo 'ERROR: input {date} missing' >&2; exit 1; }; echo transform {date} >> ran.out"
      - { name: publish, engine: local, command: "echo publish {date} >> ran.out" }
"#;

/// The one run of `pipeline`, by `status --json`.
async fn only_run(cwd: &Path, pipeline: &str) -> Value {
    let all = runs(cwd, pipeline).await;
    assert_eq!(all.len(), 1, "{all:?}");
    all[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_from_the_failure_runs_only_the_failed_job_and_its_successors_and_the_run_then_succeeds()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), CHAIN_YAML).expect("config");
    let out = conveyor(cwd, &["trigger", "chain", "--date", "2026-11-20"], &[]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(lines(&cwd.join("ran.out")), ["extract 2026-11-20"]);
    let failed = only_run(cwd, "chain").await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let run = failed["run_id"].as_str().expect("run").to_owned();

    std::fs::write(cwd.join("fixed-2026-11-20"), "").expect("fix");
    let out = conveyor(cwd, &["rerun", &run], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lines(&cwd.join("ran.out")),
        [
            "extract 2026-11-20",
            "transform 2026-11-20",
            "publish 2026-11-20"
        ],
        "extract, which succeeded, did not run again"
    );
    let rerun = only_run(cwd, "chain").await;
    assert_eq!(rerun["run_id"], run.as_str(), "the same run");
    assert_eq!(rerun["status"], "SUCCEEDED", "{rerun}");
    assert_eq!(rerun["run_date"], "2026-11-20");
    // Every start records what started it.
    let out = conveyor(cwd, &["status", "--run", &run, "--json"], &[]).await;
    let value: Value = serde_json::from_slice(&out.stdout).expect("json");
    let started_by = |job: &str, attempt: u64| -> Value {
        value["events"]
            .as_array()
            .and_then(|e| {
                e.iter().find(|r| {
                    r["job"] == job && r["attempt"] == attempt && r["status"] == "SUBMITTED"
                })
            })
            .map(|r| r["detail"]["vars"]["started_by"].clone())
            .unwrap_or_default()
    };
    assert_eq!(started_by("transform", 1), "manual", "{value}");
    assert_eq!(started_by("transform", 2), "rerun", "{value}");

    // --from a job that succeeded: that job and the ones after it, once more.
    let out = conveyor(cwd, &["rerun", &run, "--from", "publish"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lines(&cwd.join("ran.out")).len(), 4);
    assert_eq!(only_run(cwd, "chain").await["status"], "SUCCEEDED");

    // A run that did not fail is not re-run without --from; an unknown job is refused.
    let out = conveyor(cwd, &["rerun", &run], &[]).await;
    assert!(
        !out.status.success() && text(&out).contains("give --from JOB"),
        "{}",
        text(&out)
    );
    let out = conveyor(cwd, &["rerun", &run, "--from", "nope"], &[]).await;
    assert!(
        !out.status.success() && text(&out).contains("no job \"nope\""),
        "{}",
        text(&out)
    );
}

/// Lets through only requests that carry `Authorization: Bearer tok` (the deployed
/// function's Cloud Run IAM, as far as the CLI can tell).
struct NeedsToken;

#[async_trait::async_trait]
impl conveyor_core::http::CallerCheck for NeedsToken {
    async fn check(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), conveyor_core::http::Denied> {
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer tok") => Ok(()),
            other => Err(conveyor_core::http::Denied::Unauthenticated(format!(
                "{other:?}"
            ))),
        }
    }
}

/// `conveyor rerun RUN --remote URL` asks the deployed submit function (`POST URL/rerun`, with
/// the identity token): the run re-runs there from its failure and then reads SUCCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_remote_asks_the_submit_function_with_an_identity_token_and_the_run_then_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    let yaml = CHAIN_YAML.replace("ran.out", &cwd.join("ran.out").display().to_string());
    let yaml = yaml.replace("fixed-", &format!("{}/fixed-", cwd.display()));
    let chain = conveyor_e2e::Chain::start(&yaml).await;
    chain
        .accepted(
            conveyor_core::event::StepName::Submit,
            r#"{"pipeline":"chain","date":"2026-11-20"}"#,
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let run = chain
        .run_log()
        .await
        .iter()
        .find(|r| r.pipeline.as_deref() == Some("chain"))
        .expect("a row")
        .run_id
        .clone();
    let state = |rows: &[RunLogRow]| {
        conveyor_core::run_state::RunState::from_rows(rows.iter().filter(|r| r.run_id == run))
            .expect("state")
            .status
    };
    assert_eq!(state(&chain.run_log().await), "FAILED");
    std::fs::write(cwd.join("fixed-2026-11-20"), "").expect("fix");

    let router = conveyor_core::http::with_caller_check(
        conveyor_core::http::router(conveyor_core::event::StepName::Submit, chain.ctx.clone()),
        Arc::new(NeedsToken),
    );
    let url = conveyor_e2e::serve(router).await;
    // Without a token (a loopback URL asks gcloud for none): refused, nothing runs.
    let out = conveyor(cwd, &["rerun", &run, "--remote", &url], &[]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));
    assert_eq!(state(&chain.run_log().await), "FAILED");
    let out = conveyor(
        cwd,
        &["rerun", &run, "--remote", &url, "--token", "tok"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("re-run 1 of"), "{}", text(&out));
    chain.settle(Duration::from_secs(30)).await;
    assert_eq!(state(&chain.run_log().await), "SUCCEEDED");
    assert_eq!(
        lines(&cwd.join("ran.out")),
        [
            "extract 2026-11-20",
            "transform 2026-11-20",
            "publish 2026-11-20"
        ]
    );
    // mark-success --remote: the same function records who and why.
    let out = conveyor(
        cwd,
        &[
            "mark-success",
            &run,
            "--job",
            "publish",
            "--reason",
            "checked",
            "--by",
            "ana",
            "--remote",
            &url,
            "--token",
            "tok",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    chain.settle(Duration::from_secs(30)).await;
    assert!(
        chain.run_log().await.iter().any(|r| r.run_id == run
            && r.detail.contains(r#""marked_by":"ana""#)
            && r.detail.contains(r#""reason":"checked""#)),
        "marked by ana"
    );
    // A run of no pipeline of the function's file is refused with the reason.
    let out = conveyor(
        cwd,
        &["rerun", "nope", "--remote", &url, "--token", "tok"],
        &[],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("400") && text(&out).contains("belongs to no pipeline"),
        "{}",
        text(&out)
    );
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_rerun_failed_reruns_the_failed_dates_and_mark_success_records_who_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), CHAIN_YAML).expect("config");
    std::fs::write(cwd.join("fixed-2026-11-01"), "").expect("fix");
    let backfill = [
        "backfill",
        "chain",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-03",
    ];
    let out = conveyor(cwd, &backfill, &[]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 run(s) failed (2026-11-02, 2026-11-03)"),
        "{}",
        text(&out)
    );

    std::fs::write(cwd.join("fixed-2026-11-02"), "").expect("fix");
    let mut again = backfill.to_vec();
    again.push("--rerun-failed");
    let out = conveyor(cwd, &again, &[]).await;
    // 2026-11-03 still fails: the command says so.
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 run(s) failed (2026-11-03)"),
        "{}",
        text(&out)
    );
    let mut ran = lines(&cwd.join("ran.out"));
    ran.sort();
    assert_eq!(
        ran.iter().filter(|l| l.ends_with("2026-11-02")).count(),
        3,
        "2026-11-02 re-ran from its failed job: {ran:?}"
    );

    // The operator decides 2026-11-03's transform is done: publish runs, the run succeeds.
    let failed: Vec<Value> = runs(cwd, "chain")
        .await
        .into_iter()
        .filter(|r| r["run_date"] == "2026-11-03")
        .collect();
    let run = failed[0]["run_id"].as_str().expect("run").to_owned();
    let out = conveyor(
        cwd,
        &[
            "mark-success",
            &run,
            "--job",
            "transform",
            "--reason",
            "loaded by hand",
            "--by",
            "ana",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(lines(&cwd.join("ran.out")).contains(&"publish 2026-11-03".to_owned()));
    let out = conveyor(cwd, &["status", "--run", &run, "--json"], &[]).await;
    let value: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(value["run"]["status"], "SUCCEEDED", "{value}");
    let marked = value["events"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|r| r["detail"]["engine_state"] == "MARKED_SUCCESS")
        })
        .unwrap_or_else(|| panic!("no marked row: {value}"));
    assert_eq!(marked["job"], "transform");
    assert_eq!(marked["detail"]["vars"]["marked_by"], "ana");
    assert_eq!(marked["detail"]["vars"]["reason"], "loaded by hand");
    assert_eq!(marked["detail"]["vars"]["started_by"], "operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pipeline_starts_nothing_until_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    let folder = cwd.join(".conveyor/buckets/landing/sales/2026-11-05");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("orders.csv"), "id,amount\n1,1.5\n").expect("object");
    for p in ["nightly", "sales"] {
        let out = conveyor(cwd, &["pause", p, "--reason", "upstream late"], &[]).await;
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("pipeline {p} paused")),
            "{}",
            text(&out)
        );
    }
    let out = conveyor(cwd, &["trigger", "nightly", "--date", "2026-11-05"], &[]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pipeline nightly is paused"),
        "{}",
        text(&out)
    );
    // The arrival is recorded PAUSED and held (`pause.arrivals: hold`, the default).
    let out = conveyor(cwd, &["trigger", "sales", "--date", "2026-11-05"], &[]).await;
    assert!(
        text(&out).contains("pipeline sales is paused")
            && text(&out).contains("held until `conveyor resume sales`"),
        "{}",
        text(&out)
    );
    assert!(lines(&cwd.join("nightly.out")).is_empty(), "nothing ran");
    assert!(lines(&cwd.join("sales.out")).is_empty(), "nothing loaded");
    let out = conveyor(cwd, &["status", "--pipeline", "sales", "--json"], &[]).await;
    assert!(text(&out).contains("PAUSED"), "{}", text(&out));

    // Resuming starts what was held: the arrival loads and its job runs, with no trigger.
    let out = conveyor(cwd, &["resume", "sales"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("starting 1 held arrival(s) and tick(s)"),
        "{}",
        text(&out)
    );
    assert_eq!(lines(&cwd.join("sales.out")), ["2026-11-05"]);
    let out = conveyor(cwd, &["resume", "nightly"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("held"), "{}", text(&out));
    let out = conveyor(cwd, &["trigger", "nightly", "--date", "2026-11-05"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = conveyor(cwd, &["trigger", "sales", "--date", "2026-11-05"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lines(&cwd.join("nightly.out")), ["2026-11-05"]);
    assert_eq!(lines(&cwd.join("sales.out")), ["2026-11-05"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_refuses_to_run_locally_when_conveyor_project_is_set_without_remote_or_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    let production = [("CONVEYOR_PROJECT", "my-project")];
    for command in [
        &["trigger", "nightly", "--date", "2026-11-05"][..],
        &[
            "backfill",
            "nightly",
            "--from",
            "2026-11-05",
            "--to",
            "2026-11-05",
        ][..],
    ] {
        let out = conveyor(cwd, command, &production).await;
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("CONVEYOR_PROJECT is set (my-project)")
                && text(&out).contains("--local"),
            "{}",
            text(&out)
        );
    }
    assert!(lines(&cwd.join("nightly.out")).is_empty(), "nothing ran");
    let mut local = vec!["trigger", "nightly", "--date", "2026-11-05", "--local"];
    let out = conveyor(cwd, &local, &production).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lines(&cwd.join("nightly.out")), ["2026-11-05"]);
    local.push("--remote");
    local.push("http://127.0.0.1:9/");
    let out = conveyor(cwd, &local, &production).await;
    assert!(!out.status.success(), "--local and --remote conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_starts_one_run_per_date_and_calls_a_deployed_function_with_an_identity_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    for _ in 0..2 {
        let out = conveyor(cwd, &["trigger", "nightly", "--date", "2026-11-05"], &[]).await;
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(lines(&cwd.join("nightly.out")), ["2026-11-05"]);
    let out = conveyor(
        cwd,
        &[
            "trigger",
            "nightly",
            "--key",
            "again",
            "--date",
            "2026-11-05",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lines(&cwd.join("nightly.out")).len(),
        2,
        "another key is another run"
    );
    let out = conveyor(cwd, &["trigger", "sales"], &[]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("give --date"), "{}", text(&out));

    // --remote: the start request a deployed function receives, with the token.
    let seen: Arc<std::sync::Mutex<Vec<(String, Value)>>> = Arc::default();
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                    let seen = seen.clone();
                    async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        seen.lock().expect("lock").push((auth, body.0));
                        axum::Json(json!({"summary": "submitted cv-batch-x", "events": []}))
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let out = conveyor(
        cwd,
        &[
            "backfill",
            "nightly",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--remote",
            &url,
        ],
        &[("CONVEYOR_ID_TOKEN", "token-123")],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "Bearer token-123");
    assert_eq!(seen[0].1["pipeline"], "nightly");
    assert_eq!(seen[0].1["date"], "2026-11-01", "the run date is named");
    assert!(
        seen[0].1.get("key").is_none(),
        "one run per date, not per key"
    );
    assert!(
        seen[1].1["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-11-02T00:00:00"))
    );
}

// ---------------------------------------------------------------------------------------
// replay against the Pub/Sub emulator (and the run log in bqemulator)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_re_publishes_a_dead_lettered_message_once_and_records_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(&dir.path().join("emu"), &["start"], "the replay test") else {
        return;
    };
    let http = reqwest::Client::new();
    let ps = emu.pubsub_project();
    for t in ["conveyor-events", "conveyor-events-dead-letter"] {
        emu.topic(t).await;
    }
    for (s, t) in [
        ("conveyor-events-dead-letter", "conveyor-events-dead-letter"),
        ("probe", "conveyor-events"),
    ] {
        emu.subscription(s, t, json!({"ackDeadlineSeconds": 10}))
            .await;
    }
    emu.dataset("conveyor").await;

    // A loaded event that the submit function failed on until Pub/Sub dead-lettered it.
    let event = json!({"type": "dev.conveyor.table.loaded", "run_id": "sales-ccc", "pipeline": "sales",
        "step": "load", "attempt": 1, "status": "SUCCEEDED", "time": "2026-11-20T10:00:00Z",
        "detail": {"table": "analytics.sales_2026_11_20", "rows": 6}});
    let data = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    http.post(format!("{ps}/topics/conveyor-events-dead-letter:publish"))
        .json(&json!({"messages": [{"data": data, "attributes": {
            "ce-type": "dev.conveyor.table.loaded", "ce-specversion": "1.0",
            "CloudPubSubDeadLetterSourceSubscription": "conveyor-submit",
            "CloudPubSubDeadLetterSourceDeliveryCount": "10"}}]}))
        .send()
        .await
        .expect("dead-letter");

    let cwd = dir.path().join("ops");
    std::fs::create_dir_all(&cwd).expect("cwd");
    let bq = format!("{}/bigquery/v2", emu.wire.bq);
    let env = [
        ("CONVEYOR_PROJECT", "test"),
        ("CONVEYOR_BIGQUERY_ENDPOINT", bq.as_str()),
        ("CONVEYOR_PUBSUB_ENDPOINT", emu.wire.pubsub.as_str()),
        ("CONVEYOR_ANONYMOUS", "true"),
    ];

    // Listing only: shown, left in place.
    let out = conveyor(&cwd, &["replay", "--pull-wait", "1s"], &env).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("sales-ccc") && said.contains("conveyor-submit"),
        "{said}"
    );
    assert!(said.contains("0 re-published"), "{said}");

    let out = conveyor(&cwd, &["replay", "--all", "--pull-wait", "1s"], &env).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("1 re-published"), "{said}");
    let out = conveyor(&cwd, &["replay", "--all", "--pull-wait", "1s"], &env).await;
    assert!(text(&out).contains("is empty"), "{}", text(&out));

    // The events topic got it exactly once, as it was, marked as a replay.
    let mut got = Vec::new();
    let mut deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !got.is_empty() {
            // A second copy would be there by now: the replay ended before this read.
            deadline = deadline.min(Instant::now() + Duration::from_secs(1));
        }
        let r: Value = http
            .post(format!("{ps}/subscriptions/probe:pull"))
            .json(&json!({"maxMessages": 10, "returnImmediately": true}))
            .send()
            .await
            .expect("pull")
            .json()
            .await
            .expect("json");
        for m in r["receivedMessages"].as_array().into_iter().flatten() {
            got.push(m["message"].clone());
            http.post(format!("{ps}/subscriptions/probe:acknowledge"))
                .json(&json!({"ackIds": [m["ackId"]]}))
                .send()
                .await
                .expect("ack");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(got.len(), 1, "re-published once: {got:?}");
    assert_eq!(got[0]["data"], data);
    assert_eq!(got[0]["attributes"]["ce-type"], "dev.conveyor.table.loaded");
    assert!(got[0]["attributes"]["conveyor-replay-of"].is_string());
    assert!(
        got[0]["attributes"]
            .get("CloudPubSubDeadLetterSourceSubscription")
            .is_none()
    );

    // The replay is in the run log, under the run it belongs to.
    let out = conveyor(&cwd, &["status", "--run", "sales-ccc", "--json"], &env).await;
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let events = v["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["status"], "REPLAYED");
    assert_eq!(events[0]["step"], "replay");
}

// ---------------------------------------------------------------------------------------
// traced logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_traceparent_logs_the_trace_field_http_request_and_the_run_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start-pubsub"],
        "the traced-log test",
    ) else {
        return;
    };
    let http = reqwest::Client::new();
    emu.topic("conveyor-events").await;
    let fake = Fake::start().await;
    fake.script(&[&["PENDING", "RUNNING", "SUCCEEDED"]]);
    let config = dir.path().join("conveyor.yaml");
    std::fs::write(
        &config,
        r#"
pipelines:
  - name: nightly
    trigger: { manual: true }
    batch:
      engine: dataproc_serverless
      project: test
      region: us-central1
      runtime_version: "2.2"
      pyspark: { main_python_file_uri: "gs://code/job.py" }
"#,
    )
    .expect("config");
    // A port nothing listens on, for the stores the start does not use.
    let closed = free_port();
    // The run log, read for a pause before the start: not created yet (BigQuery's 404), so
    // nothing is paused.
    let bigquery = conveyor_e2e::serve(axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {
                "code": 404,
                "message": "Not found: Table test:conveyor.run_log",
                "status": "NOT_FOUND",
                "errors": [{"reason": "notFound", "message": "Not found: Table test:conveyor.run_log"}],
            }})),
        )
    }))
    .await;
    let log = dir.path().join("submit.log");
    let (mut child, port) = conveyor_e2e::start_listening("conveyor-submit", |port| {
        Command::new(binary("conveyor-submit"))
            .env("PORT", port.to_string())
            .env("CONVEYOR_CONFIG", &config)
            .env("CONVEYOR_PROJECT", "test")
            .env("CONVEYOR_EVENTS_TOPIC", "conveyor-events")
            .env("CONVEYOR_PUBSUB_ENDPOINT", &emu.wire.pubsub)
            .env(
                "CONVEYOR_GCS_ENDPOINT",
                format!("http://127.0.0.1:{closed}"),
            )
            .env(
                "CONVEYOR_BIGQUERY_ENDPOINT",
                format!("{bigquery}/bigquery/v2"),
            )
            .env("CONVEYOR_ANONYMOUS", "true")
            .env("CONVEYOR_DATAPROC_ENDPOINT", &fake.url)
            .env("CONVEYOR_LOG_FORMAT", "json")
            .env("CONVEYOR_LOG", "info")
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("conveyor-submit")
    })
    .await;
    let url = format!("http://127.0.0.1:{port}");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = http
        .post(format!("{url}/"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("user-agent", "conveyor-test")
        .json(&json!({"pipeline": "nightly", "key": "k1"}))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "the start went through");
    let read_lines = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // The request's last line is written once the answer is sent: wait for it, not a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read_lines()
        .iter()
        .any(|l| l["message"] == "request finished")
    {
        assert!(
            Instant::now() < deadline,
            "no request line: {:#?}",
            read_lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill().await;
    let lines = read_lines();
    let traced: Vec<&Value> = lines
        .iter()
        .filter(|l| l["logging.googleapis.com/trace"] == format!("projects/test/traces/{trace}"))
        .collect();
    assert!(
        traced.len() >= 2,
        "every line of the request carries the trace: {lines:#?}"
    );
    assert!(
        traced
            .iter()
            .all(|l| l["httpRequest"]["requestMethod"] == "POST"
                && l["httpRequest"]["userAgent"] == "conveyor-test"
                && l["logging.googleapis.com/spanId"] == "00f067aa0ba902b7")
    );
    let submitted = traced
        .iter()
        .find(|l| l["message"] == "batch submitted")
        .unwrap_or_else(|| panic!("no step line: {lines:#?}"));
    assert!(
        submitted["run_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("nightly-")),
        "the step's line names its run: {submitted}"
    );
    let finished = traced
        .iter()
        .find(|l| l["message"] == "request finished")
        .unwrap_or_else(|| panic!("no request line: {lines:#?}"));
    assert_eq!(finished["httpRequest"]["status"], status);
    assert!(
        finished["httpRequest"]["latency"]
            .as_str()
            .is_some_and(|l| l.ends_with('s'))
    );
}

// ---------------------------------------------------------------------------------------
// progress output

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_many_objects_prints_a_summary_not_a_line_per_object_when_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    let exports = cwd.join("exports");
    std::fs::create_dir_all(&exports).expect("mkdir");
    for i in 0..60 {
        std::fs::write(
            exports.join(format!("part-{i:03}.csv")),
            format!("id\n{i}\n"),
        )
        .expect("file");
    }
    std::fs::write(
        cwd.join("conveyor.yaml"),
        r#"
pipelines:
  - name: many
    stage: { source: exports, bucket: landing, prefix: "many/" }
"#,
    )
    .expect("config");
    let out = conveyor(cwd, &["stage", "many"], &[]).await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    assert!(said.contains("60 to copy"), "{said}");
    assert!(said.contains("staged 60 object(s)"), "the summary: {said}");
    assert!(
        said.matches("copied many/").count() == 0,
        "no line per object above 20 objects: {said}"
    );
    assert!(
        !said.contains('\u{1b}'),
        "no colour codes when not a terminal: {said:?}"
    );
    assert_eq!(
        std::fs::read_dir(cwd.join(".conveyor/buckets/landing/many"))
            .expect("staged")
            .count(),
        60
    );
}

// ---------------------------------------------------------------------------------------
// conveyor run: done when the work is, not after fixed sleeps; what waits is an error

/// `conveyor run` on `yaml` with `files` (bucket path → content) already in the buckets.
async fn run_with(yaml: &str, files: &[(&str, &str)], timeout: &str) -> (Output, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), yaml).expect("config");
    let state = cwd.join("state");
    for (path, content) in files {
        let file = state.join("buckets").join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, content).expect("file");
    }
    let began = Instant::now();
    let out = conveyor(
        cwd,
        &[
            "--state-dir",
            state.to_str().expect("utf-8"),
            "run",
            "--timeout",
            timeout,
        ],
        &[],
    )
    .await;
    (out, began.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_non_zero_naming_an_open_window_instead_of_saying_every_step_succeeded() {
    let (out, _) = run_with(
        r#"
pipelines:
  - name: tail
    trigger: { object: { bucket: landing, pattern: "events/{kind}/*.ndjson" } }
    load: { table: "raw.events_{kind}", format: NDJSON, batch: { window: 1h } }
"#,
        &[("landing/events/click/e0.ndjson", "{\"n\": 1}\n")],
        "3s",
    )
    .await;
    let text = text(&out);
    assert!(!out.status.success(), "an open window is not done: {text}");
    assert!(
        text.contains("window")
            && text.contains("holds 1 file(s)")
            && text.contains("raw.events_click"),
        "names the window that waits: {text}"
    );
    assert!(!text.contains("SUCCEEDED\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_non_zero_naming_a_folder_that_waits_for_its_marker() {
    let (out, _) = run_with(
        r#"
pipelines:
  - name: gebi
    trigger: { object: { bucket: landing, pattern: "orders/{date}/*.csv" } }
    load: { table: "staging.orders_{date}", format: CSV, batch: { marker: _SUCCESS } }
"#,
        &[("landing/orders/2026-11-20/part-0.csv", "id,v\n1,a\n")],
        "3s",
    )
    .await;
    let text = text(&out);
    assert!(
        !out.status.success(),
        "a folder without its marker is not done: {text}"
    );
    assert!(
        text.contains("1 file(s) in gs://landing/orders/2026-11-20/ wait for its marker _SUCCESS"),
        "names the folder that waits: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_finishes_as_soon_as_its_runs_end_without_a_fixed_quiet_window() {
    let (out, took) = run_with(
        r#"
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.sales", format: CSV, skip_leading_rows: 1 }
"#,
        &[("landing/sales/2026-11-20/a.csv", "id,amount\n1,1.5\n2,2\n")],
        "60s",
    )
    .await;
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    // The wait used to end only after 1.5 s without anything in flight, checked every 0.2 s:
    // the whole command took 1.7 s or more for a two-row file (about 0.6 s now).
    assert!(
        took < Duration::from_millis(1500),
        "`conveyor run` of one small file took {took:?}: a fixed quiet window is back\n{text}"
    );
    assert!(text.contains("every run SUCCEEDED"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("done in ")),
        "says when the work was done: {text}"
    );
}

// ---------------------------------------------------------------------------------------
// The state directory at start-up: one process at a time, writable

/// `conveyor dev` in `cwd` on `port`, its output in `dev.out` and `dev.err`.
fn spawn_dev(cwd: &Path, port: u16, name: &str) -> tokio::process::Child {
    Command::new(binary("conveyor"))
        .current_dir(cwd)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1")
        .env_remove("CONVEYOR_STATE_DIR")
        .env_remove("CONVEYOR_CONFIG")
        .stdout(std::fs::File::create(cwd.join(format!("{name}.out"))).expect("out"))
        .stderr(std::fs::File::create(cwd.join(format!("{name}.err"))).expect("err"))
        .kill_on_drop(true)
        .spawn()
        .expect("conveyor dev")
}

/// Waits until `port` answers `/healthz`.
async fn wait_healthy(port: u16) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "conveyor dev did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `conveyor dev` in `cwd` (as [`spawn_dev`]) once it answers `/healthz`, and its port (see
/// [`conveyor_e2e::start_listening`]).
async fn spawn_dev_healthy(cwd: &Path, name: &str) -> (tokio::process::Child, u16) {
    conveyor_e2e::start_listening("conveyor dev", |port| spawn_dev(cwd, port, name)).await
}

/// Waits up to `limit` for `child` to exit; `None` when it is still running.
async fn exit_within(
    child: &mut tokio::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    tokio::time::timeout(limit, child.wait())
        .await
        .ok()
        .map(|r| r.expect("wait"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dev_on_the_same_state_dir_is_refused_naming_the_first_ones_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    let (mut first, _) = spawn_dev_healthy(cwd, "first").await;
    let pid = first.id().expect("pid");
    let mut second = spawn_dev(cwd, free_port(), "second");
    let status = exit_within(&mut second, Duration::from_secs(15)).await;
    let err = std::fs::read_to_string(cwd.join("second.err")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second dev on the same state dir started ({status:?}): {err}"
    );
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(
        exit_within(&mut first, Duration::from_millis(200))
            .await
            .is_none(),
        "the first one keeps running"
    );
    first.kill().await.expect("kill");
    let _ = first.wait().await;
    // Once it is gone, the state directory is free again (the lock is the system's).
    let (mut third, _) = spawn_dev_healthy(cwd, "third").await;
    third.kill().await.expect("kill");
}

/// A read-only bind mount of `source` at `target`, unmounted on drop.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn new(source: &Path, target: &Path) -> Option<Self> {
        std::fs::create_dir_all(target).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(source)
            .arg(target)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // Older mount(8) applies `ro` to a bind mount only on a remount.
        let ro = ok && std::fs::write(target.join(".probe"), b"").is_err();
        if ok && !ro {
            let _ = std::process::Command::new("umount").arg(target).status();
        }
        ro.then(|| Self(target.to_path_buf()))
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_dir_is_refused_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    // A state directory that was used: its warehouse and run log exist.
    let out = conveyor(cwd, &["trigger", "nightly", "--date", "2026-11-05"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let used = cwd.join("used");
    std::fs::rename(cwd.join(".conveyor"), &used).expect("rename");
    let Some(_mount) = ReadOnlyMount::new(&used, &cwd.join(".conveyor")) else {
        conveyor_e2e::skipped("a read-only bind mount needs root (mount --bind -o ro)");
        return;
    };
    let mut dev = spawn_dev(cwd, free_port(), "dev");
    let status = exit_within(&mut dev, Duration::from_secs(15)).await;
    let err = std::fs::read_to_string(cwd.join("dev.err")).unwrap_or_default();
    if status.is_none() {
        dev.kill().await.expect("kill");
        let _ = dev.wait().await;
    }
    assert!(
        status.is_some_and(|s| !s.success()),
        "dev started on a read-only state dir: {err}"
    );
    assert!(err.contains("cannot be written"), "{err}");
    assert!(!err.contains("readonly database"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_that_cannot_reach_its_engine_says_what_to_do_not_transient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    let secrets = cwd.join(".conveyor/secrets/projects/p/secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(secrets.join("k"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !keygen.is_ok_and(|s| s.success()) {
        conveyor_e2e::skipped(
            "ssh-keygen is needed for an SSH key (apt-get install openssh-client)",
        );
        return;
    }
    // Nothing listens on port 1: the engine is unreachable, which may pass.
    std::fs::write(
        cwd.join("conveyor.yaml"),
        r#"
pipelines:
  - name: remote
    trigger: { manual: true }
    batch:
      engine: ssh
      host: 127.0.0.1
      port: 1
      user: etl
      key_secret: projects/p/secrets/k
      known_hosts: "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJJ+4lG9J+TGxmfEzcS+JiYhwF4yhM0lFO21BAVurC9y"
      command: "true"
"#,
    )
    .expect("config");
    let out = conveyor(cwd, &["trigger", "remote"], &[]).await;
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(!shown.contains("error: transient:"), "{shown}");
    assert!(
        shown.contains("error: start remote did not complete"),
        "{shown}"
    );
    assert!(shown.contains("run the same command again"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_answers_healthz_behind_more_idle_connections_than_it_has_file_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("conveyor.yaml"), OPERATE_YAML).expect("config");
    let port = free_port();
    // 256 descriptors for the whole server: 400 idle connections would take them all.
    let mut dev = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(binary("conveyor"))
        .current_dir(cwd)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1")
        .env_remove("CONVEYOR_STATE_DIR")
        .env_remove("CONVEYOR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(dev) = dev.as_mut() else {
        conveyor_e2e::skipped("prlimit(1) is needed to lower the open-file limit (util-linux)");
        return;
    };
    wait_healthy(port).await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        // A server that stopped accepting fills its backlog: connecting then stalls.
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(stream)) => idle.push(stream),
            _ => break,
        }
    }
    // The server's part of the pressure (accepting those connections, up to its limit of
    // descriptors) happens on its side with nothing to observe from here: it is given a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let answer = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        answer.as_ref().is_ok_and(|r| r.status().is_success()),
        "healthz behind 400 idle connections: {answer:?}"
    );
    drop(idle);
    dev.kill().await.expect("kill");
}
