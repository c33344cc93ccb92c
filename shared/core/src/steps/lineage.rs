//! lineage: the OpenLineage run events (spec 2-0-2) of a Conveyor event, which the log step
//! sends to the [`Lineage`](crate::ports::Lineage) port.
//!
//! A load is one OpenLineage job (`<pipeline>.load`), each of a pipeline's jobs another
//! (`<pipeline>.<job>`, `<pipeline>.batch` for `batch:`), in the namespace of the file's
//! `environment`. Every attempt is one OpenLineage run, its `runId` a UUID derived from
//! Conveyor's run id, the job and the attempt: a redelivered event yields the same one. The
//! pipeline's run is the `parent` facet.
//!
//! | Conveyor event | OpenLineage |
//! |---|---|
//! | a job SUBMITTED | START |
//! | a job SUCCEEDED (after its checks) | COMPLETE |
//! | a job FAILED (CHECK_FAILED included), TIMED_OUT | FAIL, with its error |
//! | a load SUCCEEDED | START (at its start) and COMPLETE |
//! | a load FAILED | START and FAIL |
//! | a job SKIPPED (its `run_if` or `when`) | ABORT |
//! | a run's end after the pipeline's `checks` ran (SUCCEEDED, or FAILED with CHECK_FAILED) | START and COMPLETE or FAIL of `<pipeline>.checks`, reading the checks' tables |
//! | anything else (RUNNING, other run ends) | none |
//!
//! A stage run (`<pipeline>.stage`, job type `STAGE`) is sent by the stage step itself
//! ([`stage_event`]): START once its source is listed, then COMPLETE, or FAIL when an object
//! failed to copy or the run stopped. Inputs: the source (`s3://bucket/folder/`, `gs://…`,
//! `https://…`, a local path as `file`) and, at the end, each source object copied; outputs:
//! each landing `gs://` object written.
//!
//! Inputs: a load's `gs://` object; a `sql` job's source tables (the names after `FROM` and
//! `JOIN` in its query); the tables its checks read. Outputs: a load's table with the declared
//! schema (`schema` facet) and the rows loaded (`outputStatistics`), a `sql` job's destination.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{BatchSpec, Config, Job, Pipeline, SchemaSpec};
use crate::event::{ConveyorEvent, EventType, Status, StepName};
use crate::names::TableRef;
use crate::ports::{RunEvent, TableNaming};

/// The `producer` of every event and facet: this release of Conveyor.
const PRODUCER: &str = concat!(
    env!("CARGO_PKG_REPOSITORY"),
    "/releases/",
    env!("CARGO_PKG_VERSION")
);
const RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const SCHEMA_FACET: &str =
    "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const OUTPUT_STATISTICS_FACET: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
const ERROR_FACET: &str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const JOB_TYPE_FACET: &str =
    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const PARENT_FACET: &str =
    "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet";

/// The OpenLineage job (after the pipeline's name) of a pipeline's own `checks`.
const PIPELINE_CHECKS: &str = "checks";

