//! `load.batch.marker`: when an object whose file name is the marker (`_SUCCESS`) arrives,
//! every object of its folder that matches the pattern (and is data) is loaded in ONE job
//! (BigQuery takes a list of source URIs; above 10,000 files the load is split). Parts that
//! arrive first are acknowledged and wait; the order of arrivals does not matter, since the
//! folder is listed when the marker arrives. The run is the marker's generation: a second
//! delivery of the marker adopts the same job and never loads twice.
//!
//! Each marker's run records the parts it loads, with their generations, in a manifest
//! (`_conveyor/markers/PIPELINE/FOLDER/RUN`, written before its jobs start). A later marker of
//! the same folder (a rewritten `_SUCCESS`, a watcher's rescan after a restart) loads only the
//! parts no earlier manifest lists, and when there is none it is acknowledged as a duplicate:
//! a part generation is loaded once however often its folder is marked. With
//! `write_disposition: WRITE_TRUNCATE` (or `WRITE_EMPTY`) a marker replaces the table, so it
//! loads the whole folder again. A redelivery of the same marker loads its own manifest
//! (the jobs adopt what the first delivery started).
//!
//! The listing is read page by page; the manifest holds the folder's names (about a hundred
//! bytes a part), and the jobs are started chunk by chunk.

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use tracing::{info, instrument};

use super::super::{Context, Outcome, StepError};
use super::job::{Finished, Loader, failed};
use super::window::{body, read_json};
use super::{LOAD_JOB, run_vars};
use crate::config::{LoadBatch, MarkerCovers, Pipeline, WriteDisposition};
use crate::event::{Detail, ObjectRef};
use crate::names::{ObjectName, RunId, short_hash};
use crate::ports::MAX_LOAD_URIS;
use crate::run_origin::RunOrigin;

/// The run of `marker`'s folder: its generation's.
pub(super) fn marker_run_id(pipeline: &Pipeline, marker: &ObjectRef) -> RunId {
    let folder = marker.name.as_str().rsplit_once('/').map_or("", |(f, _)| f);
    RunId::for_origin(
        &pipeline.name,
        &RunOrigin::Marker {
            bucket: marker.bucket.as_str(),
            folder,
            generation: &marker.generation,
        },
    )
}

