//! Running a load job without holding the request: insert it under its deterministic id (an
//! existing job is adopted), wait a short while ([`StepOptions::load_wait`]), and hand a job
//! still running to the poll tick (`dev.conveyor.load.running`). `dev.conveyor.table.loaded` is
//! published when the job is DONE, by whichever step sees it first.
//!
//! More objects than one job takes ([`MAX_LOAD_URIS`]) are split into several jobs,
//! `load-1`, `load-2`, …: the first with the pipeline's write disposition, the others
//! appending; the run's load is done when all are.
//!
//! [`StepOptions::load_wait`]: crate::steps::StepOptions::load_wait

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::super::{Context, Outcome, StepError, publish};
use super::{LOAD_JOB, table_for};
use crate::config::{LoadSpec, Pipeline, SchemaSpec, SchemaUpdateOption, WriteDisposition};
use crate::event::{Detail, EventType, ObjectRef, Status, StepName};
use crate::format::Format;
use crate::names::{JobId, ObjectName, RunId, TableRef};
use crate::ports::{LoadJob, LoadState, MAX_LOAD_URIS, PortError};

/// Where `load.batch.bad_files: quarantine` moves a bad file (its name kept below): a
/// segment starting with `_`, so the default `load.ignore` never loads it again.
pub(super) const QUARANTINE: &str = "_quarantine/";

/// The run var naming the fields that later files of a batch added to its schema.
pub(super) const SCHEMA_ADDED: &str = "schema_added";

/// How many times one chunk sets files aside and tries again without them.
const MAX_QUARANTINE_ROUNDS: usize = 5;

/// The most text the run log keeps about a run's quarantined files.
const MAX_QUARANTINE_TEXT: usize = 4000;

/// Whether `message` names `uri` (not merely a longer name that starts with it).
fn names(message: &str, uri: &str) -> bool {
    message.match_indices(uri).any(|(at, _)| {
        message[at + uri.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    })
}

/// The id of load job `k` (1-based) of `run_id`.
pub(super) fn load_job_id(run_id: &RunId, k: usize) -> JobId {
    JobId::derive("load", run_id, u32::try_from(k).unwrap_or(u32::MAX))
}

/// How a run's load stands once its request has published what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finished {
    /// Every job is DONE (or there was nothing new to load).
    Loaded,
    /// A job is still running: the poll tick finishes it.
    Running,
    /// The load failed; the failure is recorded.
    Failed,
}

/// Loads `sources` for `run_id` and publishes what happened: `dev.conveyor.table.loaded`,
/// `dev.conveyor.load.running` (the poll tick finishes it) or `dev.conveyor.step.failed`.
#[expect(clippy::too_many_arguments, reason = "one load's whole context")]
pub(super) async fn load(
    ctx: &Context,
    pipeline: &Pipeline,
    spec: &LoadSpec,
    run_id: &RunId,
    sources: Vec<ObjectRef>,
    captures: &BTreeMap<String, String>,
    detail: Detail,
    outcome: &mut Outcome,
) -> Result<Finished, StepError> {
    let mut loader = match Loader::new(ctx, pipeline, spec, run_id, captures, detail) {
        Ok(l) => l,
        Err(detail) => {
            failed(ctx, pipeline, run_id, *detail, outcome).await?;
            return Ok(Finished::Failed);
        }
    };
    for chunk in sources.chunks(MAX_LOAD_URIS) {
        loader.chunk(chunk.to_vec()).await?;
    }
    loader.finish(outcome).await
}

