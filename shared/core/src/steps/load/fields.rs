//! Schema addition across a batch's files: with `schema: autodetect`, BigQuery (and the
//! embedded warehouse, which mirrors it) detects a load job's schema from one file, so a key
//! that only later NDJSON files of a marker or window batch have would be lost (a bad row, or
//! the job fails). When a job has several NDJSON files and a later one has a key the first
//! lacks, the job is sent with an explicit schema instead: the union of every file's keys
//! from its first [`SAMPLE_LINES`] lines (at most [`SAMPLE_BYTES`] each), in first-seen order,
//! each column NULLABLE, typed from all its sampled values (INT64 and FLOAT64 → FLOAT64,
//! other mixes → STRING), with `ALLOW_FIELD_ADDITION` so an existing table gains the new
//! columns. Otherwise (one file, no new key, nested values, gzip, an unreadable sample) the
//! job is sent as before, with autodetect.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tracing::warn;

use super::super::StepError;
use crate::event::ObjectRef;
use crate::format::{Column, ColumnType};
use crate::ndjson::{JsonKeys, JsonTypes, Line, TextTypes};
use crate::ports::{ObjectStore, PortError};

/// The lines of each file sampled (BigQuery's autodetect scans up to the first 500 rows).
pub(super) const SAMPLE_LINES: usize = 500;

/// The most bytes read from each file for its sample.
pub(super) const SAMPLE_BYTES: u64 = 256 << 10;

/// How many files are sampled at once (a window job names up to 10,000).
const SAMPLE_READERS: usize = 16;

/// How long reading one file's sample may take.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The union schema of a job's files, and the columns the first file's sample lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Union {
    /// Every sampled key, in first-seen order (the first file's first).
    pub columns: Vec<Column>,
    /// The keys that only later files have, in order.
    pub added: Vec<String>,
}

/// How the union types a key's strings: DATE when every one is `YYYY-MM-DD`, else TIMESTAMP
/// when every one is a timestamp, else STRING.
#[derive(Debug, Default)]
struct Temporal {
    not_timestamp: bool,
    not_date: bool,
}

impl TextTypes for Temporal {
    fn observe(&mut self, text: &str) {
        self.not_timestamp |= !is_timestamp(text);
        self.not_date |= NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err();
    }

    fn string_type(&self) -> ColumnType {
        if !self.not_date {
            ColumnType::Date
        } else if !self.not_timestamp {
            ColumnType::Timestamp
        } else {
            ColumnType::String
        }
    }
}

fn is_timestamp(s: &str) -> bool {
    DateTime::parse_from_rfc3339(s).is_ok()
        || ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .any(|f| NaiveDateTime::parse_from_str(s, f).is_ok())
}

/// The keys seen so far in a job's samples, file by file (a sample is dropped once added, so
/// memory holds one sample per reader, not one per file).
#[derive(Default)]
struct Keys {
    keys: JsonKeys<Temporal>,
    /// How many keys the first file has.
    first: Option<usize>,
}

impl Keys {
    /// Adds the next file's sample (its first bytes).
    fn add(&mut self, sample: &[u8]) {
        // A sample cut at SAMPLE_BYTES ends in a partial line: dropped.
        let complete = match sample.iter().rposition(|b| *b == b'\n') {
            Some(end) if sample.len() as u64 >= SAMPLE_BYTES => &sample[..end],
            _ => sample,
        };
        for line in complete
            .split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .take(SAMPLE_LINES)
        {
            // A line that is not an object is a bad row the load itself reports.
            if let Ok(Line::Object(members)) = serde_json::from_slice::<Line>(line) {
                self.keys.observe(&members);
            }
        }
        self.first.get_or_insert(self.keys.len());
    }

    /// The union: `None` when no later file added a key, or when a value is nested (BigQuery
    /// detects RECORD/REPEATED columns that an explicit flat schema would contradict).
    fn finish(self) -> Option<Union> {
        let first = self.first.unwrap_or(0);
        let nested = self.keys.types().iter().any(JsonTypes::nested);
        if self.keys.len() == first || first == 0 || nested {
            return None;
        }
        let (mut columns, mut added) = (Vec::new(), Vec::new());
        for (i, (name, types)) in self.keys.into_keys().enumerate() {
            if i >= first {
                added.push(name.clone());
            }
            columns.push(Column {
                name,
                ty: types.column_type(ColumnType::String),
                nullable: true,
            });
        }
        Some(Union { columns, added })
    }
}

