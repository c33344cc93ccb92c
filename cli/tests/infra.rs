//! The deployment files under `infra/` agree with the code: the committed scheduler
//! variables with `conveyor schedules`, the Pub/Sub push filters with the steps'
//! subscriptions, and the run-log table's schema with the run-log columns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use conveyor_core::event::StepName;
use conveyor_core::steps::subscriptions;

use crate::common;

use common::{conveyor, repo_file as workspace_file};

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "conveyor failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

/// The pipeline file the committed scheduler variables are generated from: the example written
/// for a first deployment (examples/conveyor.yaml is the embedded mode's, which Terraform
/// refuses).
fn example() -> String {
    workspace_file("examples/deploy.yaml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn schedules_tfvars_for_the_example_equal_the_committed_file() {
    let printed = stdout_of(&conveyor(&[
        "--config",
        &example(),
        "schedules",
        "--tfvars",
    ]));
    let committed = std::fs::read_to_string(workspace_file("infra/schedules.auto.tfvars.json"))
        .expect("read infra/schedules.auto.tfvars.json");
    assert_eq!(
        printed, committed,
        "regenerate: conveyor --config examples/deploy.yaml schedules --tfvars > infra/schedules.auto.tfvars.json"
    );
}

#[test]
fn schedules_list_exactly_the_active_scheduled_pipelines_of_the_example() {
    let config = conveyor_core::config::load_file(Path::new(&example())).expect("example config");
    let expected: BTreeSet<String> = config
        .pipelines
        .iter()
        .filter(|p| p.active && p.trigger.schedule.is_some())
        .map(|p| p.name.to_string())
        .collect();
    let printed: serde_json::Value = serde_json::from_str(&stdout_of(&conveyor(&[
        "--config",
        &example(),
        "schedules",
    ])))
    .expect("JSON output");
    let jobs = printed.as_array().expect("a JSON array");
    let listed: BTreeSet<String> = jobs
        .iter()
        .map(|j| j["pipeline"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(listed, expected);
    for job in jobs {
        let pipeline = job["pipeline"].as_str().unwrap_or_default();
        let p = config.pipeline(pipeline).expect("a pipeline of the file");
        assert_eq!(job["name"], format!("conveyor-{pipeline}"));
        assert_eq!(
            job["target"],
            if p.stage.is_some() { "stage" } else { "submit" }
        );
        assert_eq!(
            job["body"],
            serde_json::json!({"pipeline": pipeline, "trigger": "schedule"})
        );
    }
}

#[test]
fn schedules_refuse_an_invalid_file_and_name_the_field() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-schedule.yaml");
    std::fs::write(
        &path,
        "pipelines:\n  - name: a\n    trigger: { schedule: { cron: \"every day\" } }\n    batch: { engine: local, command: \"true\" }\n",
    )
    .expect("write the file");
    let output = conveyor(&["--config", &path.to_string_lossy(), "schedules"]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("trigger.schedule.cron"), "stderr: {stderr}");
}

#[test]
fn terraform_push_filters_follow_the_steps_subscriptions() {
    let path = workspace_file("infra/modules/conveyor/subscriptions.json");
    let text = std::fs::read_to_string(&path).expect("read subscriptions.json");
    let in_terraform: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&text).expect("a map of step to event types");
    let in_code: BTreeMap<String, Vec<String>> = StepName::ALL
        .into_iter()
        .map(|step| {
            let types = subscriptions(step)
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect();
            (step.as_str().to_owned(), types)
        })
        .collect();
    assert_eq!(
        in_terraform, in_code,
        "infra/modules/conveyor/subscriptions.json must follow conveyor_core::steps::subscriptions"
    );
}

#[test]
fn terraform_run_log_schema_follows_the_run_log_columns() {
    let path = workspace_file("infra/modules/conveyor/run_log_schema.json");
    let text = std::fs::read_to_string(&path).expect("read run_log_schema.json");
    let fields: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a BigQuery schema");
    let in_terraform: Vec<(String, String, String)> = fields
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (text("name"), text("type"), text("mode"))
        })
        .collect();
    let in_code: Vec<(String, String, String)> = conveyor_core::ports::RUN_LOG_COLUMNS
        .iter()
        .map(|c| {
            let mode = if c.required { "REQUIRED" } else { "NULLABLE" };
            (c.name.to_owned(), c.ty.to_owned(), mode.to_owned())
        })
        .collect();
    assert_eq!(
        in_terraform, in_code,
        "infra/modules/conveyor/run_log_schema.json must follow RUN_LOG_COLUMNS"
    );
}