/// One run's load, fed its sources in chunks of at most [`MAX_LOAD_URIS`] (one job each), so
/// a caller listing a large folder page by page never holds it whole.
pub(super) struct Loader<'a> {
    ctx: &'a Context,
    pipeline: &'a Pipeline,
    spec: &'a LoadSpec,
    run_id: &'a RunId,
    table: TableRef,
    /// The one partition loaded (`load.partition.decorator`).
    partition_id: Option<String>,
    detail: Detail,
    jobs: usize,
    rows: u64,
    running: bool,
    failure: Option<String>,
    /// Whether a job has loaded (or is loading): the next ones append.
    wrote: bool,
    /// Jobs that failed on quarantined files and were replaced by a job without them.
    replaced: Vec<usize>,
    /// The quarantined files, each with where it went and why.
    quarantined: Vec<String>,
}

impl<'a> Loader<'a> {
    /// A load of `run_id` into `spec`'s table for `captures`; the detail to record when the
    /// table cannot be named.
    pub(super) fn new(
        ctx: &'a Context,
        pipeline: &'a Pipeline,
        spec: &'a LoadSpec,
        run_id: &'a RunId,
        captures: &BTreeMap<String, String>,
        mut detail: Detail,
    ) -> Result<Self, Box<Detail>> {
        detail.job = Some(LOAD_JOB.to_owned());
        let table = match table_for(spec, captures) {
            Ok(t) => t,
            Err(e) => {
                detail.error = Some(e);
                return Err(Box::new(detail));
            }
        };
        let partition_id = match spec
            .partition
            .as_ref()
            .and_then(|p| p.partition_id(captures))
        {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => {
                detail.table = Some(table.to_string());
                detail.error = Some(format!("cannot name the partition: {e}"));
                return Err(Box::new(detail));
            }
        };
        detail.table = Some(table.to_string());
        detail.vars.insert("table".to_owned(), table.to_string());
        if let Some(id) = &partition_id {
            detail.vars.insert("partition".to_owned(), id.clone());
        }
        detail.job_id = Some(load_job_id(run_id, 1));
        Ok(Self {
            ctx,
            pipeline,
            spec,
            run_id,
            table,
            partition_id,
            detail,
            jobs: 0,
            rows: 0,
            running: false,
            wrote: false,
            replaced: Vec::new(),
            quarantined: Vec::new(),
            failure: None,
        })
    }

    /// Starts the next job, on `sources` (at most [`MAX_LOAD_URIS`]).
    ///
    /// # Errors
    /// A transient error when the warehouse cannot take the job now.
    pub(super) async fn chunk(&mut self, sources: Vec<ObjectRef>) -> Result<(), StepError> {
        if self.failure.is_some() || sources.is_empty() {
            return Ok(());
        }
        let mut sources = sources;
        let mut rounds = 0;
        loop {
            let Some(message) = self.start(sources.clone()).await? else {
                return Ok(());
            };
            // `load.batch.bad_files: quarantine`: the files the error names are set aside and
            // the others load in a job of their own (the failed job loaded nothing).
            if self.spec.quarantines() && rounds < MAX_QUARANTINE_ROUNDS {
                let (bad, good): (Vec<ObjectRef>, Vec<ObjectRef>) = sources
                    .iter()
                    .cloned()
                    .partition(|s| names(&message, &s.uri()));
                if !bad.is_empty() && !good.is_empty() {
                    self.quarantine(&bad, &message).await?;
                    self.replaced.push(self.jobs);
                    sources = good;
                    rounds += 1;
                    continue;
                }
            }
            self.failure = Some(message);
            return Ok(());
        }
    }

    /// Moves `bad` under [`QUARANTINE`] and records each with its reason.
    async fn quarantine(&mut self, bad: &[ObjectRef], message: &str) -> Result<(), StepError> {
        for source in bad {
            let dest = ObjectName::parse(&format!("{QUARANTINE}{}", source.name)).map_err(|e| {
                StepError::Rejected(format!(
                    "cannot name the quarantine of {}: {e}",
                    source.uri()
                ))
            })?;
            let uri = source.uri();
            let reason = message
                .split("; ")
                .find(|part| names(part, &uri))
                .unwrap_or(message);
            let reason: String = reason.chars().take(300).collect();
            warn!(table = %self.table, source = %uri, reason = %reason, "bad file quarantined");
            match super::on_success::move_object(self.ctx, source, &dest).await {
                Ok(_) => {}
                Err(StepError::Rejected(e)) => {
                    warn!(source = %uri, error = %e, "cannot quarantine")
                }
                Err(e) => return Err(e),
            }
            self.quarantined
                .push(format!("{uri} -> gs://{}/{dest}: {reason}", source.bucket));
        }
        Ok(())
    }

