//! The PostgreSQL run-log sink against a real PostgreSQL server (started by
//! `scripts/postgres.sh` on a free loopback port, with TLS and a password login): rows once
//! per event id over verified TLS, the latest-status view, and the log function answering 503
//! while the server is down and recording everything once after it returns.
//!
//! Without a PostgreSQL server (and without root to install one) these tests skip loudly;
//! under `CI=true` they fail.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use conveyor_core::config::{PgTable, PostgresSink, RunLogSink, SecretRef};
use conveyor_core::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use conveyor_core::names::{JobId, PipelineName, RunId, TableRef};
use conveyor_core::ports::{EventBus, PortError, Ports, RunLogRow, RunLogSinks};
use conveyor_core::steps::{Context, row_for};
use conveyor_e2e::repo;
use conveyor_embedded::{DirSecrets, LocalStore, SqliteWarehouse};
use conveyor_postgres::PostgresSinks;
use tower::ServiceExt;

const URL_SECRET: &str = "projects/test/secrets/runlog-postgres";

/// A server started by `scripts/postgres.sh`, purged on drop.
pub(crate) struct Server {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Server {
    pub(crate) fn start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self {
            dir,
            env: HashMap::new(),
        };
        match server.script("start") {
            Some(0) => {}
            Some(3) if std::env::var("CI").as_deref() != Ok("true") => {
                conveyor_e2e::skipped(
                    "no PostgreSQL server here; the PostgreSQL tests did not run",
                );
                return None;
            }
            other => panic!("scripts/postgres.sh start failed: {other:?}"),
        }
        server.env = std::fs::read_to_string(server.dir.path().join("pg/env"))
            .expect("postgres env")
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Some(server)
    }

    fn script(&self, verb: &str) -> Option<i32> {
        Command::new(repo().join("scripts/postgres.sh"))
            .arg(verb)
            .arg(self.dir.path().join("pg"))
            .status()
            .expect("run scripts/postgres.sh")
            .code()
    }

    fn url(&self, sslmode: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}?sslmode={sslmode}",
            self.env["PG_USER"], self.env["PG_PASSWORD"], self.env["PG_PORT"], self.env["PG_DB"]
        )
    }

    /// A secrets directory whose `URL_SECRET` holds `value`.
    fn secrets(&self, name: &str, value: &str) -> Arc<DirSecrets> {
        let dir = self.dir.path().join(name);
        let file = dir.join(URL_SECRET);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, value).expect("secret");
        Arc::new(DirSecrets::new(dir))
    }

    /// The sink reading the connection string, with the server's CA, from a secret.
    pub(crate) fn verified(&self) -> PostgresSinks {
        let ca = std::fs::read_to_string(&self.env["PG_CA"]).expect("ca");
        let value = serde_json::json!({"url": self.url("verify-full"), "ca": ca}).to_string();
        PostgresSinks::new(self.secrets("verified", &value), None)
    }

    /// A direct client for checking what the sink wrote.
    async fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, conn) = tokio_postgres::connect(&self.url("disable"), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client.query(sql, &[]).await.expect("query")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.script("purge");
    }
}

pub(crate) fn sink() -> RunLogSink {
    RunLogSink::Postgres(PostgresSink {
        url_secret: Some(SecretRef::parse(URL_SECRET).expect("secret")),
        table: PgTable::parse("ops.run_log").expect("table"),
    })
}

fn event(run: &str, status: Status, attempt: u32) -> ConveyorEvent {
    let pipeline = PipelineName::parse("replicator").expect("pipeline");
    let run_id = RunId::derive(&pipeline, &[run]);
    let kind = match status {
        Status::Submitted => EventType::BatchSubmitted,
        Status::Running => EventType::BatchRunning,
        _ => EventType::BatchFinished,
    };
    let job_id = JobId::derive("batch", &run_id, attempt);
    ConveyorEvent::new(
        kind,
        run_id,
        Some(pipeline),
        StepName::Poll,
        attempt,
        status,
        Detail {
            job_id: Some(job_id),
            engine: Some("ssh".into()),
            table: Some("ops.td_copy".into()),
            ..Detail::default()
        },
    )
}

