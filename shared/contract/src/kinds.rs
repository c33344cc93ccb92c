//! Every kind of request Conveyor's Google adapters can send (a discovery method id, the
//! resumable upload's chunk, or a CDAP route). `contract-check` fails when a test run did not
//! send one of them through a recording fake or proxy: each must be checked, not assumed.
//! A new call in an adapter belongs here, with a test that makes it.

/// The request kinds, grouped by adapter (`shared/gcp/src/...`).
pub const KINDS: &[&str] = &[
    // bigquery/: load jobs, query jobs (sql engine, message rows), the run log.
    "bigquery.jobs.insert",
    "bigquery.jobs.get",
    "bigquery.jobs.cancel",
    "bigquery.jobs.query",
    "bigquery.jobs.getQueryResults",
    "bigquery.tables.insert",
    "bigquery.tables.get",
    "bigquery.tables.patch",
    "bigquery.tabledata.insertAll",
    // gcs.rs: resumable uploads, reads, metadata, listings, deletes, copies (rewrite).
    "storage.objects.insert",
    crate::check::UPLOAD_CHUNK,
    "storage.objects.get",
    "storage.objects.list",
    "storage.objects.delete",
    "storage.objects.rewrite",
    // pubsub.rs and dead_letter.rs: the event bus, and `conveyor replay`.
    "pubsub.projects.topics.publish",
    "pubsub.projects.subscriptions.pull",
    "pubsub.projects.subscriptions.acknowledge",
    "pubsub.projects.subscriptions.modifyAckDeadline",
    // lineage.rs: OpenLineage run events to Dataplex's Data Lineage API.
    "datalineage.projects.locations.processOpenLineageRunEvent",
    // cloud_identity.rs: the console's `group:` operators.
    "cloudidentity.groups.lookup",
    "cloudidentity.groups.memberships.checkTransitiveMembership",
    "cloudidentity.groups.memberships.lookup",
    // secrets.rs.
    "secretmanager.projects.secrets.versions.access",
    // engines/dataproc_serverless.rs.
    "dataproc.projects.locations.batches.create",
    "dataproc.projects.locations.batches.get",
    "dataproc.projects.regions.operations.cancel",
    // engines/dataproc_cluster.rs.
    "dataproc.projects.regions.clusters.create",
    "dataproc.projects.regions.clusters.get",
    "dataproc.projects.regions.clusters.delete",
    "dataproc.projects.regions.jobs.submit",
    "dataproc.projects.regions.jobs.get",
    "dataproc.projects.regions.jobs.cancel",
    // engines/dataflow_flex.rs.
    "dataflow.projects.locations.flexTemplates.launch",
    "dataflow.projects.locations.jobs.list",
    "dataflow.projects.locations.jobs.get",
    "dataflow.projects.locations.jobs.update",
    "dataflow.projects.locations.jobs.messages.list",
    // engines/cloud_run_job.rs.
    "run.projects.locations.jobs.run",
    "run.projects.locations.jobs.executions.list",
    "run.projects.locations.jobs.executions.get",
    "run.projects.locations.jobs.executions.cancel",
    // engines/data_fusion.rs (CDAP routes, see cdap.rs).
    "cdap.programs.start",
    "cdap.runs.list",
    "cdap.runs.get",
    "cdap.runs.stop",
];