    /// Starts the next job on `sources`: `Some(message)` when it failed for good.
    async fn start(&mut self, sources: Vec<ObjectRef>) -> Result<Option<String>, StepError> {
        self.jobs += 1;
        let spec = self.spec;
        let mut job = LoadJob {
            job_id: load_job_id(self.run_id, self.jobs),
            sources,
            table: self.table.clone(),
            format: spec.format,
            // The first job that loads takes the pipeline's disposition (a quarantined job
            // before it loaded nothing); the others append.
            write: if self.wrote {
                WriteDisposition::WriteAppend
            } else {
                spec.write_disposition
            },
            create: spec.create_disposition,
            schema: spec.schema.clone(),
            partition: spec.partition.clone(),
            partition_id: self.partition_id.clone(),
            clustering: spec.clustering.clone(),
            csv: spec.csv_options(),
            compression: spec.compression,
            max_bad_records: spec.max_bad_records,
            allow_quoted_newlines: spec.allow_quoted_newlines,
            schema_update_options: spec.schema_update_options.clone(),
            max_record_bytes: spec.max_record_bytes,
            generations_checked: spec.check_generation,
        };
        self.widen(&mut job).await?;
        super::on_success::keep_sources(
            self.ctx,
            self.pipeline,
            self.run_id,
            self.jobs,
            &job.sources,
        )
        .await?;
        match self
            .ctx
            .ports
            .warehouse
            .load(&job, self.ctx.options.load_wait)
            .await
        {
            Ok(status) => match status.state {
                LoadState::Done { rows } => {
                    info!(table = %self.table, job_id = %job.job_id, rows, adopted = status.adopted, "loaded");
                    self.rows += rows;
                    self.wrote = true;
                }
                LoadState::Running => {
                    self.running = true;
                    self.wrote = true;
                }
                LoadState::Failed { message, transient } => {
                    if transient {
                        warn!(table = %self.table, error = %message, "load failed; will be retried");
                        return Err(StepError::Transient(message));
                    }
                    return Ok(Some(message));
                }
            },
            Err(e @ PortError::Transient(_)) => {
                warn!(table = %self.table, error = %e, "load failed; will be retried");
                return Err(StepError::Transient(e.to_string()));
            }
            Err(e @ PortError::Precondition(_)) => {
                // The bytes the warehouse opened are no longer the generation the arrival
                // named (overwritten while it waited): nothing was loaded. Redelivered, the
                // arrival's generation is checked again and recorded as superseded; the newer
                // generation's own arrival loads the new content, once.
                warn!(table = %self.table, error = %e, "source changed since its arrival; redelivered to check its generation");
                return Err(StepError::Transient(e.to_string()));
            }
            Err(e) => return Ok(Some(e.to_string())),
        }
        Ok(None)
    }

