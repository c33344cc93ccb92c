//! A function binary sizes its runtime to the CPUs it may use: pinned to one CPU (Cloud Run's
//! default instance) it runs on its main thread alone; with more it starts a worker per CPU.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conveyor_e2e::{binary, free_port};

/// Starts `conveyor-load` (pinned to CPU 0 when `pinned`), waits for `GET /healthz`, and
/// returns the number of its threads then.
async fn threads_when_ready(pinned: bool) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("conveyor.yaml");
    std::fs::write(
        &config,
        "pipelines:\n  - name: sales\n    trigger: { object: { bucket: landing, pattern: \"in/*.csv\" } }\n    load: { table: ds.sales, format: CSV }\n",
    )
    .expect("config");
    let (mut child, _) = conveyor_e2e::start_listening("conveyor-load", |port| {
        let mut cmd = if pinned {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", "0"]).arg(binary("conveyor-load"));
            c
        } else {
            tokio::process::Command::new(binary("conveyor-load"))
        };
        cmd.env("PORT", port.to_string())
            .env("CONVEYOR_CONFIG", &config)
            .env("CONVEYOR_PROJECT", "test")
            .env("CONVEYOR_EVENTS_TOPIC", "events")
            .env("CONVEYOR_ANONYMOUS", "true")
            .env("CONVEYOR_PUBSUB_ENDPOINT", "http://127.0.0.1:9")
            .env("CONVEYOR_GCS_ENDPOINT", "http://127.0.0.1:9")
            .env("CONVEYOR_BIGQUERY_ENDPOINT", "http://127.0.0.1:9")
            .env("CONVEYOR_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start conveyor-load (taskset from util-linux when pinned)")
    })
    .await;
    let pid = child.id().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let _ = child.kill().await;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

#[tokio::test]
async fn on_one_cpu_a_function_runs_on_one_thread_and_on_more_with_a_worker_per_cpu() {
    assert_eq!(threads_when_ready(true).await, 1, "pinned to one CPU");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cpus > 1 {
        assert!(
            threads_when_ready(false).await > cpus,
            "the main thread and a worker per CPU ({cpus})"
        );
    }
}

/// Runs a function binary on `config` (Google Cloud settings pointing nowhere), waiting at
/// most 30 s for it to exit; its exit status and stderr, or `None` when it kept running.
fn start_with(binary_name: &str, config: &str) -> Option<(std::process::ExitStatus, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("conveyor.yaml");
    std::fs::write(&path, config).expect("config");
    let mut child = Command::new(binary(binary_name))
        .env("PORT", free_port().to_string())
        .env("CONVEYOR_CONFIG", &path)
        .env("CONVEYOR_PROJECT", "test")
        .env("CONVEYOR_EVENTS_TOPIC", "events")
        .env("CONVEYOR_ANONYMOUS", "true")
        .env("CONVEYOR_PUBSUB_ENDPOINT", "http://127.0.0.1:9")
        .env("CONVEYOR_GCS_ENDPOINT", "http://127.0.0.1:9")
        .env("CONVEYOR_BIGQUERY_ENDPOINT", "http://127.0.0.1:9")
        .env("CONVEYOR_LOG", "warn")
        .env_remove("CONVEYOR_POSTGRES_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the function");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return Some((
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_function_missing_a_setting_its_pipeline_file_needs_refuses_to_start_naming_it() {
    let config = "run_log: { table: ops.run_log, postgres: { table: ops.run_log } }\n\
                  pipelines:\n  - name: sales\n    trigger: { object: { bucket: landing, pattern: \"in/*.csv\" } }\n    load: { table: ds.sales, format: CSV }\n";
    let (status, stderr) = start_with("conveyor-log", config)
        .expect("conveyor-log started although no connection string for run_log.postgres is set");
    assert!(!status.success());
    assert!(stderr.contains("CONVEYOR_POSTGRES_URL"), "{stderr}");
    assert!(stderr.contains("run_log.postgres"), "{stderr}");
}

#[test]
fn a_function_whose_pipeline_file_names_an_engine_it_cannot_run_refuses_to_start() {
    let config = "pipelines:\n  - name: nightly\n    trigger: { manual: true }\n    batch: { engine: local, command: \"true\" }\n";
    let (status, stderr) = start_with("conveyor-poll", config)
        .expect("conveyor-poll started although it cannot run `engine: local`");
    assert!(!status.success());
    assert!(
        stderr.contains(
            "pipeline nightly, job batch: `engine: local` runs in the embedded runtime only"
        ),
        "{stderr}"
    );
}
