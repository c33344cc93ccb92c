//! `conveyor replay`: show what waits in the dead-letter subscription and re-publish the
//! chosen messages, each once, recording every replay in the run log.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use conveyor_core::names::{TableRef, short_hash};
use conveyor_core::ports::{RunLogQuery, RunLogRow};
use conveyor_gcp::{GcpAuth, PubSubRest, PulledMessage};
use serde_json::json;

use crate::runlog::{RunLogArgs, optional_config};

/// The status of a replay's run-log row.
pub(crate) const REPLAYED: &str = "REPLAYED";

/// `conveyor replay`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The dead-letter subscription (Terraform creates `conveyor-events-dead-letter`).
    #[arg(
        long,
        env = "CONVEYOR_DEAD_LETTER_SUBSCRIPTION",
        default_value = "conveyor-events-dead-letter"
    )]
    pub(crate) subscription: String,
    /// Where Conveyor events are re-published (the services' CONVEYOR_EVENTS_TOPIC).
    #[arg(long, env = "CONVEYOR_EVENTS_TOPIC", default_value = "conveyor-events")]
    pub(crate) topic: String,
    /// Where dead-lettered Cloud Storage notifications are re-published (Terraform's
    /// `conveyor-gcs-notifications`); without it they are shown and left in place.
    #[arg(long)]
    pub(crate) notifications_topic: Option<String>,
    /// Re-publish the message with this id (repeatable).
    #[arg(long = "id")]
    pub(crate) ids: Vec<String>,
    /// Re-publish every message pulled.
    #[arg(long, conflicts_with = "ids")]
    pub(crate) all: bool,
    /// Pull at most this many messages.
    #[arg(long, default_value_t = 100)]
    pub(crate) max: usize,
    /// How long a pull waits for messages: a pull that brings none in this time ends the
    /// listing.
    #[arg(long, default_value = "5s", value_parser = crate::humantime_duration)]
    pub(crate) pull_wait: std::time::Duration,
    /// Pub/Sub API root (the emulator's `http://127.0.0.1:PORT`).
    #[arg(long, env = "CONVEYOR_PUBSUB_ENDPOINT", hide = true)]
    pub(crate) pubsub_endpoint: Option<String>,
    #[command(flatten)]
    pub(crate) log: RunLogArgs,
}

/// What a dead-lettered message is, for people and for routing.
struct Seen {
    message: PulledMessage,
    kind: String,
    run_id: Option<String>,
    pipeline: Option<String>,
}

fn describe(message: PulledMessage) -> Seen {
    let a = &message.attributes;
    let data: Option<serde_json::Value> = serde_json::from_slice(&message.data).ok();
    let kind = a
        .get("ce-type")
        .cloned()
        .or_else(|| a.get("eventType").map(|t| format!("gcs {t}")))
        .unwrap_or_else(|| "unknown".to_owned());
    let field = |k: &str| {
        data.as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    Seen {
        kind,
        run_id: field("run_id"),
        pipeline: field("pipeline"),
        message,
    }
}

fn preview(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let mut s: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        s.push('…');
    }
    s
}

async fn already_replayed(
    log: &dyn conveyor_core::ports::RunLog,
    table: &TableRef,
    run_id: &str,
    message_id: &str,
) -> anyhow::Result<Option<String>> {
    let query = RunLogQuery {
        run_id: Some(run_id.to_owned()),
        statuses: vec![REPLAYED.to_owned()],
        ..RunLogQuery::default()
    };
    let rows = match log.rows(table, &query).await {
        Ok(rows) => rows,
        Err(conveyor_core::ports::PortError::NotFound(_)) => Vec::new(),
        Err(e) => anyhow::bail!("cannot read the run log: {e}"),
    };
    let needle = format!("\"message_id\":\"{message_id}\"");
    Ok(rows
        .into_iter()
        .find(|r| r.detail.contains(&needle))
        .map(|r| r.td_timestamp.to_rfc3339()))
}

async fn choose(seen: &[Seen], args: &ReplayArgs) -> anyhow::Result<Vec<String>> {
    if args.all {
        return Ok(seen.iter().map(|s| s.message.message_id.clone()).collect());
    }
    if !args.ids.is_empty() {
        return Ok(args.ids.clone());
    }
    if !std::io::stdin().is_terminal() {
        println!("(listing only: pass --all or --id MESSAGE_ID to re-publish)");
        return Ok(Vec::new());
    }
    println!("re-publish which? message ids separated by spaces, `all`, or nothing for none:");
    let line = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).map(|_| s)
    })
    .await
    .context("reading the answer")??;
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    if words.iter().any(|w| w == "all") {
        return Ok(seen.iter().map(|s| s.message.message_id.clone()).collect());
    }
    Ok(words)
}