/// The OpenLineage run events of `event` (none for most events: see the module's table).
pub fn lineage_events(
    event: &ConveyorEvent,
    config: &Config,
    tables: &TableNaming,
) -> Vec<RunEvent> {
    let Some(pipeline) = event
        .pipeline
        .as_ref()
        .and_then(|p| config.pipeline(p.as_str()))
    else {
        return Vec::new();
    };
    let d = &event.detail;
    let ended = |kind: &'static str| (kind, event.time);
    let (job_name, kinds): (String, Vec<(&'static str, DateTime<Utc>)>) = match event.step {
        StepName::Load => {
            let start = ("START", d.started_at.unwrap_or(event.time));
            match event.status {
                Status::Succeeded => ("load".to_owned(), vec![start, ended("COMPLETE")]),
                Status::Failed | Status::TimedOut => {
                    ("load".to_owned(), vec![start, ended("FAIL")])
                }
                _ => return Vec::new(),
            }
        }
        StepName::Submit if event.kind == EventType::RunFinished => {
            // The pipeline's own checks ran just before a run's end whose jobs all
            // SUCCEEDED: one `<pipeline>.checks` run, started and ended at the run's end.
            let checked = !pipeline.checks.is_empty()
                && match event.status {
                    Status::Succeeded => true,
                    Status::Failed => d
                        .error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("CHECK_FAILED")),
                    _ => false,
                };
            if !checked {
                return Vec::new();
            }
            let end = if event.status == Status::Succeeded {
                "COMPLETE"
            } else {
                "FAIL"
            };
            (PIPELINE_CHECKS.to_owned(), vec![ended("START"), ended(end)])
        }
        StepName::Submit | StepName::Poll => {
            let Some(job) = d.job.clone() else {
                return Vec::new();
            };
            match event.status {
                Status::Submitted => (job, vec![ended("START")]),
                Status::Succeeded => (job, vec![ended("COMPLETE")]),
                Status::Failed | Status::TimedOut => (job, vec![ended("FAIL")]),
                // A job that did not run (its `run_if` or `when`): an aborted run of it.
                Status::Skipped => (job, vec![ended("ABORT")]),
                _ => return Vec::new(),
            }
        }
        _ => return Vec::new(),
    };
    let namespace = config.environment.as_str();
    let name = format!("{}.{job_name}", pipeline.name);
    let run_id = run_uuid(&[event.run_id.as_str(), &job_name, &event.attempt.to_string()]);
    let (inputs, outputs) = if event.step == StepName::Load {
        load_datasets(event, pipeline, tables)
    } else {
        job_datasets(event, pipeline, &job_name, tables)
    };
    let job_type = if event.step == StepName::Load {
        "LOAD".to_owned()
    } else {
        d.engine
            .clone()
            .unwrap_or_else(|| "JOB".to_owned())
            .to_uppercase()
    };
    kinds
        .into_iter()
        .map(|(kind, time)| {
            let mut run_facets = serde_json::Map::new();
            run_facets.insert(
                "parent".to_owned(),
                json!({
                    "_producer": PRODUCER,
                    "_schemaURL": PARENT_FACET,
                    "run": { "runId": run_uuid(&[event.run_id.as_str()]) },
                    "job": { "namespace": namespace, "name": pipeline.name.as_str() },
                }),
            );
            if kind == "FAIL" {
                let message = d.error.as_deref().unwrap_or(event.status.as_str());
                run_facets.insert("errorMessage".to_owned(), error_facet(message));
            }
            // A START names what is known before the work; the end adds what it produced.
            let outputs: Vec<Value> = outputs
                .iter()
                .map(|o| {
                    let mut o = o.clone();
                    if kind != "COMPLETE"
                        && let Some(m) = o.as_object_mut()
                    {
                        m.remove("outputFacets");
                    }
                    o
                })
                .collect();
            run_event(
                (kind, time),
                json!({ "runId": run_id, "facets": run_facets }),
                (namespace, &name, &job_type),
                inputs.clone(),
                outputs,
            )
        })
        .collect()
}

/// The OpenLineage dataset of a source address (OpenLineage's naming: the scheme and
/// authority are the namespace, the path the name): `s3://bucket/key` → `s3://bucket`, `key`;
/// `https://host/path` → `https://host`, `/path`; a local path → `file`, the path.
pub(super) fn uri_dataset(uri: &str) -> Value {
    let (namespace, name) = match uri.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let name = if scheme.starts_with("http") {
                format!("/{path}")
            } else if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            };
            (format!("{scheme}://{authority}"), name)
        }
        None => ("file".to_owned(), uri.to_owned()),
    };
    json!({ "namespace": namespace, "name": name })
}

/// What a stage run read and wrote, for its lineage.
#[derive(Debug, Clone, Default)]
pub(super) struct StageLineage {
    /// The source, then the address of each object copied.
    pub(super) inputs: Vec<String>,
    /// The landing objects written.
    pub(super) outputs: Vec<crate::event::ObjectRef>,
}

/// The OpenLineage run event `kind` (START, COMPLETE, FAIL) of stage run `stage_run` of
/// `pipeline`, at `time`; `error` goes in a FAIL's `errorMessage` facet.
pub(super) fn stage_event(
    config: &Config,
    pipeline: &Pipeline,
    stage_run: &crate::names::RunId,
    kind: &str,
    time: DateTime<Utc>,
    seen: &StageLineage,
    error: Option<&str>,
) -> RunEvent {
    let namespace = config.environment.as_str();
    let mut run_facets = serde_json::Map::new();
    if kind == "FAIL" {
        run_facets.insert(
            "errorMessage".to_owned(),
            error_facet(error.unwrap_or("FAILED")),
        );
    }
    let mut inputs: Vec<Value> = Vec::new();
    for uri in &seen.inputs {
        let d = uri_dataset(uri);
        if !inputs.contains(&d) {
            inputs.push(d);
        }
    }
    let outputs: Vec<Value> = seen
        .outputs
        .iter()
        .map(|o| json!({ "namespace": format!("gs://{}", o.bucket), "name": o.name.as_str() }))
        .collect();
    let run_id = run_uuid(&[stage_run.as_str(), "stage"]);
    run_event(
        (kind, time),
        json!({ "runId": run_id, "facets": run_facets }),
        (namespace, &format!("{}.stage", pipeline.name), "STAGE"),
        inputs,
        outputs,
    )
}

