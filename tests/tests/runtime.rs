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
    let port = free_port();
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(binary("conveyor-load"));
        c
    } else {
        Command::new(binary("conveyor-load"))
    };
    let mut child = cmd
        .env("PORT", port.to_string())
        .env("CONVEYOR_CONFIG", &config)
        .env("CONVEYOR_PROJECT", "test")
        .env("CONVEYOR_EVENTS_TOPIC", "events")
        .env("CONVEYOR_ANONYMOUS", "true")
        .env("CONVEYOR_PUBSUB_ENDPOINT", "http://127.0.0.1:9")
        .env("CONVEYOR_GCS_ENDPOINT", "http://127.0.0.1:9")
        .env("CONVEYOR_BIGQUERY_ENDPOINT", "http://127.0.0.1:9")
        .env("CONVEYOR_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start conveyor-load (taskset from util-linux when pinned)");
    let url = format!("http://127.0.0.1:{port}/healthz");
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        if let Ok(resp) = http.get(&url).send().await {
            assert!(resp.status().is_success(), "{}", resp.status());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "conveyor-load did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let _ = child.kill();
    let _ = child.wait();
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