fn row(e: &ConveyorEvent) -> RunLogRow {
    row_for(e, "test")
}

#[tokio::test]
async fn rows_reach_postgres_once_per_event_over_verified_tls() {
    let Some(server) = Server::start() else {
        return;
    };
    let sinks = Arc::new(server.verified());
    let submitted = row(&event("r1", Status::Submitted, 1));
    // Four concurrent deliveries of one event, then a redelivery.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (sinks, r) = (sinks.clone(), submitted.clone());
        tasks.push(tokio::spawn(async move { sinks.record(&sink(), &r).await }));
    }
    for t in tasks {
        t.await.expect("task").expect("record");
    }
    sinks.record(&sink(), &submitted).await.expect("again");
    for status in [Status::Running, Status::Succeeded] {
        sinks
            .record(&sink(), &row(&event("r1", status, 1)))
            .await
            .expect("record");
    }
    let rows = server
        .query("SELECT event_id, status FROM ops.run_log ORDER BY td_timestamp")
        .await;
    let statuses: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(statuses, vec!["SUBMITTED", "RUNNING", "SUCCEEDED"]);
    let latest = server
        .query("SELECT status, \"dbName\", \"tableName\", dataproc_job_id, attempt FROM ops.run_log_latest_status")
        .await;
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].get::<_, String>(0), "SUCCEEDED");
    assert_eq!(
        latest[0].get::<_, Option<String>>(1).as_deref(),
        Some("ops")
    );
    assert_eq!(
        latest[0].get::<_, Option<String>>(2).as_deref(),
        Some("td_copy")
    );
    assert_eq!(
        latest[0].get::<_, Option<String>>(3),
        submitted.dataproc_job_id
    );
    assert_eq!(latest[0].get::<_, i64>(4), 1);
    let tls = server
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'conveyor'",
        )
        .await;
    assert!(!tls.is_empty(), "the sink's connection is open");
    assert!(
        tls.iter().all(|r| r.get::<_, bool>(0)),
        "the sink connects over TLS"
    );
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let Some(server) = Server::start() else {
        return;
    };
    let sinks = PostgresSinks::new(server.secrets("no-ca", &server.url("require")), None);
    let err = sinks
        .record(&sink(), &row(&event("r2", Status::Submitted, 1)))
        .await
        .expect_err("an unverified server");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(
        !err.to_string().contains(&server.env["PG_PASSWORD"]),
        "{err}"
    );
    let tables = server
        .query("SELECT 1 FROM information_schema.tables WHERE table_schema = 'ops'")
        .await;
    assert!(tables.is_empty(), "nothing was written");
}

/// Accepts every event (the log step publishes only its rejections).
#[derive(Default)]
struct Bus(Mutex<Vec<ConveyorEvent>>);

#[async_trait]
impl EventBus for Bus {
    async fn publish(&self, e: &ConveyorEvent) -> Result<(), PortError> {
        self.0.lock().expect("bus").push(e.clone());
        Ok(())
    }
}

fn push(e: &ConveyorEvent, message_id: u32) -> String {
    let data = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(e).expect("event json"));
    serde_json::json!({
        "subscription": "projects/test/subscriptions/log",
        "message": {"data": data, "attributes": e.pubsub_attributes(), "messageId": message_id.to_string()},
    })
    .to_string()
}

