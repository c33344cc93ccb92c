//! `load.batch.marker`: when an object whose file name is the marker (`_SUCCESS`) arrives,
//! every object of its folder that matches the pattern (and is data) is loaded in ONE job
//! (BigQuery takes a list of source URIs; above 10,000 files the load is split). Parts that
//! arrive first are acknowledged and wait; the order of arrivals does not matter, since the
//! folder is listed when the marker arrives. The run is the marker's generation: a second
//! delivery of the marker adopts the same job and never loads twice.
//!
//! The listing is read page by page and the jobs started chunk by chunk, so a folder of any
//! size is never held whole.

use std::collections::BTreeMap;

use chrono::Utc;
use tracing::instrument;

use super::super::{Context, Outcome, StepError};
use super::job::{Loader, failed};
use super::{LOAD_JOB, run_vars};
use crate::config::Pipeline;
use crate::event::{Detail, ObjectRef};
use crate::names::RunId;
use crate::ports::MAX_LOAD_URIS;

/// Loads the folder `marker` completes.
#[instrument(skip_all, fields(pipeline = %pipeline.name, marker = %marker.uri()))]
pub(super) async fn load_folder(
    ctx: &Context,
    pipeline: &Pipeline,
    marker: &ObjectRef,
    captures: BTreeMap<String, String>,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let (Some(spec), Some(trigger)) = (&pipeline.load, &pipeline.trigger.object) else {
        return Ok(());
    };
    let folder = marker.name.as_str().rsplit_once('/').map_or("", |(f, _)| f);
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let run_id = RunId::derive(
        &pipeline.name,
        &[marker.bucket.as_str(), folder, "marker", &marker.generation],
    );
    let detail = Detail {
        object: Some(marker.clone()),
        started_at: Some(Utc::now()),
        vars: run_vars(&captures),
        job: Some(LOAD_JOB.to_owned()),
        ..Detail::default()
    };
    let mut loader = match Loader::new(ctx, pipeline, spec, &run_id, &captures, detail) {
        Ok(l) => l,
        Err(detail) => return failed(ctx, pipeline, &run_id, *detail, outcome).await,
    };
    let mut chunk = Vec::new();
    let mut files = 0usize;
    let mut token = None;
    loop {
        let page = ctx
            .ports
            .store
            .list_page(&marker.bucket, &prefix, token)
            .await
            .map_err(StepError::from_port)?;
        for meta in page.objects {
            let name = meta.object.name.as_str();
            // The pattern's file part stays in its folder, so deeper names do not match.
            if name == marker.name.as_str()
                || trigger.pattern.captures(name).is_none()
                || spec.ignores(name)
            {
                continue;
            }
            chunk.push(meta.object);
            files += 1;
            if chunk.len() == MAX_LOAD_URIS {
                loader.chunk(std::mem::take(&mut chunk)).await?;
            }
        }
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    loader.chunk(chunk).await?;
    loader.set_var("files", files.to_string());
    loader.finish(outcome).await
}
