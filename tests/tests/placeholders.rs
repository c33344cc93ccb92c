//! Placeholders on the embedded chain (issue 27): the run date's parts and offsets, the data
//! interval of a scheduled run, and `{secret:NAME}`, which reaches the job and nothing else —
//! no log line, run-log row, event or command file holds it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor_core::event::StepName;
use conveyor_e2e::Chain;

/// Every log line written while it is held, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// Every file under `dir`, as text.
fn all_files(dir: &std::path::Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, into);
        } else if let Ok(bytes) = std::fs::read(&path) {
            into.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

const SECRET: &str = "s3cr3t-Value-8c1f";

#[tokio::test]
async fn date_placeholders_and_a_secret_reach_the_job_and_the_secret_nothing_else() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let yaml = r#"
pipelines:
  - name: macros
    trigger: { manual: true, schedule: { cron: "0 2 * * *" } }
    poll: { interval: 50ms }
    jobs:
      - name: dates
        engine: local
        command: "echo {date} {date-1d} {date+7d} {yyyy} {mm} {dd} {data_interval_start} {data_interval_end} >> OUT"
      - name: login
        engine: local
        command: "printf '%s\n' {secret:projects/demo/secrets/api-token} >> OUT"
"#
    .replace("OUT", &out.display().to_string());
    let chain = Chain::start(&yaml).await;
    // The embedded secrets: files under the state directory's `secrets/`.
    let secrets = chain
        .bucket("x")
        .join("../../secrets/projects/demo/secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    std::fs::write(secrets.join("api-token"), format!("{SECRET}\n")).expect("secret");

    // A manual run: its date's day is its interval.
    chain
        .accepted(
            StepName::Submit,
            r#"{"pipeline":"macros","key":"m1","time":"2026-03-01T09:30:00Z"}"#,
        )
        .await;
    chain.settle(Duration::from_secs(30)).await;
    // A scheduled run (Cloud Scheduler's header): from the previous fire to this one.
    let (status, reply) = chain
        .request(
            StepName::Submit,
            "POST",
            "/",
            r#"{"pipeline":"macros"}"#,
            &[
                ("content-type", "application/json"),
                ("x-cloudscheduler-scheduletime", "2026-11-20T02:00:00Z"),
            ],
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{reply}");
    chain.settle(Duration::from_secs(30)).await;

    let lines: Vec<String> = std::fs::read_to_string(&out)
        .expect("job output")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "2026-03-01 2026-02-28 2026-03-08 2026 03 01 2026-03-01T00:00:00Z 2026-03-02T00:00:00Z",
            SECRET,
            "2026-11-20 2026-11-19 2026-11-27 2026 11 20 2026-11-19T02:00:00Z 2026-11-20T02:00:00Z",
            SECRET,
        ]
    );

    // The secret reached the job and nothing else.
    let log = chain.run_log().await;
    assert!(log.len() >= 8, "{} rows", log.len());
    for row in &log {
        let text = format!("{row:?}");
        assert!(
            !text.contains(SECRET),
            "a run-log row holds the secret: {text}"
        );
    }
    for event in chain.dispatched() {
        let text = serde_json::to_string(&event).expect("event");
        assert!(!text.contains(SECRET), "an event holds the secret: {text}");
    }
    let mut state = String::new();
    all_files(&chain.bucket("x").join("../../batches"), &mut state);
    assert!(
        state.contains("CONVEYOR_SECRET_PROJECTS_DEMO_SECRETS_API_TOKEN"),
        "the command reads the variable"
    );
    assert!(!state.contains(SECRET), "a job's files hold the secret");
    let logged = logs.text();
    assert!(
        logged.contains("batch submitted"),
        "the capture saw the chain's logs"
    );
    assert!(!logged.contains(SECRET), "a log line holds the secret");
    chain.stop().await;
}

#[tokio::test]
async fn a_missing_secret_fails_the_job_naming_the_secret() {
    let yaml = r#"
pipelines:
  - name: nosecret
    trigger: { manual: true }
    poll: { interval: 50ms }
    jobs:
      - { name: login, engine: local, command: "echo {secret:projects/demo/secrets/absent}" }
"#;
    let chain = Chain::start(yaml).await;
    chain
        .accepted(StepName::Submit, r#"{"pipeline":"nosecret","key":"k"}"#)
        .await;
    chain.settle(Duration::from_secs(30)).await;
    let log = chain.run_log().await;
    let failed = log
        .iter()
        .find(|r| r.job.as_deref() == Some("login") && r.status == "FAILED")
        .expect("the job failed");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("projects/demo/secrets/absent")),
        "{:?}",
        failed.error
    );
    assert_eq!(chain.batch_dirs(), 0, "nothing ran");
    chain.stop().await;
}