pub(crate) async fn replay(config_path: &Path, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let Some(project) = args.log.project.clone().filter(|_| !args.log.local) else {
        anyhow::bail!(
            "replay reads the production dead-letter subscription: give --project (or \
             CONVEYOR_PROJECT); the embedded runtime records its dead letters in the run log"
        );
    };
    let config = optional_config(config_path)?;
    let log = args
        .log
        .open(config.as_deref(), Path::new(".conveyor"))
        .await?;
    let table = config
        .as_ref()
        .map(|c| c.run_log.table.clone())
        .or_else(|| log.tables.first().cloned())
        .context("no run-log table")?;
    let environment = config
        .as_ref()
        .map(|c| c.environment.clone())
        .unwrap_or_default();
    conveyor_gcp::install_crypto_provider();
    let auth = if args.log.anonymous {
        anyhow::ensure!(
            args.pubsub_endpoint.is_some(),
            "CONVEYOR_ANONYMOUS is for emulators: set CONVEYOR_PUBSUB_ENDPOINT too"
        );
        GcpAuth::Anonymous
    } else {
        GcpAuth::application_default().map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let pubsub = PubSubRest::new(&project, args.pubsub_endpoint.as_deref(), auth)
        .with_pull_wait(args.pull_wait);
    let subscription = pubsub.full_name("subscriptions", &args.subscription);

    let mut pulled = Vec::new();
    for _ in 0..20 {
        if pulled.len() >= args.max {
            break;
        }
        let batch = pubsub
            .pull(&subscription, args.max - pulled.len())
            .await
            .map_err(|e| anyhow::anyhow!("cannot pull {subscription}: {e}"))?;
        if batch.is_empty() {
            break;
        }
        pulled.extend(batch);
    }
    if pulled.is_empty() {
        println!("{subscription} is empty: nothing to replay");
        return Ok(ExitCode::SUCCESS);
    }
    let seen: Vec<Seen> = pulled.into_iter().map(describe).collect();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "message_id",
            "published",
            "kind",
            "pipeline",
            "run_id",
            "from",
            "deliveries",
            "data",
        ]);
    for s in &seen {
        let a = &s.message.attributes;
        t.add_row([
            s.message.message_id.clone(),
            s.message.publish_time.clone(),
            s.kind.clone(),
            s.pipeline.clone().unwrap_or_default(),
            s.run_id.clone().unwrap_or_default(),
            a.get("CloudPubSubDeadLetterSourceSubscription")
                .cloned()
                .unwrap_or_default(),
            a.get("CloudPubSubDeadLetterSourceDeliveryCount")
                .cloned()
                .or(s.message.delivery_attempt.map(|n| n.to_string()))
                .unwrap_or_default(),
            preview(&s.message.data),
        ]);
    }
    println!("{} message(s) in {subscription}:\n{t}", seen.len());

    let chosen = choose(&seen, args).await?;
    for id in &chosen {
        if !seen.iter().any(|s| &s.message.message_id == id) {
            println!("{id}: not among the messages pulled; skipped");
        }
    }
    let mut acked = Vec::new();
    let mut released = Vec::new();
    let (mut replayed, mut skipped) = (0, 0);
    for s in &seen {
        let m = &s.message;
        if !chosen.contains(&m.message_id) {
            released.push(m.ack_id.clone());
            continue;
        }
        let topic = if m.attributes.contains_key("eventType") {
            match &args.notifications_topic {
                Some(t) => t.clone(),
                None => {
                    println!(
                        "{}: a Cloud Storage notification; pass --notifications-topic to re-publish it (left in place)",
                        m.message_id
                    );
                    released.push(m.ack_id.clone());
                    continue;
                }
            }
        } else {
            args.topic.clone()
        };
        let run_id = s
            .run_id
            .clone()
            .unwrap_or_else(|| format!("replay-{}", short_hash(&[&m.message_id])));
        if let Some(at) =
            already_replayed(log.run_log.as_ref(), &table, &run_id, &m.message_id).await?
        {
            println!(
                "{}: already replayed at {at}; acknowledged, not published again",
                m.message_id
            );
            acked.push(m.ack_id.clone());
            skipped += 1;
            continue;
        }
        let mut attributes: BTreeMap<String, String> = m
            .attributes
            .iter()
            .filter(|(k, _)| !k.starts_with("CloudPubSubDeadLetter"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        attributes.insert("conveyor-replay-of".to_owned(), m.message_id.clone());
        let new_id = pubsub
            .publish(&topic, &m.data, &attributes)
            .await
            .map_err(|e| anyhow::anyhow!("{}: cannot re-publish to {topic}: {e}", m.message_id))?;
        let now = Utc::now();
        let row = RunLogRow {
            td_timestamp: now,
            last_modified_at: now,
            environment: environment.clone(),
            status: REPLAYED.to_owned(),
            event_id: short_hash(&["replay", &subscription, &m.message_id]),
            run_id: run_id.clone(),
            pipeline: s.pipeline.clone(),
            step: "replay".to_owned(),
            attempt: 1,
            started_at: Some(now),
            finished_at: Some(now),
            detail: json!({
                "message_id": m.message_id,
                "subscription": subscription,
                "topic": pubsub.full_name("topics", &topic),
                "published_as": new_id,
                "kind": s.kind,
                "source_subscription": m.attributes.get("CloudPubSubDeadLetterSourceSubscription"),
            })
            .to_string(),
            ..RunLogRow::default()
        };
        log.run_log.record(&table, &row).await.map_err(|e| {
            anyhow::anyhow!(
                "{}: re-published as {new_id}, but the run log did not record it: {e}",
                m.message_id
            )
        })?;
        println!("{}: re-published to {topic} as {new_id}", m.message_id);
        acked.push(m.ack_id.clone());
        replayed += 1;
    }
    pubsub
        .acknowledge(&subscription, &acked)
        .await
        .map_err(|e| anyhow::anyhow!("cannot acknowledge the replayed messages: {e}"))?;
    if let Err(e) = pubsub.release(&subscription, &released).await {
        println!(
            "(could not give the other messages back at once: {e}; they return after the ack deadline)"
        );
    }
    println!(
        "{replayed} re-published, {skipped} already replayed before, {} left in {subscription}",
        released.len()
    );
    Ok(ExitCode::SUCCESS)
}
