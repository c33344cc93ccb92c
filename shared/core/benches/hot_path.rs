//! The hot path of every function: a Pub/Sub push envelope is parsed, routed to its step, and
//! the step runs against in-memory ports that answer at once. This is Conveyor's own cost per
//! request, without any backend latency.
//!
//! `cargo bench -p conveyor --bench hot_path`
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use conveyor_core::config;
use conveyor_core::event::{ConveyorEvent, StepName};
use conveyor_core::inbound::parse_http;
use conveyor_core::names::{BucketName, JobId, ObjectName, TableRef};
use conveyor_core::ports::{
    BatchEngine, BatchRequest, ByteStream, EventBus, JobState, LoadJob, LoadState, LoadStatus,
    ObjectMeta, ObjectStore, PortError, Ports, RunLog, RunLogQuery, RunLogRow, Submitted,
    Warehouse,
};
use conveyor_core::steps::{self, Context};
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;

struct Instant;

#[async_trait]
impl ObjectStore for Instant {
    async fn delete(
        &self,
        _: &BucketName,
        _: &ObjectName,
        _: Option<&str>,
    ) -> Result<bool, PortError> {
        Ok(false)
    }
    async fn put(
        &self,
        _: &BucketName,
        _: &ObjectName,
        _: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        Err(PortError::permanent("unused"))
    }
    async fn open(&self, _: &BucketName, _: &ObjectName) -> Result<ByteStream, PortError> {
        Err(PortError::permanent("unused"))
    }
    async fn head(&self, _: &BucketName, _: &ObjectName) -> Result<Option<ObjectMeta>, PortError> {
        Ok(None)
    }
    async fn list(&self, _: &BucketName, _: &str) -> Result<Vec<ObjectMeta>, PortError> {
        Ok(Vec::new())
    }
    async fn create_new(
        &self,
        _: &BucketName,
        _: &ObjectName,
        _: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        Ok(None)
    }
}

#[async_trait]
impl EventBus for Instant {
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError> {
        std::hint::black_box(
            serde_json::to_vec(event).map_err(|e| PortError::permanent(e.to_string()))?,
        );
        Ok(())
    }
}

#[async_trait]
impl Warehouse for Instant {
    async fn load(&self, _: &LoadJob, _: Duration) -> Result<LoadStatus, PortError> {
        Ok(LoadStatus {
            state: LoadState::Done { rows: 6 },
            adopted: false,
        })
    }
    async fn load_state(&self, _: &JobId) -> Result<LoadStatus, PortError> {
        Ok(LoadStatus {
            state: LoadState::Done { rows: 6 },
            adopted: true,
        })
    }
    async fn read_table(
        &self,
        _: &TableRef,
        _: usize,
    ) -> Result<Vec<std::collections::BTreeMap<String, String>>, PortError> {
        Ok(Vec::new())
    }
    async fn row_count(&self, _: &TableRef) -> Result<u64, PortError> {
        Ok(6)
    }
}

#[async_trait]
impl BatchEngine for Instant {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted: false,
        })
    }
    async fn state(&self, _: &config::BatchSpec, _: &JobId) -> Result<JobState, PortError> {
        Ok(JobState {
            log: None,
            state: "RUNNING".into(),
            terminal: false,
            error: None,
        })
    }
    async fn cancel(&self, _: &config::BatchSpec, _: &JobId) -> Result<(), PortError> {
        Ok(())
    }
}

#[async_trait]
impl RunLog for Instant {
    async fn record(&self, _: &TableRef, _: &RunLogRow) -> Result<(), PortError> {
        Ok(())
    }
    async fn rows(&self, _: &TableRef, _: &RunLogQuery) -> Result<Vec<RunLogRow>, PortError> {
        Ok(Vec::new())
    }
    async fn open_batches(
        &self,
        _: &TableRef,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<RunLogRow>, PortError> {
        Ok(Vec::new())
    }
}

const CONFIG: &str = r#"
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "sales/{date}/*.csv" } }
    load: { table: "analytics.sales_{date}", format: CSV }
    batch: { engine: local, command: "true" }
"#;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let instant = Arc::new(Instant);
    let ctx = Context::new(
        Arc::new(config::parse_str(CONFIG, "bench.yaml").unwrap()),
        Ports {
            store: instant.clone(),
            bus: instant.clone(),
            warehouse: instant.clone(),
            batch: instant.clone(),
            run_log: instant,
            sources: Arc::new(conveyor_core::ports::Unwired),
            sinks: Arc::new(conveyor_core::ports::Unwired),
            rows: Arc::new(conveyor_core::ports::Unwired),
            secrets: Arc::new(conveyor_core::ports::Unwired),
            alerts: None,
            lineage: None,
            notifier: None,
        },
    );
    let data = base64::engine::general_purpose::STANDARD
        .encode(br#"{"name":"sales/2026-11-20/orders.csv","bucket":"landing","size":"316","generation":"1763700000000000"}"#);
    let body = format!(
        r#"{{"subscription":"projects\/p\/subscriptions\/to-load","message":{{"data":"{data}","attributes":{{"eventType":"OBJECT_FINALIZE","bucketId":"landing","objectId":"sales/2026-11-20/orders.csv","objectGeneration":"1763700000000000","payloadFormat":"JSON_API_V1"}},"messageId":"2","publishTime":"2026-11-21T00:00:00Z"}}}}"#
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );

    c.bench_function("parse GCS notification envelope", |b| {
        b.iter(|| parse_http(&headers, body.as_bytes()))
    });
    c.bench_function("envelope -> route -> load step (in-memory ports)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (_, inbound) = parse_http(&headers, body.as_bytes());
                steps::handle(StepName::Load, &ctx, inbound.unwrap())
                    .await
                    .unwrap()
            })
        })
    });
    let loaded = {
        let (_, inbound) = parse_http(&headers, body.as_bytes());
        let _ = inbound;
        let p = conveyor_core::names::PipelineName::parse("sales").unwrap();
        let run = conveyor_core::names::RunId::derive(&p, &["x"]);
        ConveyorEvent::new(
            conveyor_core::event::EventType::TableLoaded,
            run,
            Some(p),
            StepName::Load,
            1,
            conveyor_core::event::Status::Succeeded,
            conveyor_core::event::Detail {
                table: Some("analytics.sales_x".into()),
                ..Default::default()
            },
        )
    };
    let event_body = format!(
        r#"{{"subscription":"s","message":{{"data":"{}","attributes":{{"ce-type":"dev.conveyor.table.loaded"}},"messageId":"3"}}}}"#,
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&loaded).unwrap())
    );
    c.bench_function("envelope -> route -> submit step (in-memory ports)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (_, inbound) = parse_http(&headers, event_body.as_bytes());
                steps::handle(StepName::Submit, &ctx, inbound.unwrap())
                    .await
                    .unwrap()
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