/// Loads the folder `marker` completes.
#[instrument(skip_all, fields(pipeline = %pipeline.name, marker = %marker.uri()))]
pub(super) async fn load_folder(
    ctx: &Context,
    pipeline: &Pipeline,
    marker: &ObjectRef,
    captures: BTreeMap<String, String>,
    outcome: &mut Outcome,
) -> Result<Finished, StepError> {
    let (Some(spec), Some(trigger)) = (&pipeline.load, &pipeline.trigger.object) else {
        return Ok(Finished::Loaded);
    };
    let folder = marker.name.as_str().rsplit_once('/').map_or("", |(f, _)| f);
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let run_id = marker_run_id(pipeline, marker);
    let detail = Detail {
        object: Some(marker.clone()),
        started_at: Some(Utc::now()),
        vars: run_vars(&captures),
        job: Some(LOAD_JOB.to_owned()),
        ..Detail::default()
    };
    let mut loader = match Loader::new(ctx, pipeline, spec, &run_id, &captures, detail) {
        Ok(l) => l,
        Err(detail) => {
            failed(ctx, pipeline, &run_id, *detail, outcome).await?;
            return Ok(Finished::Failed);
        }
    };
    let store = &ctx.ports.store;
    let manifests = format!(
        "{}markers/{}/{}/",
        crate::INTERNAL_PREFIX,
        pipeline.name,
        short_hash(&[marker.bucket.as_str(), folder])
    );
    let manifest_name = ObjectName::parse(&format!("{manifests}{run_id}"))
        .map_err(|e| StepError::Rejected(e.to_string()))?;
    let (parts, earlier, redelivered) =
        match read_json::<Vec<ObjectRef>>(ctx, &marker.bucket, &manifest_name).await? {
            // A redelivery of this marker: the parts its first delivery chose.
            Some(parts) => (parts, 0, true),
            None => {
                // What earlier markers of this folder loaded, unless this load replaces the table.
                let mut loaded = HashSet::new();
                if spec.write_disposition == WriteDisposition::WriteAppend {
                    for meta in store
                        .list(&marker.bucket, &manifests)
                        .await
                        .map_err(StepError::from_port)?
                    {
                        if let Some(earlier) =
                            read_json::<Vec<ObjectRef>>(ctx, &marker.bucket, &meta.object.name)
                                .await?
                        {
                            loaded.extend(
                                earlier
                                    .into_iter()
                                    .map(|o| (o.name.as_str().to_owned(), o.generation)),
                            );
                        }
                    }
                }
                let mut parts = Vec::new();
                let mut earlier = 0usize;
                let mut token = None;
                loop {
                    let page = store
                        .list_page(&marker.bucket, &prefix, token)
                        .await
                        .map_err(StepError::from_port)?;
                    for meta in page.objects {
                        let name = meta.object.name.as_str();
                        // The pattern's file part stays in its folder, so deeper names do not
                        // match (with `covers: subfolders` the deeper folders are the pattern's).
                        if name == marker.name.as_str()
                            || trigger.pattern.captures(name).is_none()
                            || spec.ignores(name)
                        {
                            continue;
                        }
                        if loaded.contains(&(name.to_owned(), meta.object.generation.clone())) {
                            earlier += 1;
                            continue;
                        }
                        parts.push(meta.object);
                    }
                    match page.next {
                        Some(t) => token = Some(t),
                        None => break,
                    }
                }
                let bytes =
                    serde_json::to_vec(&parts).map_err(|e| StepError::Rejected(e.to_string()))?;
                match store
                    .create_new(&marker.bucket, &manifest_name, body(bytes))
                    .await
                    .map_err(StepError::from_port)?
                {
                    Some(_) => (parts, earlier, false),
                    // A concurrent delivery of this marker wrote it first: its list is the run's.
                    None => (
                        read_json(ctx, &marker.bucket, &manifest_name)
                            .await?
                            .unwrap_or_default(),
                        earlier,
                        true,
                    ),
                }
            }
        };
    if parts.is_empty() && (earlier > 0 || redelivered) {
        // Every part was loaded by an earlier marker (or, redelivered, this marker found so).
        info!(
            folder,
            parts = earlier,
            "every part was loaded by an earlier marker"
        );
        outcome.summary = format!(
            "{}: every part of {folder}/ was loaded by an earlier marker: a duplicate, nothing \
             loaded",
            marker.uri()
        );
        return Ok(Finished::Loaded);
    }
    let files = parts.len();
    for chunk in parts.chunks(MAX_LOAD_URIS) {
        loader.chunk(chunk.to_vec()).await?;
    }
    loader.set_var("files", files.to_string());
    loader.finish(outcome).await
}

/// The folders of every active marker pipeline with parts and no marker, one line each.
///
/// # Errors
/// The store's error.
pub(in crate::steps) async fn folders_without_marker(
    ctx: &Context,
) -> Result<Vec<String>, StepError> {
    let mut out = Vec::new();
    for p in ctx.config.pipelines.iter().filter(|p| p.active) {
        let (Some(spec), Some(trigger)) = (&p.load, &p.trigger.object) else {
            continue;
        };
        let Some(LoadBatch::Marker(m)) = &spec.batch else {
            continue;
        };
        // folder → (its parts, has its marker)
        let mut folders: BTreeMap<String, (usize, bool)> = BTreeMap::new();
        let mut token = None;
        loop {
            let page = ctx
                .ports
                .store
                .list_page(&trigger.bucket, "", token)
                .await
                .map_err(StepError::from_port)?;
            for meta in page.objects {
                let name = meta.object.name.as_str();
                if name.starts_with(crate::INTERNAL_PREFIX) {
                    continue;
                }
                let mut folder = name.rsplit_once('/').map_or("", |(f, _)| f).to_owned();
                let is_marker = meta.object.name.file_name() == m.marker;
                if m.covers == MarkerCovers::Subfolders && !is_marker {
                    // The part's marker is one folder up.
                    folder = folder.rsplit_once('/').map_or("", |(f, _)| f).to_owned();
                }
                if is_marker {
                    folders.entry(folder).or_default().1 = true;
                } else if trigger.pattern.captures(name).is_some() && !spec.ignores(name) {
                    folders.entry(folder).or_default().0 += 1;
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        for (folder, (parts, marked)) in folders {
            if parts > 0 && !marked {
                out.push(format!(
                    "pipeline {}: {parts} file(s) in gs://{}/{folder}/ wait for its marker {}",
                    p.name, trigger.bucket, m.marker
                ));
            }
        }
    }
    Ok(out)
}
