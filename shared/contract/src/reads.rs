//! Every field of Google's answers that the adapters read, by method, and the check that each
//! exists in the method's response schema: an adapter that reads a field Google never sends
//! reads nothing in production, whatever a fake answers.
//!
//! A path is `a.b.c`; `[]` steps into an array's items (`rows[].f[].v`). Where each is read:
//! `shared/gcp/src/bigquery/mod.rs` (`JobResource`, `query`), `bigquery/run_log.rs`
//! (`ensure_run_log`, `record`), `gcs.rs` (`Resource`, `Listing`), `dead_letter.rs`
//! (`PullResponse`, `PublishResponse`), `secrets.rs` (`Access`), `engines/*.rs` (`text_at`
//! paths). Data Fusion's are CDAP's and checked in `cdap.rs`.

use serde_json::Value;

use crate::Documents;

/// (method id, field path).
pub const READS: &[(&str, &str)] = &[
    ("bigquery.jobs.insert", "status.state"),
    ("bigquery.jobs.insert", "status.errorResult.reason"),
    ("bigquery.jobs.insert", "status.errorResult.message"),
    ("bigquery.jobs.insert", "status.errors[].message"),
    ("bigquery.jobs.insert", "statistics.load.outputRows"),
    ("bigquery.jobs.insert", "jobReference.location"),
    ("bigquery.jobs.get", "status.state"),
    ("bigquery.jobs.get", "status.errorResult.reason"),
    ("bigquery.jobs.get", "status.errorResult.message"),
    ("bigquery.jobs.get", "status.errors[].message"),
    ("bigquery.jobs.get", "statistics.load.outputRows"),
    ("bigquery.jobs.get", "configuration"),
    ("bigquery.jobs.query", "jobReference.jobId"),
    ("bigquery.jobs.query", "jobReference.location"),
    ("bigquery.jobs.query", "errors[].message"),
    ("bigquery.jobs.query", "jobComplete"),
    ("bigquery.jobs.query", "schema.fields[].name"),
    ("bigquery.jobs.query", "rows[].f[].v"),
    ("bigquery.jobs.query", "pageToken"),
    ("bigquery.jobs.getQueryResults", "errors[].message"),
    ("bigquery.jobs.getQueryResults", "jobComplete"),
    ("bigquery.jobs.getQueryResults", "schema.fields[].name"),
    ("bigquery.jobs.getQueryResults", "rows[].f[].v"),
    ("bigquery.jobs.getQueryResults", "pageToken"),
    ("bigquery.tables.get", "schema.fields[].name"),
    ("bigquery.tabledata.insertAll", "insertErrors"),
    ("storage.objects.get", "bucket"),
    ("storage.objects.get", "name"),
    ("storage.objects.get", "generation"),
    ("storage.objects.get", "size"),
    ("storage.objects.get", "md5Hash"),
    ("storage.objects.get", "crc32c"),
    ("storage.objects.get", "etag"),
    ("storage.objects.get", "updated"),
    ("storage.objects.insert", "crc32c"),
    ("storage.objects.insert", "size"),
    ("storage.objects.insert", "generation"),
    ("storage.objects.list", "items[].name"),
    ("storage.objects.list", "items[].generation"),
    ("storage.objects.list", "items[].crc32c"),
    ("storage.objects.list", "nextPageToken"),
    ("pubsub.projects.topics.publish", "messageIds"),
    (
        "pubsub.projects.subscriptions.pull",
        "receivedMessages[].ackId",
    ),
    (
        "pubsub.projects.subscriptions.pull",
        "receivedMessages[].deliveryAttempt",
    ),
    (
        "pubsub.projects.subscriptions.pull",
        "receivedMessages[].message.data",
    ),
    (
        "pubsub.projects.subscriptions.pull",
        "receivedMessages[].message.attributes",
    ),
    (
        "pubsub.projects.subscriptions.pull",
        "receivedMessages[].message.messageId",
    ),
    (
        "pubsub.projects.subscriptions.pull",
        "receivedMessages[].message.publishTime",
    ),
    (
        "secretmanager.projects.secrets.versions.access",
        "payload.data",
    ),
    (
        "secretmanager.projects.secrets.versions.access",
        "payload.dataCrc32c",
    ),
    ("dataproc.projects.locations.batches.get", "state"),
    ("dataproc.projects.locations.batches.get", "stateMessage"),
    ("dataproc.projects.locations.batches.get", "operation"),
    ("dataproc.projects.regions.jobs.get", "status.state"),
    ("dataproc.projects.regions.jobs.get", "status.details"),
    ("dataproc.projects.regions.clusters.get", "status.state"),
    ("dataproc.projects.regions.clusters.get", "status.detail"),
    ("dataflow.projects.locations.jobs.list", "jobs[].id"),
    ("dataflow.projects.locations.jobs.list", "jobs[].name"),
    ("dataflow.projects.locations.jobs.list", "nextPageToken"),
    ("dataflow.projects.locations.flexTemplates.launch", "job.id"),
    ("dataflow.projects.locations.jobs.get", "currentState"),
    ("dataflow.projects.locations.jobs.get", "currentStateTime"),
    (
        "dataflow.projects.locations.jobs.messages.list",
        "jobMessages[].messageText",
    ),
    ("run.projects.locations.jobs.run", "metadata"),
    (
        "run.projects.locations.jobs.executions.list",
        "executions[].name",
    ),
    (
        "run.projects.locations.jobs.executions.list",
        "executions[].template.containers[].env[].name",
    ),
    (
        "run.projects.locations.jobs.executions.list",
        "executions[].template.containers[].env[].value",
    ),
    (
        "run.projects.locations.jobs.executions.list",
        "nextPageToken",
    ),
    (
        "run.projects.locations.jobs.executions.get",
        "conditions[].type",
    ),
    (
        "run.projects.locations.jobs.executions.get",
        "conditions[].state",
    ),
    (
        "run.projects.locations.jobs.executions.get",
        "conditions[].executionReason",
    ),
    (
        "run.projects.locations.jobs.executions.get",
        "conditions[].message",
    ),
    (
        "run.projects.locations.jobs.executions.get",
        "completionTime",
    ),
    ("run.projects.locations.jobs.executions.get", "startTime"),
    ("run.projects.locations.jobs.executions.get", "taskCount"),
    (
        "run.projects.locations.jobs.executions.get",
        "succeededCount",
    ),
    (
        "run.projects.locations.jobs.executions.get",
        "cancelledCount",
    ),
    ("run.projects.locations.jobs.executions.get", "runningCount"),
];

/// Whether `path` leads somewhere in `schema` of `api` (through `$ref`, `[]` into arrays).
fn exists(docs: &Documents, api: &str, schema: &Value, path: &[&str]) -> bool {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        return docs
            .schema(api, name)
            .is_some_and(|s| exists(docs, api, s, path));
    }
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    let (key, into_array) = match first.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (*first, false),
    };
    let Some(mut field) = schema.pointer(&format!("/properties/{key}")) else {
        return false;
    };
    if into_array {
        let resolved = field
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|n| docs.schema(api, n))
            .unwrap_or(field);
        match resolved.get("items") {
            Some(items) => field = items,
            None => return false,
        }
    }
    exists(docs, api, field, rest)
}

/// The reads in `reads` that Google's response schemas do not have, as messages.
pub fn missing(docs: &Documents, reads: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (id, path) in reads {
        let Some((api, schema)) = docs.response_schema(id) else {
            out.push(format!("{id}: no such method, or it answers no body"));
            continue;
        };
        let parts: Vec<&str> = path.split('.').collect();
        let root = serde_json::json!({ "$ref": schema });
        if !exists(docs, api, &root, &parts) {
            out.push(format!("{id}: its answer ({schema}) has no {path}"));
        }
    }
    out
}
