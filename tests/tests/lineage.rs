//! Lineage on the embedded chain (issue 27): a load → sql → check pipeline writes an
//! OpenLineage START and COMPLETE for its load and each job to `lineage.jsonl` in the state
//! directory, with the `gs://` object, the source and destination tables, the declared schema
//! and the row counts; a job whose check fails writes FAIL with its error; a redelivered
//! event writes the same runId again. Every line is checked by scripts/openlineage_check.py
//! against the models of the pinned PyPI package openlineage-python.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conveyor_core::event::{Status, StepName};
use conveyor_e2e::{Chain, repo, skipped};
use serde_json::Value;

const PIPELINES: &str = r#"
environment: staging
lineage: {}
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load:
      table: "raw.sales_{date}"
      format: CSV
      skip_leading_rows: 1
      schema: [{ name: id, type: INT64 }, { name: amount, type: FLOAT64 }]
    poll: { interval: 50ms, max_attempts: 1 }
    jobs:
      - name: totals
        engine: sql
        query: "SELECT COUNT(*) AS n, SUM(amount) AS total FROM raw.sales_{date}"
        destination: "mart.totals_{date}"
      - name: verify
        engine: local
        command: "true"
        checks: [{ row_count: { table: "mart.totals_{date}", min: 1 } }]
  - name: broken
    trigger: { manual: true }
    poll: { interval: 50ms, max_attempts: 1 }
    jobs:
      - name: make
        engine: sql
        query: "SELECT 1 AS id"
        destination: "mart.one_{date}"
        checks: [{ row_count: { table: "mart.one_{date}", min: 2 } }]
  - name: audited
    trigger: { manual: true }
    poll: { interval: 50ms, max_attempts: 1 }
    checks: [{ name: rows, row_count: { table: "mart.audit_{date}", min: 1 } }]
    jobs:
      - name: build
        engine: sql
        query: "SELECT 1 AS id"
        destination: "mart.audit_{date}"
      - { name: cleanup, engine: local, command: "true", needs: [build], run_if: one_failed }
"#;

/// The python of the venv with openlineage-python, or `None` (the test is then skipped,
/// except under CI, where it fails).
fn openlineage_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CONVEYOR_OPENLINEAGE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new(repo().join("scripts/emulators.sh"))
        .arg("openlineage")
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(o) if o.status.success() => Some(PathBuf::from(
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )),
        other => {
            let why = format!("cannot install openlineage-python: {other:?}");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            skipped(&why);
            None
        }
    }
}