    /// Schema addition across the job's files ([`super::fields`]): several NDJSON files with
    /// `schema: autodetect`, a later one with a key the first lacks → the union as an explicit
    /// schema, with `ALLOW_FIELD_ADDITION` where BigQuery takes it (WRITE_APPEND, or
    /// WRITE_TRUNCATE of one partition; a truncated table takes the new schema anyway). The
    /// added keys are recorded in the run's `schema_added`.
    async fn widen(&mut self, job: &mut LoadJob) -> Result<(), StepError> {
        if job.schema != SchemaSpec::Autodetect
            || job.format != Format::Ndjson
            || job.sources.len() < 2
        {
            return Ok(());
        }
        let Some(union) = super::fields::union(self.ctx.ports.store.as_ref(), &job.sources).await?
        else {
            return Ok(());
        };
        info!(table = %self.table, job_id = %job.job_id, added = ?union.added, "fields of later files added to the job's schema");
        let takes_options = match job.write {
            WriteDisposition::WriteAppend => true,
            WriteDisposition::WriteTruncate => job.partition_id.is_some(),
            WriteDisposition::WriteEmpty => false,
        };
        // Rows added to an existing table: the explicit schema names its columns first (as
        // the table has them), then the keys it lacks; BigQuery refuses a schema that drops
        // one of its columns.
        let mut columns = union.columns;
        let mut new_keys = union.added;
        if takes_options
            && let Some(existing) = self
                .ctx
                .ports
                .warehouse
                .table_columns(&job.table)
                .await
                .map_err(StepError::from_port)?
        {
            let have = |name: &str| existing.iter().any(|c| c.name.eq_ignore_ascii_case(name));
            columns.retain(|c| !have(&c.name));
            new_keys.retain(|k| !have(k));
            columns.splice(0..0, existing);
        }
        job.schema = SchemaSpec::Columns(columns);
        if takes_options
            && !job
                .schema_update_options
                .contains(&SchemaUpdateOption::AllowFieldAddition)
        {
            job.schema_update_options
                .push(SchemaUpdateOption::AllowFieldAddition);
        }
        let mut added: Vec<String> = self
            .detail
            .vars
            .get(SCHEMA_ADDED)
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        for name in new_keys {
            if !added.contains(&name) {
                added.push(name);
            }
        }
        if !added.is_empty() {
            self.set_var(SCHEMA_ADDED, added.join(","));
        }
        Ok(())
    }

    /// Sets a value of the run (recorded with its events).
    pub(super) fn set_var(&mut self, name: &str, value: String) {
        self.detail.vars.insert(name.to_owned(), value);
    }

    /// Publishes what happened: loaded, still running, or failed.
    ///
    /// # Errors
    /// A transient error when the event cannot be published.
    pub(super) async fn finish(self, outcome: &mut Outcome) -> Result<Finished, StepError> {
        let Self {
            ctx,
            pipeline,
            run_id,
            table,
            mut detail,
            jobs,
            rows,
            running,
            failure,
            replaced,
            quarantined,
            ..
        } = self;
        if jobs > 1 {
            detail.vars.insert("load_jobs".to_owned(), jobs.to_string());
        }
        if !replaced.is_empty() {
            let list: Vec<String> = replaced.iter().map(ToString::to_string).collect();
            detail
                .vars
                .insert("replaced_jobs".to_owned(), list.join(","));
        }
        if !quarantined.is_empty() {
            detail.vars.insert(
                "quarantined_files".to_owned(),
                quarantined.len().to_string(),
            );
            let mut text = quarantined.join("; ");
            if text.len() > MAX_QUARANTINE_TEXT {
                let mut end = MAX_QUARANTINE_TEXT;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str(" …");
            }
            detail.vars.insert("quarantined".to_owned(), text);
        }
        if let Some(e) = failure {
            detail.error = Some(e);
            failed(ctx, pipeline, run_id, detail, outcome).await?;
            return Ok(Finished::Failed);
        }
        if jobs == 0 {
            detail.error = Some("nothing to load: no object matches the pattern".to_owned());
            failed(ctx, pipeline, run_id, detail, outcome).await?;
            return Ok(Finished::Failed);
        }
        if running {
            info!(table = %table, run_id = %run_id, "load job still running; the poll tick finishes it");
            outcome.summary = format!("loading into {table}; the poll tick finishes the job");
            let ev = ctx.event(
                EventType::LoadRunning,
                run_id.clone(),
                Some(pipeline.name.clone()),
                StepName::Load,
                1,
                Status::Running,
                detail,
            );
            publish(ctx, outcome, ev).await?;
            return Ok(Finished::Running);
        }
        detail.rows = Some(rows);
        if let Some(e) = super::on_success::after_done(ctx, pipeline, run_id).await? {
            detail.vars.insert("on_success_error".to_owned(), e);
        }
        outcome.summary = format!("loaded {rows} rows into {table}");
        let ev = ctx.event(
            EventType::TableLoaded,
            run_id.clone(),
            Some(pipeline.name.clone()),
            StepName::Load,
            1,
            Status::Succeeded,
            detail,
        );
        publish(ctx, outcome, ev).await?;
        Ok(Finished::Loaded)
    }
}