/// An OpenLineage run event: `(kind, time)` of `run` (its `runId` and `facets`), of the job
/// `(namespace, name, job type)`, with its input and output datasets.
fn run_event(
    (kind, time): (&str, DateTime<Utc>),
    run: Value,
    (namespace, name, job_type): (&str, &str, &str),
    inputs: Vec<Value>,
    outputs: Vec<Value>,
) -> RunEvent {
    RunEvent::new(json!({
        "eventType": kind,
        "eventTime": time.to_rfc3339_opts(SecondsFormat::Millis, true),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA,
        "run": run,
        "job": {
            "namespace": namespace,
            "name": name,
            "facets": { "jobType": {
                "_producer": PRODUCER,
                "_schemaURL": JOB_TYPE_FACET,
                "processingType": "BATCH",
                "integration": "CONVEYOR",
                "jobType": job_type,
            } },
        },
        "inputs": inputs,
        "outputs": outputs,
    }))
}

/// OpenLineage's `errorMessage` run facet.
fn error_facet(message: &str) -> Value {
    json!({
        "_producer": PRODUCER,
        "_schemaURL": ERROR_FACET,
        "message": message,
        "programmingLanguage": "conveyor",
    })
}

/// A UUID (version 8, RFC 9562's custom layout) from the SHA-256 of `parts`: the same parts
/// always give the same one.
pub fn run_uuid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"conveyor-openlineage");
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn table_dataset(table: &TableRef, tables: &TableNaming) -> Value {
    let name = match (&table.project, &tables.project) {
        (Some(_), _) | (None, None) => table.to_string(),
        (None, Some(p)) => format!("{p}.{}.{}", table.dataset, table.table),
    };
    json!({ "namespace": tables.namespace, "name": name })
}

fn load_datasets(
    event: &ConveyorEvent,
    pipeline: &Pipeline,
    tables: &TableNaming,
) -> (Vec<Value>, Vec<Value>) {
    let d = &event.detail;
    let inputs = d
        .object
        .iter()
        .map(|o| json!({ "namespace": format!("gs://{}", o.bucket), "name": o.name.as_str() }))
        .collect();
    let Some(table) = d.table.as_deref().and_then(|t| TableRef::parse(t).ok()) else {
        return (inputs, Vec::new());
    };
    let mut output = table_dataset(&table, tables);
    if let Some(SchemaSpec::Columns(columns)) = pipeline.load.as_ref().map(|l| &l.schema) {
        let fields: Vec<Value> = columns
            .iter()
            .map(|c| {
                let ty = serde_json::to_value(c.ty)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                json!({ "name": c.name, "type": ty })
            })
            .collect();
        output["facets"] = json!({ "schema": { "_producer": PRODUCER, "_schemaURL": SCHEMA_FACET, "fields": fields } });
    }
    if let Some(rows) = d.rows {
        output["outputFacets"] = row_count(rows);
    }
    (inputs, vec![output])
}

fn row_count(rows: u64) -> Value {
    json!({ "outputStatistics": {
        "_producer": PRODUCER,
        "_schemaURL": OUTPUT_STATISTICS_FACET,
        "rowCount": rows,
    } })
}

fn job_datasets(
    event: &ConveyorEvent,
    pipeline: &Pipeline,
    job_name: &str,
    tables: &TableNaming,
) -> (Vec<Value>, Vec<Value>) {
    let job: Option<&Job> = pipeline.jobs.iter().find(|j| j.name.as_str() == job_name);
    let spec: Option<&BatchSpec> = match job {
        Some(j) => Some(&j.spec),
        None => pipeline.batch.as_ref(),
    };
    let vars = super::submit::table_safe_vars(pipeline, job, &event.run_id, &event.detail);
    let mut read: BTreeSet<String> = BTreeSet::new();
    let mut written: BTreeSet<String> = BTreeSet::new();
    if let Some(BatchSpec::Sql(sql)) = spec
        && let Ok((query, destination)) = sql.rendered(&vars)
    {
        read.extend(source_tables(&query));
        if let Some(t) = destination {
            written.insert(t.to_string());
        }
    }
    let checks: &[crate::config::Check] = match job {
        Some(j) => &j.checks,
        None if job_name == PIPELINE_CHECKS => &pipeline.checks,
        None => &[],
    };
    for check in checks {
        for template in check.templates() {
            if let Ok(text) = crate::config::render_parameter(template, &vars) {
                if check.sql.as_deref() == Some(template) {
                    read.extend(source_tables(&text));
                } else {
                    read.insert(text);
                }
            }
        }
    }
    let parse = |names: BTreeSet<String>| -> Vec<TableRef> {
        names
            .iter()
            .filter_map(|t| TableRef::parse(t).ok())
            .collect()
    };
    let inputs = parse(read)
        .iter()
        .map(|t| table_dataset(t, tables))
        .collect();
    let outputs = parse(written)
        .iter()
        .map(|t| {
            let mut o = table_dataset(t, tables);
            if let Some(rows) = event.detail.rows {
                o["outputFacets"] = row_count(rows);
            }
            o
        })
        .collect();
    (inputs, outputs)
}