/// Checks every line of `file` with the official models; panics with what they refused.
fn validate(python: &Path, file: &Path) {
    let out = std::process::Command::new(python)
        .arg(repo().join("scripts/openlineage_check.py"))
        .arg(file)
        .output()
        .expect("run openlineage_check.py");
    assert!(
        out.status.success(),
        "openlineage-python refused an event: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn events(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn names(datasets: &Value) -> BTreeSet<String> {
    datasets
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{}:{}",
                d["namespace"].as_str().unwrap_or(""),
                d["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The events of job `name` (`pipeline.job`), as (eventType, event), each (runId, eventType)
/// once: the file is at-least-once (a redelivered or re-decided event appends its events
/// again), and readers merge on those two, as Marquez and Dataplex do.
fn of<'a>(all: &'a [Value], name: &str) -> Vec<(&'a str, &'a Value)> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<(&str, &Value)> = all
        .iter()
        .filter(|e| e["job"]["name"] == name)
        .filter(|e| seen.insert((e["run"]["runId"].to_string(), e["eventType"].to_string())))
        .map(|e| (e["eventType"].as_str().unwrap_or(""), e))
        .collect();
    // The log step handles events as they are delivered, concurrently and at least once: a
    // job's end can be written before its start (OpenLineage readers order a run's events
    // by type and time). A run's START first, then the rest as written.
    out.sort_by_key(|(kind, _)| *kind != "START");
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn a_load_sql_check_pipeline_emits_start_and_complete_with_its_datasets() {
    let Some(python) = openlineage_python() else {
        return;
    };
    let chain = Chain::start(PIPELINES).await;
    chain.write_file(
        "landing",
        "sales/2026-11-20/a.csv",
        "id,amount\n1,2.5\n2,4\n3,1\n",
    );
    chain.settle(Duration::from_secs(30)).await;
    let file = chain.dir.path().join("state/lineage.jsonl");
    validate(&python, &file);
    let all = events(&file);

    let load = of(&all, "sales.load");
    let kinds: Vec<&str> = load.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["START", "COMPLETE"], "{all:#?}");
    let complete = load[1].1;
    assert_eq!(complete["job"]["namespace"], "staging");
    assert_eq!(
        names(&complete["inputs"]),
        set(&["gs://landing:sales/2026-11-20/a.csv"])
    );
    assert_eq!(
        names(&complete["outputs"]),
        set(&["sqlite:raw.sales_2026_11_20"])
    );
    let out = &complete["outputs"][0];
    assert_eq!(
        out["outputFacets"]["outputStatistics"]["rowCount"], 3,
        "{out}"
    );
    assert_eq!(
        out["facets"]["schema"]["fields"],
        serde_json::json!([{ "name": "id", "type": "INT64" }, { "name": "amount", "type": "FLOAT64" }])
    );
    assert_eq!(load[0].1["run"]["runId"], complete["run"]["runId"]);

    let totals = of(&all, "sales.totals");
    let kinds: Vec<&str> = totals.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["START", "COMPLETE"], "{all:#?}");
    for (_, e) in &totals {
        assert_eq!(
            names(&e["inputs"]),
            set(&["sqlite:raw.sales_2026_11_20"]),
            "{e}"
        );
        assert_eq!(
            names(&e["outputs"]),
            set(&["sqlite:mart.totals_2026_11_20"]),
            "{e}"
        );
        assert_eq!(e["job"]["facets"]["jobType"]["jobType"], "SQL");
    }
    let verify = of(&all, "sales.verify");
    let kinds: Vec<&str> = verify.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["START", "COMPLETE"], "{all:#?}");
    assert_eq!(
        names(&verify[1].1["inputs"]),
        set(&["sqlite:mart.totals_2026_11_20"])
    );

    // Every run of the pipeline's run is its own, under the pipeline run as parent.
    let runs: BTreeSet<&str> = [&load, &totals, &verify]
        .iter()
        .map(|evs| evs[0].1["run"]["runId"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(runs.len(), 3);
    let parents: BTreeSet<&str> = all
        .iter()
        .map(|e| {
            e["run"]["facets"]["parent"]["run"]["runId"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(parents.len(), 1, "one pipeline run: {parents:?}");

    // A redelivered event: the same OpenLineage event again, the same runId.
    let finished = chain
        .dispatched()
        .into_iter()
        .find(|e| e.detail.job.as_deref() == Some("totals") && e.status == Status::Succeeded)
        .expect("totals' SUCCEEDED event");
    chain
        .accepted(
            StepName::Log,
            &serde_json::to_string(&finished).expect("json"),
        )
        .await;
    let again = events(&file);
    assert_eq!(again.len(), all.len() + 1);
    assert_eq!(
        again.last(),
        Some(totals[1].1),
        "redelivery changed the event"
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_job_whose_check_fails_emits_fail_with_its_error() {
    let Some(python) = openlineage_python() else {
        return;
    };
    let chain = Chain::start(PIPELINES).await;
    chain
        .accepted(
            StepName::Submit,
            r#"{"pipeline":"broken","key":"b1","time":"2026-11-20T06:00:00Z"}"#,
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let file = chain.dir.path().join("state/lineage.jsonl");
    validate(&python, &file);
    let all = events(&file);
    let make = of(&all, "broken.make");
    let mut kinds: Vec<&str> = make.iter().map(|(k, _)| *k).collect();
    // Delivery is at least once: under load the poll tick and the event-driven poll can both
    // publish the job's (deterministic) FAILED event, and the log step then writes its FAIL
    // twice, with the same runId. One START, then FAIL.
    kinds.dedup();
    assert_eq!(kinds, ["START", "FAIL"], "{all:#?}");
    let fail = make[1].1;
    let message = fail["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.starts_with("CHECK_FAILED: "), "{fail}");
    assert_eq!(
        names(&fail["outputs"]),
        set(&["sqlite:mart.one_2026_11_20"])
    );
    assert!(
        fail["outputs"][0].get("outputFacets").is_none(),
        "a FAIL claims no rows: {fail}"
    );
    assert_eq!(make[0].1["run"]["runId"], fail["run"]["runId"]);
    chain.stop().await;
}

#[tokio::test]
async fn with_a_url_the_events_go_to_that_endpoint_and_a_failed_load_emits_fail() {
    let Some(python) = openlineage_python() else {
        return;
    };
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = std::sync::Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/api/v1/lineage",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().expect("lock").push(v);
                axum::http::StatusCode::CREATED
            }
        }),
    );
    let base = conveyor_e2e::serve(app).await;
    let yaml = format!(
        r#"
lineage: {{ url: "{base}/api/v1/lineage" }}
pipelines:
  - name: strict
    trigger: {{ object: {{ bucket: landing, pattern: "in/*.csv" }} }}
    load:
      table: "ds.strict"
      format: CSV
      skip_leading_rows: 1
      schema: [{{ name: id, type: INT64, mode: REQUIRED }}]
    batch: {{ engine: local, command: "true" }}
"#
    );
    let chain = Chain::start(&yaml).await;
    chain.write_file("landing", "in/bad.csv", "id\n1\nabc\n");
    chain.settle(Duration::from_secs(30)).await;
    assert!(
        !chain.dir.path().join("state/lineage.jsonl").exists(),
        "with a url, no file"
    );
    let all = seen.lock().expect("lock").clone();
    let file = chain.dir.path().join("posted.jsonl");
    let lines: Vec<String> = all.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    validate(&python, &file);
    let load = of(&all, "strict.load");
    let kinds: Vec<&str> = load.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["START", "FAIL"], "{all:#?}");
    assert_eq!(all[0]["job"]["namespace"], "dev", "the default environment");
    let fail = load[1].1;
    assert!(
        fail["run"]["facets"]["errorMessage"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("abc")),
        "{fail}"
    );
    assert_eq!(names(&fail["inputs"]), set(&["gs://landing:in/bad.csv"]));
    assert!(
        of(&all, "strict.batch").is_empty(),
        "no batch after a failed load"
    );
    chain.stop().await;
}

/// A job SKIPPED by its rule is an aborted run of it, and the pipeline's own checks are a run
/// of `<pipeline>.checks` reading their tables, ended with the run.
#[tokio::test]
async fn a_skipped_job_aborts_and_the_pipelines_checks_are_a_run_of_their_own() {
    let Some(python) = openlineage_python() else {
        return;
    };
    let chain = Chain::start(PIPELINES).await;
    chain
        .accepted(
            StepName::Submit,
            r#"{"pipeline":"audited","key":"a1","time":"2026-11-20T06:00:00Z"}"#,
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let file = chain.dir.path().join("state/lineage.jsonl");
    validate(&python, &file);
    let all = events(&file);
    let cleanup = of(&all, "audited.cleanup");
    let kinds: Vec<&str> = cleanup.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["ABORT"], "{all:#?}");
    let checks = of(&all, "audited.checks");
    let kinds: Vec<&str> = checks.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["START", "COMPLETE"], "{all:#?}");
    assert_eq!(
        names(&checks[1].1["inputs"]),
        set(&["sqlite:mart.audit_2026_11_20"])
    );
    chain.stop().await;
}

/// A stage run is an OpenLineage run of `<pipeline>.stage`: START once its source is listed,
/// COMPLETE with each source URL read and each landing object written, or FAIL with the
/// reason when an object could not be copied.
#[tokio::test]
async fn a_stage_run_emits_start_and_complete_from_its_source_urls_to_its_landing_objects() {
    let Some(python) = openlineage_python() else {
        return;
    };
    let app = axum::Router::new().route(
        "/exports/a.csv",
        axum::routing::get(|| async { ([("etag", "\"a-v1\"")], "id\n1\n") }),
    );
    let url = conveyor_e2e::serve(app).await;
    let yaml = format!(
        r#"
environment: staging
lineage: {{}}
pipelines:
  - name: web
    trigger: {{ manual: true }}
    stage:
      source: {{ https: {{ urls: ["{url}/exports/a.csv"] }} }}
      bucket: landing
      prefix: "web/"
  - name: web_broken
    trigger: {{ manual: true }}
    stage:
      source: {{ https: {{ urls: ["{url}/exports/missing.csv"] }} }}
      bucket: landing
      prefix: "broken/"
"#
    );
    let chain = Chain::start(&yaml).await;
    chain
        .accepted(StepName::Stage, r#"{"pipeline": "web"}"#)
        .await;
    let _ = chain
        .post(
            StepName::Stage,
            r#"{"pipeline": "web_broken"}"#,
            "application/json",
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let file = chain.dir.path().join("state/lineage.jsonl");
    validate(&python, &file);
    let all = events(&file);

    let stage = of(&all, "web.stage");
    let kinds: Vec<&str> = stage.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["START", "COMPLETE"], "{all:#?}");
    let (start, complete) = (stage[0].1, stage[1].1);
    assert_eq!(start["job"]["namespace"], "staging");
    assert_eq!(start["run"]["runId"], complete["run"]["runId"]);
    assert_eq!(
        complete["job"]["facets"]["jobType"]["jobType"], "STAGE",
        "{complete:#}"
    );
    assert_eq!(
        names(&complete["inputs"]),
        set(&[&format!("{url}:/exports/a.csv")]),
        "the URL read, by its server and path: {complete:#}"
    );
    assert_eq!(
        names(&complete["outputs"]),
        set(&["gs://landing:web/a.csv"]),
        "{complete:#}"
    );
    assert!(
        chain.bucket("landing").join("web/a.csv").exists(),
        "the object the output names was written"
    );

    let broken = of(&all, "web_broken.stage");
    let kinds: Vec<&str> = broken.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["START", "FAIL"], "{all:#?}");
    let fail = broken[1].1;
    assert!(
        fail["run"]["facets"]["errorMessage"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing.csv")),
        "{fail:#}"
    );
    assert!(names(&fail["outputs"]).is_empty(), "{fail:#}");
    chain.stop().await;
}
