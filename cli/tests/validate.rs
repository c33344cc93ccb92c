//! `conveyor validate` and `conveyor schema` as a user runs them: every error on stderr as
//! `file:line:col: path: message`, a JSON report on request, a failing exit status; the schema
//! printed is the committed one.

use crate::common;

use common::{conveyor, repo_file};

const MISTAKES: &str = r#"pipelines:
  - name: sales
    trigger:
      object: { bucket: landing, pattern: "sales/{date}/*.csv" }
    load:
      table: "analytics.sales_{date}"
      fromat: CSV
      write_disposition: WRITE_APEND
    poll:
      timeout: 5 minutes please
      max_attempts: one
  - name: tokyo
    trigger:
      schedule:
        cron: "0 5 * * 1#2"
        time_zone: Mars/Olympus
    jobs: [{ name: report, engine: local, command: "true" }]
"#;

#[test]
fn every_mistake_is_reported_on_stderr_as_file_line_col() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mistakes.yaml");
    std::fs::write(&file, MISTAKES).expect("write");
    let name = file.to_str().expect("path");
    let out = conveyor(&["validate", name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!(
            "{name}:7:7: pipelines[0].load.fromat: unknown field `fromat`; did you mean `format`?"
        ),
        format!(
            "{name}:8:26: pipelines[0].load.write_disposition: unknown value `WRITE_APEND`; did you mean `WRITE_APPEND`?"
        ),
        format!(
            "{name}:10:16: pipelines[0].poll.timeout: expected a duration such as 30s or 5m, got \"5 minutes please\""
        ),
        format!(
            "{name}:11:21: pipelines[0].poll.max_attempts: expected a whole number, got \"one\""
        ),
        format!(
            "{name}:15:15: pipelines[1].trigger.schedule.cron: invalid cron \"0 5 * * 1#2\": `#` (the nth weekday of the month) in the day of the week field is not supported by Cloud Scheduler's cron"
        ),
        format!(
            "{name}:16:20: pipelines[1].trigger.schedule.time_zone: \"Mars/Olympus\" is not an IANA time zone (such as `Europe/Paris`, `Asia/Tokyo` or `Etc/UTC`)"
        ),
        format!("{name}: 6 error(s)"),
    ];
    assert_eq!(lines, expected, "{stderr}");
}

#[test]
fn the_json_report_lists_the_same_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mistakes.yaml");
    std::fs::write(&file, MISTAKES).expect("write");
    let out = conveyor(&["validate", "--format", "json", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(doc["ok"], false);
    let errors = doc["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 6, "{doc:#}");
    assert_eq!(errors[0]["line"], 7);
    assert_eq!(errors[0]["column"], 7);
    assert_eq!(errors[0]["path"], "pipelines[0].load.fromat");
    assert_eq!(errors[5]["path"], "pipelines[1].trigger.schedule.time_zone");

    let good = repo_file("examples/conveyor.yaml");
    let out = conveyor(&["validate", "--format", "json", good.to_str().expect("path")]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["errors"], serde_json::json!([]));
}

#[test]
fn a_missing_file_fails_with_its_reason() {
    let out = conveyor(&["validate", "/nonexistent/conveyor.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/conveyor.yaml"),
        "{stderr}"
    );
}

#[test]
fn conveyor_schema_prints_the_committed_schema() {
    let out = conveyor(&["schema"]);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(repo_file("examples/conveyor.schema.json")).expect("schema");
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

#[test]
fn the_example_file_is_refused_for_google_cloud_naming_each_local_part() {
    let example = repo_file("examples/conveyor.yaml");
    let out = conveyor(&["validate", example.to_str().expect("path"), "--for", "gcp"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pipelines[0] (landing_import).stage.source")
            && stderr.contains("local path"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(sales_avro).jobs[0] (batch).engine") && stderr.contains("engine: local"),
        "{stderr}"
    );
    // The same file is valid for the embedded mode.
    let plain = conveyor(&["validate", example.to_str().expect("path")]);
    assert_eq!(plain.status.code(), Some(0));
}

#[test]
fn a_file_for_google_cloud_passes_and_must_name_the_landing_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deploy.yaml");
    std::fs::write(
        &file,
        r#"pipelines:
  - name: orders
    trigger: { object: { bucket: acme-landing, pattern: "orders/{date}/*.csv" }, manual: true }
    stage: { source: "https://example.com/orders.csv", bucket: acme-landing, prefix: "orders/{date}/" }
    load: { table: "analytics.orders_{date}", format: CSV }
    jobs: [{ name: publish, engine: sql, query: "SELECT 1" }]
"#,
    )
    .expect("write");
    let name = file.to_str().expect("path");
    let ok = conveyor(&[
        "validate",
        name,
        "--for",
        "gcp",
        "--landing-bucket",
        "acme-landing",
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let other = conveyor(&[
        "validate",
        name,
        "--for",
        "gcp",
        "--landing-bucket",
        "prod-landing",
    ]);
    assert_eq!(other.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("stage.bucket") && stderr.contains("trigger.object.bucket"),
        "{stderr}"
    );
    let json = conveyor(&[
        "validate",
        name,
        "--for",
        "gcp",
        "--landing-bucket",
        "prod-landing",
        "--format",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["errors"].as_array().map(Vec::len), Some(2));
}