/// The union of `samples` (each file's first bytes, in the job's order).
#[cfg(test)]
fn union_of(samples: &[Vec<u8>]) -> Option<Union> {
    let mut keys = Keys::default();
    for sample in samples {
        keys.add(sample);
    }
    keys.finish()
}

/// The first [`SAMPLE_BYTES`] of each of `sources`, then their [`union_of`]. `None` as well
/// when a file cannot be sampled (missing, gzip): the job then autodetects as before.
///
/// # Errors
/// A transient error when the store cannot be read now.
pub(super) async fn union(
    store: &dyn ObjectStore,
    sources: &[ObjectRef],
) -> Result<Option<Union>, StepError> {
    type Read<'a> = std::pin::Pin<
        Box<dyn Future<Output = (&'a ObjectRef, Result<Vec<u8>, PortError>)> + Send + 'a>,
    >;
    let reads: Vec<Read<'_>> = sources
        .iter()
        .map(|source| -> Read<'_> {
            Box::pin(async move { (source, sample(store, source).await) })
        })
        .collect();
    let mut samples = futures::stream::iter(reads).buffered(SAMPLE_READERS);
    let mut keys = Keys::default();
    while let Some((source, sample)) = samples.next().await {
        let sample = match sample {
            Err(e @ PortError::Transient(_)) => return Err(StepError::Transient(e.to_string())),
            Err(e) => {
                warn!(source = %source.uri(), error = %e, "cannot sample the file's fields; the job autodetects");
                return Ok(None);
            }
            Ok(sample) => sample,
        };
        if sample.starts_with(&[0x1f, 0x8b]) {
            return Ok(None);
        }
        keys.add(&sample);
    }
    Ok(keys.finish())
}

/// The first [`SAMPLE_BYTES`] of `source`, within [`SAMPLE_TIMEOUT`].
async fn sample(store: &dyn ObjectStore, source: &ObjectRef) -> Result<Vec<u8>, PortError> {
    let read = async {
        let body = store.open(&source.bucket, &source.name).await?;
        let mut sample = Vec::new();
        body.take(SAMPLE_BYTES)
            .read_to_end(&mut sample)
            .await
            .map_err(|e| PortError::transient(format!("reading {}: {e}", source.uri())))?;
        Ok(sample)
    };
    tokio::time::timeout(SAMPLE_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(PortError::transient(format!(
                "reading the first lines of {} timed out",
                source.uri()
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(u: &Union) -> Vec<(&str, ColumnType)> {
        u.columns.iter().map(|c| (c.name.as_str(), c.ty)).collect()
    }

    #[test]
    fn later_files_keys_are_added_in_first_seen_order_and_types_widen() {
        let u = union_of(&[
            b"{\"id\":1,\"v\":2}\n{\"id\":2,\"v\":null}\n".to_vec(),
            b"{\"id\":3,\"v\":2.5,\"country\":\"fr\",\"at\":\"2026-11-20T10:00:00Z\"}\n".to_vec(),
            b"{\"id\":\"x\",\"n\":true,\"d\":\"2026-11-20\"}".to_vec(),
        ])
        .expect("a union");
        assert_eq!(
            names(&u),
            [
                ("id", ColumnType::String),
                ("v", ColumnType::Float64),
                ("country", ColumnType::String),
                ("at", ColumnType::Timestamp),
                ("n", ColumnType::Bool),
                ("d", ColumnType::Date),
            ]
        );
        assert_eq!(u.added, ["country", "at", "n", "d"]);
        assert!(u.columns.iter().all(|c| c.nullable));
    }

    #[test]
    fn a_sample_cut_at_its_byte_limit_drops_its_partial_last_line() {
        let mut cut = b"{\"id\":2,\"b\":1}\n".to_vec();
        cut.extend(b"{\"id\":3,\"c\":\"");
        cut.resize(SAMPLE_BYTES as usize, b'x');
        let u = union_of(&[b"{\"id\":1}\n".to_vec(), cut]).expect("a union");
        assert_eq!(u.added, ["b"]);
    }

    #[test]
    fn no_new_key_nested_values_or_one_file_keep_autodetect() {
        let a = b"{\"id\":1}\n".to_vec();
        assert_eq!(union_of(&[a.clone(), b"{\"id\":2}".to_vec()]), None);
        assert_eq!(union_of(std::slice::from_ref(&a)), None);
        assert_eq!(union_of(&[a, b"{\"id\":2,\"o\":{\"x\":1}}".to_vec()]), None);
    }
}
