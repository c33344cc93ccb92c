//! The event bus port's contract, one set of behaviour tests run against every adapter: the
//! embedded in-process bus and Pub/Sub on the official emulator (through the recording
//! proxy). Every event published is received, whole: its kind, run, step, attempt, status,
//! time and detail, whatever the adapter.
//!
//! Without the Pub/Sub emulator the Google run skips loudly; under `CI=true` it fails.

use std::time::{Duration, Instant};

use conveyor_core::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use conveyor_core::names::{JobId, PipelineName, RunId};
use conveyor_core::ports::EventBus;
use conveyor_e2e::{Emulators, PROJECT};
use conveyor_embedded::InProcessBus;
use conveyor_gcp::{GcpAuth, PubSubBus, PubSubRest};
use serde_json::json;

/// Three events of one run, as its steps publish them.
fn events() -> Vec<ConveyorEvent> {
    let p = PipelineName::parse("sales").expect("pipeline");
    let run = RunId::derive(&p, &["conformance"]);
    let job = JobId::derive("batch", &run, 1);
    let loaded = ConveyorEvent::new(
        EventType::TableLoaded,
        run.clone(),
        Some(p.clone()),
        StepName::Load,
        1,
        Status::Succeeded,
        Detail {
            rows: Some(3),
            ..Detail::default()
        },
    );
    let submitted = ConveyorEvent::new(
        EventType::BatchSubmitted,
        run.clone(),
        Some(p.clone()),
        StepName::Submit,
        1,
        Status::Submitted,
        Detail {
            job_id: Some(job.clone()),
            ..Detail::default()
        },
    );
    let failed = ConveyorEvent::new(
        EventType::StepFailed,
        run,
        Some(p),
        StepName::Poll,
        1,
        Status::Failed,
        Detail {
            job_id: Some(job),
            error: Some("exit status 3 — ünïcode kept".into()),
            ..Detail::default()
        },
    );
    vec![loaded, submitted, failed]
}

/// `events` as their JSON (what a subscriber reads), by id: a comparison that does not
/// depend on delivery order.
fn by_id(mut events: Vec<ConveyorEvent>) -> Vec<serde_json::Value> {
    events.sort_by_key(ConveyorEvent::id);
    events
        .iter()
        .map(|e| serde_json::to_value(e).expect("event JSON"))
        .collect()
}

/// Publishes the events on `bus` and checks that `receive` (called until it has them all, or
/// 30 s) gives each back whole, once.
async fn conforms(bus: &dyn EventBus, mut receive: impl AsyncFnMut() -> Vec<ConveyorEvent>) {
    let published = events();
    for e in &published {
        bus.publish(e).await.expect("publish");
    }
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < published.len() {
        assert!(
            Instant::now() < deadline,
            "received {} of {} events: {received:#?}",
            received.len(),
            published.len()
        );
        received.extend(receive().await);
    }
    assert_eq!(by_id(received), by_id(published));
}

#[tokio::test]
async fn the_in_process_bus_keeps_the_bus_contract() {
    let (bus, mut rx) = InProcessBus::new();
    conforms(&bus, async || rx.recv().await.into_iter().collect()).await;
    assert!(rx.try_recv().is_err(), "each event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_on_the_emulator_keeps_the_bus_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start-pubsub"],
        "the bus conformance on the Pub/Sub emulator",
    ) else {
        return;
    };
    emu.topic("conveyor-events").await;
    emu.subscription("received", "conveyor-events", json!({}))
        .await;
    let bus = PubSubBus::new(
        &format!("projects/{PROJECT}/topics/conveyor-events"),
        Some(&emu.wire.pubsub),
        &GcpAuth::Anonymous,
    )
    .expect("bus");
    let rest = PubSubRest::new(PROJECT, Some(&emu.pubsub), GcpAuth::Anonymous);
    conforms(&bus, async || {
        let pulled = rest.pull("received", 10).await.expect("pull");
        let mut got = Vec::new();
        for m in &pulled {
            let event: ConveyorEvent = serde_json::from_slice(&m.data).expect("an event");
            // The attributes a push filter or a subscriber reads without the data.
            for (k, v) in event.attributes() {
                assert_eq!(m.attributes.get(k).map(String::as_str), Some(&*v), "{k}");
            }
            got.push(event);
        }
        if !pulled.is_empty() {
            let ids: Vec<String> = pulled.iter().map(|m| m.ack_id.clone()).collect();
            rest.acknowledge("received", &ids).await.expect("ack");
        }
        got
    })
    .await;
}