pub(super) async fn failed(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    detail: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    warn!(pipeline = %pipeline.name, run_id = %run_id, error = ?detail.error, "load failed permanently");
    outcome.summary = format!(
        "load failed: {}",
        detail.error.as_deref().unwrap_or("no error given")
    );
    let ev = ctx.event(
        EventType::StepFailed,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Load,
        1,
        Status::Failed,
        detail,
    );
    publish(ctx, outcome, ev).await
}

/// The state of a run's load jobs (all chunks): Done with their rows when every one is.
///
/// # Errors
/// The warehouse's error reading a job.
pub(in crate::steps) async fn load_state_event(
    ctx: &Context,
    run_id: &RunId,
    detail: &Detail,
) -> Result<LoadState, PortError> {
    let n: usize = detail
        .vars
        .get("load_jobs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    // Jobs that failed on quarantined files: the jobs after them loaded the rest.
    let replaced: Vec<usize> = detail
        .vars
        .get("replaced_jobs")
        .map(|l| l.split(',').filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    let mut rows = 0;
    let mut running = false;
    for k in (1..=n).filter(|k| !replaced.contains(k)) {
        match ctx
            .ports
            .warehouse
            .load_state(&load_job_id(run_id, k))
            .await?
            .state
        {
            LoadState::Done { rows: r } => rows += r,
            LoadState::Running => running = true,
            failed @ LoadState::Failed { .. } => return Ok(failed),
        }
    }
    Ok(if running {
        LoadState::Running
    } else {
        LoadState::Done { rows }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::SchemaUpdateOption;
    use crate::names::{BucketName, PipelineName};
    use crate::ports::{ObjectStore as _, Ports};
    use crate::testing::{DoneJobs, MemoryStore};

    /// The job a load of `files` into a table with `write` hands the warehouse, and the run's
    /// `schema_added`.
    async fn job_for(write: &str, files: &[(&str, &str)]) -> (LoadJob, Option<String>) {
        job_into(write, files, None).await
    }

    /// [`job_for`] into a table that has `columns` (`None`: no table yet).
    async fn job_into(
        write: &str,
        files: &[(&str, &str)],
        columns: Option<Vec<crate::format::Column>>,
    ) -> (LoadJob, Option<String>) {
        let config = crate::config::parse_str(
            &format!(
                "pipelines:\n  - name: p\n    trigger: {{ object: {{ bucket: landing, pattern: \"in/{{d}}/*.json\" }} }}\n    load: {{ table: ds.t, format: NDJSON, write_disposition: {write}, batch: {{ marker: _SUCCESS }} }}\n"
            ),
            "t.yaml",
        )
        .expect("config");
        let store = Arc::new(MemoryStore::default());
        let warehouse = Arc::new(DoneJobs {
            jobs: Mutex::default(),
            columns,
        });
        let ctx = Context::new(
            Arc::new(config),
            Ports {
                store: store.clone(),
                warehouse: warehouse.clone(),
                ..Ports::unwired()
            },
        );
        let bucket = BucketName::parse("landing").expect("bucket");
        let mut sources = Vec::new();
        for (name, text) in files {
            let meta = store
                .put(
                    &bucket,
                    &ObjectName::parse(name).expect("name"),
                    super::super::window::body(text.as_bytes().to_vec()),
                )
                .await
                .expect("put");
            sources.push(meta.object);
        }
        let pipeline = &ctx.config.pipelines[0];
        let spec = pipeline.load.as_ref().expect("load");
        let run_id = RunId::derive(&PipelineName::parse("p").expect("name"), &["x"]);
        let mut loader = Loader::new(
            &ctx,
            pipeline,
            spec,
            &run_id,
            &BTreeMap::new(),
            Detail::default(),
        )
        .expect("loader");
        loader.chunk(sources).await.expect("chunk");
        let added = loader.detail.vars.get(SCHEMA_ADDED).cloned();
        let job = warehouse.jobs.lock().expect("lock")[0].clone();
        (job, added)
    }

    #[tokio::test]
    async fn a_later_file_with_a_new_key_sends_the_union_with_field_addition_where_bigquery_takes_it()
     {
        let files = [
            ("in/d1/a.json", "{\"id\":1}\n"),
            ("in/d1/b.json", "{\"id\":2,\"country\":\"fr\"}\n"),
        ];
        let (job, added) = job_for("WRITE_APPEND", &files).await;
        let SchemaSpec::Columns(columns) = &job.schema else {
            panic!("an explicit schema: {:?}", job.schema)
        };
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "country"]);
        assert_eq!(
            job.schema_update_options,
            [SchemaUpdateOption::AllowFieldAddition]
        );
        assert_eq!(added.as_deref(), Some("country"));
        // A truncated table takes the new schema; BigQuery refuses the option there.
        let (job, _) = job_for("WRITE_TRUNCATE", &files).await;
        assert!(matches!(job.schema, SchemaSpec::Columns(_)));
        assert!(job.schema_update_options.is_empty());
        // No new key: autodetect, as before.
        let (job, added) = job_for(
            "WRITE_APPEND",
            &[
                ("in/d1/a.json", "{\"id\":1}\n"),
                ("in/d1/b.json", "{\"id\":2}\n"),
            ],
        )
        .await;
        assert_eq!(job.schema, SchemaSpec::Autodetect);
        assert!(job.schema_update_options.is_empty());
        assert_eq!(added, None);
    }

    /// Issue 26: a batch appending to a table whose column its files lack sends that column
    /// too (BigQuery refuses an explicit schema that drops one: "missing in new schema").
    #[tokio::test]
    async fn a_union_schema_keeps_the_existing_tables_columns_first() {
        use crate::format::{Column, ColumnType};
        let column = |name: &str, ty| Column {
            name: name.to_owned(),
            ty,
            nullable: true,
        };
        let table = vec![
            column("id", ColumnType::Int64),
            column("legacy", ColumnType::String),
        ];
        let files = [
            ("in/d1/a.json", "{\"id\":1}\n"),
            (
                "in/d1/b.json",
                "{\"id\":2,\"COUNTRY\":\"fr\",\"Legacy\":\"x\"}\n",
            ),
        ];
        let (job, added) = job_into("WRITE_APPEND", &files, Some(table.clone())).await;
        let SchemaSpec::Columns(columns) = &job.schema else {
            panic!("an explicit schema: {:?}", job.schema)
        };
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["id", "legacy", "COUNTRY"],
            "the table's columns as it has them, then the new keys (names match without case)"
        );
        assert_eq!(
            job.schema_update_options,
            [SchemaUpdateOption::AllowFieldAddition]
        );
        assert_eq!(
            added.as_deref(),
            Some("COUNTRY"),
            "a key the table has is not added"
        );
        // A truncated table takes the batch's schema: the table's columns are not read.
        let (job, _) = job_into("WRITE_TRUNCATE", &files, Some(table)).await;
        let SchemaSpec::Columns(columns) = &job.schema else {
            panic!("an explicit schema: {:?}", job.schema)
        };
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "COUNTRY", "Legacy"]);
    }
}