/// A PostgreSQL server (`None` where none can start: the test skips) and a context whose run
/// log is SQLite in a new folder and whose PostgreSQL sink is the server's `ops.run_log`, for
/// `pipelines` (the file's `pipelines:` list); the SQLite warehouse and the folder too.
fn with_postgres(
    pipelines: &str,
) -> Option<(Server, Context, Arc<SqliteWarehouse>, tempfile::TempDir)> {
    let server = Server::start()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_path = dir.path();
    let store = LocalStore::new(dir_path.join("buckets")).expect("store");
    let sqlite =
        Arc::new(SqliteWarehouse::open(dir_path.join("warehouse"), Arc::new(store)).expect("db"));
    let yaml = format!(
        "run_log:\n  table: conveyor.run_log\n  postgres: {{ url_secret: {URL_SECRET}, table: ops.run_log }}\npipelines:{pipelines}"
    );
    let config = conveyor_core::config::parse_str(&yaml, "test.yaml").expect("config");
    let ctx = Context::new(
        Arc::new(config),
        Ports {
            run_log: sqlite.clone(),
            sinks: Arc::new(server.verified()),
            bus: Arc::new(Bus::default()),
            ..Ports::unwired()
        },
    );
    Some((server, ctx, sqlite, dir))
}

#[tokio::test]
async fn the_log_function_asks_for_redelivery_while_postgres_is_down_and_loses_nothing() {
    let Some((server, ctx, sqlite, _dir)) = with_postgres(
        r#"
  - name: replicator
    batch: { engine: local, command: "true" }
"#,
    ) else {
        return;
    };
    let post = |body: String| {
        let router = conveyor_core::http::router(StepName::Log, ctx.clone());
        async move {
            let req = Request::post("/")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("request");
            router.oneshot(req).await.expect("response").status()
        }
    };
    let first = event("r3", Status::Submitted, 1);
    let second = event("r3", Status::Succeeded, 1);
    assert_eq!(post(push(&first, 1)).await, StatusCode::OK);

    assert_eq!(server.script("stop"), Some(0));
    assert_eq!(
        post(push(&second, 2)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "PostgreSQL down: Pub/Sub must redeliver"
    );
    assert_eq!(
        post(push(&second, 2)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "still down"
    );

    assert_eq!(server.script("start"), Some(0));
    assert_eq!(
        post(push(&second, 2)).await,
        StatusCode::OK,
        "the redelivery goes through"
    );
    assert_eq!(
        post(push(&first, 1)).await,
        StatusCode::OK,
        "a late duplicate is harmless"
    );

    let pg: Vec<String> = server
        .query("SELECT status FROM ops.run_log ORDER BY td_timestamp")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        pg,
        vec!["SUBMITTED", "SUCCEEDED"],
        "each transition once in PostgreSQL"
    );
    let table = TableRef::parse("conveyor.run_log").expect("table");
    let mut local: Vec<String> = conveyor_core::ports::RunLog::recent(sqlite.as_ref(), &table, 100)
        .await
        .expect("run log")
        .into_iter()
        .map(|r| r.status)
        .collect();
    local.reverse();
    assert_eq!(
        local,
        vec!["SUBMITTED", "SUCCEEDED"],
        "and once in the run log"
    );
}

#[tokio::test]
async fn the_latest_status_view_says_failed_when_a_later_job_failed_after_an_earlier_jobs_retry() {
    let Some(server) = Server::start() else {
        return;
    };
    let sinks = server.verified();
    let cases = conveyor_e2e::runs::run_cases();
    for case in &cases {
        for r in &case.rows {
            sinks.record(&sink(), r).await.expect("record");
        }
    }
    let latest = server
        .query("SELECT run_id, event_id, status, run_status FROM ops.run_log_latest_status")
        .await;
    assert_eq!(latest.len(), cases.len(), "one row per run");
    for case in &cases {
        let row = latest
            .iter()
            .find(|r| r.get::<_, String>(0) == case.run_id())
            .unwrap_or_else(|| panic!("{}: no row in the view", case.name));
        let state = case.state();
        assert_eq!(state.status, case.expected, "{}: RunState", case.name);
        assert_eq!(
            row.get::<_, String>(3),
            case.expected,
            "{}: the view's run_status",
            case.name
        );
        assert_eq!(
            row.get::<_, String>(1),
            state.event_id,
            "{}: the view shows the row that decides the state",
            case.name
        );
    }
}

/// `jobs[].run_log` and `db` / `table` (the source documents' replicator): the cloud step's
/// rows go to the run-log table only, the on-prem step's to the PostgreSQL table as well, and
/// each names the replicated database and table.
#[tokio::test]
async fn each_jobs_rows_go_where_its_run_log_says_naming_its_database_and_table() {
    let Some((server, ctx, sqlite, _dir)) = with_postgres(
        r#"
  - name: replicator
    trigger: { object: { bucket: landing, pattern: "cerebro/{db}/{table_name}/*.csv" } }
    jobs:
      - { name: cloud_copy, engine: local, command: "true", run_log: [bigquery], db: "{db}", table: "{table_name}" }
      - { name: onprem_copy, engine: local, command: "true", run_log: [postgres], db: "{db}", table: "{table_name}" }
"#,
    ) else {
        return;
    };
    let router = conveyor_core::http::router(StepName::Log, ctx.clone());
    let pipeline = PipelineName::parse("replicator").expect("pipeline");
    let run_id = RunId::derive(&pipeline, &["cerebro"]);
    let mut n = 0;
    for job in ["cloud_copy", "onprem_copy"] {
        for status in [Status::Submitted, Status::Succeeded] {
            let e = ConveyorEvent::new(
                if status == Status::Submitted {
                    EventType::BatchSubmitted
                } else {
                    EventType::BatchFinished
                },
                run_id.clone(),
                Some(pipeline.clone()),
                StepName::Poll,
                1,
                status,
                Detail {
                    job_id: Some(JobId::derive(job, &run_id, 1)),
                    engine: Some("local".into()),
                    job: Some(job.into()),
                    vars: [
                        ("db".to_owned(), "dev1_groupondw".to_owned()),
                        ("table_name".to_owned(), "ref_attr_class_dev".to_owned()),
                        ("date".to_owned(), "2026-11-20".to_owned()),
                    ]
                    .into(),
                    ..Detail::default()
                },
            );
            n += 1;
            let req = Request::post("/")
                .header("content-type", "application/json")
                .body(Body::from(push(&e, n)))
                .expect("request");
            let status = router
                .clone()
                .oneshot(req)
                .await
                .expect("response")
                .status();
            assert_eq!(status, StatusCode::OK);
        }
    }

    let pg: Vec<(String, String, Option<String>, Option<String>)> = server
        .query(
            "SELECT job, status, \"dbName\", \"tableName\" FROM ops.run_log ORDER BY td_timestamp",
        )
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let named = |job: &str, status: &str| {
        (
            job.to_owned(),
            status.to_owned(),
            Some("dev1_groupondw".to_owned()),
            Some("ref_attr_class_dev".to_owned()),
        )
    };
    assert_eq!(
        pg,
        vec![
            named("onprem_copy", "SUBMITTED"),
            named("onprem_copy", "SUCCEEDED")
        ],
        "only the on-prem step's rows reach PostgreSQL, naming the replicated table"
    );
    let table = TableRef::parse("conveyor.run_log").expect("table");
    let mut local: Vec<(String, String, Option<String>, Option<String>)> =
        conveyor_core::ports::RunLog::recent(sqlite.as_ref(), &table, 100)
            .await
            .expect("run log")
            .into_iter()
            .map(|r| (r.job.unwrap_or_default(), r.status, r.db_name, r.table_name))
            .collect();
    local.reverse();
    assert_eq!(
        local,
        vec![
            named("cloud_copy", "SUBMITTED"),
            named("cloud_copy", "SUCCEEDED"),
            named("onprem_copy", "SUBMITTED"),
            named("onprem_copy", "SUCCEEDED"),
        ],
        "the run-log table keeps every row (the chain follows it), each naming the table"
    );
}
