//! The systems example's message pipelines reach Terraform's variables (every example's
//! validity is checked by the graphs tests).

use std::path::PathBuf;

use crate::common;

fn examples() -> PathBuf {
    common::repo_file("examples")
}

fn conveyor(args: &[&str]) -> (bool, String) {
    let out = common::conveyor(args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_systems_example_lists_its_message_pipeline_for_terraform() {
    let file = examples().join("systems.yaml");
    let (ok, out) = conveyor(&[
        "--config",
        file.to_str().expect("path"),
        "schedules",
        "--tfvars",
    ]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v["message_pipelines"],
        serde_json::json!([{"pipeline": "app_issues", "topic": "mobile-app-issues", "table": "ops.machine_issues"}])
    );
    assert_eq!(v["schedules"][0]["pipeline"], "cerebro_replicator");
    assert_eq!(v["schedules"][0]["target"], "submit");
}