/// The `[project.]dataset.table` names after `FROM` and `JOIN` in `sql` (backquotes
/// removed): the tables a query reads, as far as a reading without a parser can tell.
pub fn source_tables(sql: &str) -> BTreeSet<String> {
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = BTreeSet::new();
    for pair in words.windows(2) {
        let keyword = pair[0].to_ascii_uppercase();
        if keyword == "FROM" || keyword == "JOIN" {
            let name = pair[1].trim_matches('`');
            if name.contains('.') && TableRef::parse(name).is_ok() {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_uuids_that_depend_on_every_part() {
        let a = run_uuid(&["r1", "load", "1"]);
        assert_eq!(a, run_uuid(&["r1", "load", "1"]));
        assert_ne!(a, run_uuid(&["r1", "load", "2"]));
        assert_ne!(a, run_uuid(&["r1", "loa", "d1"]));
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert_eq!(&a[14..15], "8", "version 8: {a}");
    }

    #[test]
    fn a_skipped_job_aborts_and_a_run_end_after_the_pipelines_checks_is_their_run() {
        let config = crate::config::parse_str(
            r#"
environment: test
pipelines:
  - name: p
    trigger: { manual: true }
    checks: [{ name: rows, row_count: { table: "ds.t", min: 1 } }]
    jobs:
      - { name: a, engine: local, command: "true" }
      - { name: b, engine: local, command: "true", needs: [a], run_if: one_failed }
"#,
            "t.yaml",
        )
        .expect("config");
        let p = crate::names::PipelineName::parse("p").expect("name");
        let run = crate::names::RunId::derive(&p, &["k"]);
        let event = |kind, status, job: Option<&str>, error: Option<&str>| {
            ConveyorEvent::new(
                kind,
                run.clone(),
                Some(p.clone()),
                StepName::Submit,
                1,
                status,
                crate::event::Detail {
                    job: job.map(str::to_owned),
                    error: error.map(str::to_owned),
                    ..crate::event::Detail::default()
                },
            )
        };
        let tables = TableNaming {
            namespace: "sqlite".to_owned(),
            project: None,
        };
        let kinds = |e: &ConveyorEvent| -> Vec<(String, String)> {
            lineage_events(e, &config, &tables)
                .iter()
                .map(|r| {
                    let v = r.json();
                    (
                        v["eventType"].as_str().unwrap_or_default().to_owned(),
                        v["job"]["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        };
        let skipped = event(EventType::BatchFinished, Status::Skipped, Some("b"), None);
        assert_eq!(kinds(&skipped), [("ABORT".to_owned(), "p.b".to_owned())]);
        let ok = event(EventType::RunFinished, Status::Succeeded, None, None);
        assert_eq!(
            kinds(&ok),
            [
                ("START".to_owned(), "p.checks".to_owned()),
                ("COMPLETE".to_owned(), "p.checks".to_owned())
            ]
        );
        let inputs = lineage_events(&ok, &config, &tables)[0].json()["inputs"].clone();
        assert!(inputs.to_string().contains("ds.t"), "{inputs}");
        let check_failed = event(
            EventType::RunFinished,
            Status::Failed,
            None,
            Some("CHECK_FAILED: check rows: observed 0"),
        );
        assert_eq!(kinds(&check_failed)[1].0, "FAIL");
        let job_failed = event(
            EventType::RunFinished,
            Status::Failed,
            None,
            Some("job a failed"),
        );
        assert!(kinds(&job_failed).is_empty(), "the checks did not run");
    }

    #[test]
    fn source_tables_are_the_names_after_from_and_join() {
        let t = source_tables(
            "SELECT a.x FROM `my-project.raw.orders` a JOIN raw.customers c ON a.id = c.id, (SELECT 1 FROM t)",
        );
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            ["my-project.raw.orders", "raw.customers"]
        );
    }
}
