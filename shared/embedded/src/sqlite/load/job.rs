//! One load job: its transaction, its record in the dataset's `_conveyor_load_jobs`, and the
//! loop over its sources (schema detected from the first, bad rows counted over all).

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::runtime::Handle;
use tracing::warn;

use conveyor_core::config::SchemaSpec;
use conveyor_core::format::Format;
use conveyor_core::names::JobId;
use conveyor_core::ports::{LoadJob, LoadState, LoadStatus, ObjectStore, PortError};

use crate::sqlite::{Db, attach, transient, ts};

use super::batch::{Ahead, BATCH_BYTES, Batch, DECODE_AHEAD_BYTES, Rows, row_bytes};
use super::input::{decompress, format_error, open_input};
use super::sqlite_error;
use super::table::{
    Target, finish_partition, names, prepare_target, same_columns, sqlite_name, table_schema,
};
use crate::LocalStore;
use crate::formats::{BadRowBudget, Column, DecodeOptions, Decoder, FormatError, Next};

/// Runs `job` in one transaction on `conn` (the warehouse's connection, `dir` its directory).
pub(super) fn run(
    db: &mut Db,
    dir: &Path,
    store: &Arc<dyn ObjectStore>,
    local: Option<&LocalStore>,
    handle: &Handle,
    job: &LoadJob,
) -> Result<LoadStatus, PortError> {
    attach(db, dir, &job.table.dataset)?;
    let tx = db
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    tx.prepare_cached(&format!(
        "CREATE TABLE IF NOT EXISTS \"{}\".{JOBS} (job_id TEXT PRIMARY KEY, destination TEXT NOT NULL, \
         source TEXT NOT NULL, rows INTEGER NOT NULL, finished_at TEXT NOT NULL)",
        job.table.dataset
    ))
    .and_then(|mut s| s.execute([]))
    .map_err(sqlite_error)?;
    if let Some(n) = finished(&tx, &job.table.dataset, &job.job_id)? {
        return Ok(done_status(n, true));
    }
    let (name, exists) = sqlite_name(&tx, &job.table)?;
    // A CSV load into an existing table with no schema declared reads the table's schema
    // (by position, a header found by its names), as BigQuery does: not string_field_N.
    let from_table = exists && job.format == Format::Csv && job.schema == SchemaSpec::Autodetect;
    let declared = match &job.schema {
        SchemaSpec::Autodetect if from_table => {
            Some(table_schema(&tx, &job.table.dataset, &name)?).filter(|c| !c.is_empty())
        }
        SchemaSpec::Autodetect => None,
        SchemaSpec::Columns(c) => Some(c.clone()),
    };
    let mut detected: Option<Vec<Column>> = None;
    let mut target: Option<Target> = None;
    let mut budget = BadRowBudget::new(job.max_bad_records);
    let mut rows: u64 = 0;
    let several = job.sources.len() > 1;
    let mut batch = Batch::default();
    // Sources whose content changed since their arrival: not loaded (their newer generation's
    // own arrival loads it).
    let mut changed: Vec<String> = Vec::new();
    let mut loaded_sources = 0usize;
    // CSV without `skip_leading_rows`: autodetect looks for a header in the first file, and
    // the job's other files skip theirs when it found one (BigQuery's rule).
    let mut header_found = false;
    for source in &job.sources {
        let options = DecodeOptions {
            schema: declared.clone().or_else(|| detected.clone()),
            skip_leading_rows: job.csv.skip_leading_rows.unwrap_or(u64::from(header_found)),
            allow_quoted_newlines: job.allow_quoted_newlines,
            max_record_bytes: job.max_record_bytes,
            detect_header: job.csv.skip_leading_rows.is_none()
                && ((declared.is_none() && detected.is_none()) || from_table),
            csv: job.csv.clone(),
        };
        let (input, content) = match open_input(
            handle,
            store,
            local,
            source,
            job.format,
            dir,
            job.generations_checked,
        ) {
            Ok(opened) => opened,
            Err(e @ PortError::Precondition(_)) => {
                warn!(job_id = %job.job_id, error = %e, "source not loaded");
                changed.push(source.uri());
                continue;
            }
            Err(e) => return Err(e),
        };
        let input = decompress(input, job.compression, source)?;
        let decoder =
            Decoder::open(job.format, input, &options).map_err(|e| format_error(e, source))?;
        if decoder.columns().is_empty() {
            if let Some(content) = content
                && !content.holds().map_err(transient)?
            {
                changed.push(source.uri());
            }
            continue;
        }
        // Each source in a savepoint: one whose content turns out to have changed is undone
        // alone (with the table it created, if it did).
        tx.execute_batch("SAVEPOINT source").map_err(sqlite_error)?;
        let (detected_here, target_here) = (detected.is_none(), target.is_none());
        if declared.is_none() && detected.is_none() {
            detected = Some(decoder.columns().to_vec());
            header_found = decoder.header_detected();
        }
        let bad_before = budget.count();
        let rows_before = rows;
        // A large file is decoded on a thread of its own while this one inserts.
        let columns = decoder.columns().to_vec();
        let mut decoder = if source.size.unwrap_or(0) >= DECODE_AHEAD_BYTES {
            Rows::Ahead(Ahead::start(decoder, job.format))
        } else {
            Rows::Here(decoder)
        };
        let tgt = match &target {
            Some(t) => {
                if !same_columns(&t.columns, &columns) {
                    return Err(PortError::permanent(format!(
                        "{}: columns {:?} differ from the job's {:?}",
                        source.uri(),
                        names(&columns),
                        names(&t.columns)
                    )));
                }
                t
            }
            None => target.insert(prepare_target(&tx, job, &name, exists, &columns)?),
        };
        loop {
            if batch.rows.len() <= batch.filled {
                batch.rows.push(Vec::new());
            }
            let next = match decoder.next_row(&mut batch.rows[batch.filled]) {
                Ok(next) => next,
                Err(e) => {
                    // The rows read before it are inserted first: their errors come first.
                    batch.flush(&tx, tgt)?;
                    return Err(format_error(e, source));
                }
            };
            match next {
                Next::Row(number) => {
                    if budget.exceeded() {
                        continue; // the job fails; only more bad rows are of interest
                    }
                    batch.lines.resize(batch.filled + 1, 0);
                    batch.lines[batch.filled] = number;
                    batch.bytes += row_bytes(&batch.rows[batch.filled]);
                    batch.filled += 1;
                    if batch.filled == tgt.per_insert || batch.bytes >= BATCH_BYTES {
                        batch.flush(&tx, tgt)?;
                    }
                    rows += 1;
                }
                Next::Bad(mut bad) => {
                    batch.flush(&tx, tgt)?;
                    if several {
                        bad.reason = format!("{}: {}", source.uri(), bad.reason);
                    }
                    budget.record(bad);
                    if budget.exceeded() && budget.full() {
                        break;
                    }
                }
                Next::End => break,
            }
        }
        batch.flush(&tx, tgt)?;
        drop(decoder);
        if budget.exceeded() {
            break;
        }
        let holds = match content {
            Some(content) => content.holds().map_err(transient)?,
            None => true,
        };
        if holds {
            tx.execute_batch("RELEASE source").map_err(sqlite_error)?;
            loaded_sources += 1;
            continue;
        }
        warn!(job_id = %job.job_id, source = %source.uri(), generation = %source.generation, "source changed after its arrival; not loaded");
        tx.execute_batch("ROLLBACK TO source; RELEASE source")
            .map_err(sqlite_error)?;
        changed.push(source.uri());
        rows = rows_before;
        budget.truncate(bad_before);
        if detected_here {
            detected = None;
        }
        if target_here {
            target = None;
        }
    }
    if !changed.is_empty() && loaded_sources == 0 {
        // Nothing of the job is what it was asked to load: nothing is recorded, so the
        // arrival's redelivery finds its generation superseded.
        return Err(PortError::precondition(format!(
            "{} changed after {} arrival: {} no longer the generation the load names",
            changed.join(", "),
            if changed.len() == 1 { "its" } else { "their" },
            if changed.len() == 1 {
                "it is"
            } else {
                "they are"
            },
        )));
    }
    budget.check().map_err(|e| match e {
        FormatError::BadRows(bad) => PortError::BadRows(bad),
        other => PortError::permanent(other.to_string()),
    })?;
    if budget.count() > 0 {
        warn!(job_id = %job.job_id, skipped = budget.count(), first = ?budget.rows().first(), "bad rows skipped (max_bad_records)");
    }
    if target.is_none() && !exists && declared.is_some() {
        // An empty file with a declared schema still creates the table, as BigQuery does.
        if let Some(columns) = &declared {
            prepare_target(&tx, job, &name, false, columns)?;
        }
    }
    if let Some(t) = &target {
        finish_partition(&tx, job, &name, t)?;
    }
    tx.prepare_cached(
        &format!("INSERT INTO \"{}\".{JOBS} (job_id, destination, source, rows, finished_at) VALUES (?1, ?2, ?3, ?4, ?5)", job.table.dataset),
    )
    .and_then(|mut s| s.execute(
        params![job.job_id.as_str(), job.table.to_string(), job.source_uris().join(" "), rows as i64, ts(&Utc::now())],
    ))
    .map_err(sqlite_error)?;
    // An index for `load_state`, which names only the job id. In WAL mode this row commits
    // separately from the dataset's file; the dataset's record is the one that keeps a job
    // from loading twice.
    tx.prepare_cached(
        "INSERT OR IGNORE INTO load_jobs (job_id, destination, source, rows, finished_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(
        params![job.job_id.as_str(), job.table.to_string(), job.source_uris().join(" "), rows as i64, ts(&Utc::now())],
    ))
    .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(done_status(rows as i64, false))
}

/// The table recording a dataset's load jobs, in the dataset's own file, so a job's record
/// commits atomically with its rows.
pub(super) const JOBS: &str = "_conveyor_load_jobs";

pub(super) fn finished(
    conn: &Connection,
    dataset: &str,
    job_id: &JobId,
) -> Result<Option<i64>, PortError> {
    let exists: bool = conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM \"{dataset}\".sqlite_master WHERE name = ?1)"
        ))
        .and_then(|mut s| s.query_row(params![JOBS], |r| r.get(0)))
        .map_err(sqlite_error)?;
    if !exists {
        return Ok(None);
    }
    conn.prepare_cached(&format!(
        "SELECT rows FROM \"{dataset}\".{JOBS} WHERE job_id = ?1"
    ))
    .and_then(|mut s| {
        s.query_row(params![job_id.as_str()], |r| r.get(0))
            .optional()
    })
    .map_err(sqlite_error)
}

pub(super) fn done_status(rows: i64, adopted: bool) -> LoadStatus {
    LoadStatus {
        state: LoadState::Done {
            rows: rows.max(0) as u64,
        },
        adopted,
    }
}

#[cfg(test)]
mod tests {

    use conveyor_core::config::SchemaSpec;

    use conveyor_core::format::{Column, ColumnType, Format};

    use conveyor_core::ports::{LoadJob, LoadState, PortError, Warehouse};

    use super::super::fixtures::*;

    /// What a case expects.
    #[derive(Debug)]
    enum Expect {
        /// Loaded: the table's rows as [`dump`] renders them.
        Rows(&'static [&'static str]),
        /// Loaded nothing and created no table.
        NoTable,
        /// Bad rows: the first one's number and a part of its reason.
        BadRow(u64, &'static str),
        /// A permanent error containing this text.
        Permanent(&'static str),
    }

    struct Case {
        name: &'static str,
        format: Format,
        file: &'static [u8],
        schema: Option<Vec<Column>>,
        tweak: fn(&mut LoadJob),
        expect: Expect,
    }

    fn same(_: &mut LoadJob) {}

    /// BigQuery's documented load behaviour, case by case (issue 13 item 5): each row names
    /// what BigQuery does and what the embedded warehouse must do the same way.
    #[tokio::test]
    async fn embedded_loads_behave_as_bigquery_loads_do() {
        use ColumnType as T;
        let cases = vec![
            Case {
                name: "REQUIRED STRING refuses an empty CSV value",
                format: Format::Csv,
                file: b"id,name\n1,a\n2,\n",
                schema: Some(vec![
                    col("id", T::Int64, true),
                    col("name", T::String, true),
                ]),
                tweak: same,
                expect: Expect::BadRow(3, "REQUIRED"),
            },
            Case {
                name: "REQUIRED INT64 refuses a quoted empty CSV value",
                format: Format::Csv,
                file: b"id\n\"\"\n",
                schema: Some(vec![col("id", T::Int64, true)]),
                tweak: same,
                expect: Expect::BadRow(2, "REQUIRED"),
            },
            Case {
                name: "REQUIRED refuses a missing NDJSON key",
                format: Format::Ndjson,
                file: b"{\"id\": 1}\n{}\n",
                schema: Some(vec![col("id", T::Int64, true)]),
                tweak: same,
                expect: Expect::BadRow(2, "REQUIRED"),
            },
            Case {
                name: "a quoted newline is refused by default (allowQuotedNewlines=false)",
                format: Format::Csv,
                file: b"a,b\n1,\"two\nlines\"\n",
                schema: None,
                tweak: same,
                expect: Expect::BadRow(2, "newline"),
            },
            Case {
                name: "a quoted newline loads with allowQuotedNewlines",
                format: Format::Csv,
                file: b"a,b\n1,\"two\nlines\"\n",
                schema: None,
                tweak: |j| j.allow_quoted_newlines = true,
                expect: Expect::Rows(&["1|'two\nlines'"]),
            },
            Case {
                name: "an empty CSV file with autodetect loads 0 rows and creates no table",
                format: Format::Csv,
                file: b"",
                schema: None,
                tweak: same,
                expect: Expect::NoTable,
            },
            Case {
                name: "an empty NDJSON file with autodetect loads 0 rows and creates no table",
                format: Format::Ndjson,
                file: b"\n",
                schema: None,
                tweak: same,
                expect: Expect::NoTable,
            },
            Case {
                name: "a header-only CSV file creates STRING columns and loads 0 rows",
                format: Format::Csv,
                file: b"a,b\n",
                schema: None,
                tweak: same,
                expect: Expect::Rows(&[]),
            },
            Case {
                name: "NaN and the infinities stay what they are in a FLOAT64 column",
                format: Format::Csv,
                file: b"x\n1.5\nNaN\n-inf\n",
                schema: None,
                tweak: same,
                expect: Expect::Rows(&["1.5", "'NaN'", "-inf"]),
            },
            Case {
                name: "NaN in an NDJSON string loads into a declared FLOAT64",
                format: Format::Ndjson,
                file: b"{\"x\": \"NaN\"}\n{\"x\": 2}\n",
                schema: Some(vec![col("x", T::Float64, false)]),
                tweak: same,
                expect: Expect::Rows(&["'NaN'", "2.0"]),
            },
            Case {
                name: "YYYY/MM/DD hh:mm:ss is a TIMESTAMP (declared)",
                format: Format::Csv,
                file: b"t\n2026/11/20 08:30:00\n",
                schema: Some(vec![col("t", T::Timestamp, false)]),
                tweak: same,
                expect: Expect::Rows(&["'2026-11-20T08:30:00Z'"]),
            },
            Case {
                name: "YYYY/MM/DD hh:mm:ss is a TIMESTAMP (autodetect)",
                format: Format::Csv,
                file: b"t\n2026/11/20 08:30:00.25\n",
                schema: None,
                tweak: same,
                expect: Expect::Rows(&["'2026-11-20T08:30:00.250Z'"]),
            },
            Case {
                name: "a DATE must use dashes",
                format: Format::Csv,
                file: b"d\n2026/11/20\n",
                schema: Some(vec![col("d", T::Date, false)]),
                tweak: same,
                expect: Expect::BadRow(2, "DATE"),
            },
            Case {
                name: "autodetect keeps 007 as text",
                format: Format::Csv,
                file: b"code,n\n007,1\n010,2\n",
                schema: None,
                tweak: same,
                expect: Expect::Rows(&["'007'|1", "'010'|2"]),
            },
            Case {
                name: "a declared INT64 reads 007 as 7",
                format: Format::Csv,
                file: b"code\n007\n",
                schema: Some(vec![col("code", T::Int64, false)]),
                tweak: same,
                expect: Expect::Rows(&["7"]),
            },
            Case {
                name: "nested NDJSON: RECORD as a JSON object, REPEATED as a JSON array, [] when missing",
                format: Format::Ndjson,
                file: b"{\"o\": {\"k\": 1}, \"a\": [1, 2]}\n{\"o\": null}\n",
                schema: None,
                tweak: same,
                expect: Expect::Rows(&["'{\"k\":1}'|'[1,2]'", "NULL|'[]'"]),
            },
            Case {
                name: "max_bad_records skips up to N bad rows",
                format: Format::Csv,
                file: b"n\n1\nx\n3\n",
                schema: Some(vec![col("n", T::Int64, false)]),
                tweak: |j| j.max_bad_records = 1,
                expect: Expect::Rows(&["1", "3"]),
            },
            Case {
                name: "max_bad_records fails past N bad rows and loads nothing",
                format: Format::Csv,
                file: b"n\n1\nx\ny\n",
                schema: Some(vec![col("n", T::Int64, false)]),
                tweak: |j| j.max_bad_records = 1,
                expect: Expect::BadRow(3, "INT64"),
            },
            Case {
                name: "a bad row past BigQuery's 500-row autodetect sample is a bad row",
                format: Format::Csv,
                file: Box::leak(
                    {
                        let mut f = b"n\n".to_vec();
                        for i in 0..600 {
                            f.extend_from_slice(format!("{i}\n").as_bytes());
                        }
                        f.extend_from_slice(b"oops\n");
                        f
                    }
                    .into_boxed_slice(),
                ),
                schema: None,
                tweak: same,
                expect: Expect::BadRow(602, "INT64"),
            },
            Case {
                name: "ORC is refused with a clear reason",
                format: Format::Orc,
                file: b"ORC",
                schema: None,
                tweak: same,
                expect: Expect::Permanent("cannot read ORC"),
            },
        ];
        let mut failures = Vec::new();
        for (i, case) in cases.into_iter().enumerate() {
            let s = setup();
            let object = put(&s.store, &format!("case{i}/file"), case.file).await;
            let table = format!("t{i}");
            let mut job = job(
                &format!("load-case-{i}"),
                &format!("analytics.{table}"),
                case.format,
                vec![object],
            );
            if let Some(schema) = case.schema {
                job.schema = SchemaSpec::Columns(schema);
            }
            (case.tweak)(&mut job);
            let result = s
                .warehouse
                .load(&job, std::time::Duration::from_secs(5))
                .await;
            let rows = dump(&s.warehouse_dir, "analytics", &table);
            let ok = match (&case.expect, &result) {
                (Expect::Rows(want), Ok(status)) => {
                    matches!(status.state, LoadState::Done { rows: n } if n == want.len() as u64)
                        && rows
                            .as_ref()
                            .is_some_and(|r| r.iter().map(String::as_str).eq(want.iter().copied()))
                }
                (Expect::NoTable, Ok(status)) => {
                    matches!(status.state, LoadState::Done { rows: 0 }) && rows.is_none()
                }
                (Expect::BadRow(n, text), Err(PortError::BadRows(bad))) => {
                    bad.first()
                        .is_some_and(|b| b.row == *n && b.reason.contains(text))
                        && rows.as_ref().is_none_or(|r| r.is_empty())
                }
                (Expect::Permanent(text), Err(PortError::Permanent(m))) => m.contains(text),
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{}: expected {:?}, got {result:?} with rows {rows:?}",
                    case.name, case.expect
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[tokio::test]
    async fn one_job_loads_all_its_sources_once_and_detects_the_schema_from_the_first() {
        let s = setup();
        let a = put(&s.store, "part-1.ndjson", b"{\"n\": 1}\n").await;
        let b = put(&s.store, "part-2.ndjson", b"{\"n\": 2}\n{\"n\": 3}\n").await;
        let j = job(
            "load-parts",
            "analytics.parts",
            Format::Ndjson,
            vec![a.clone(), b.clone()],
        );
        let first = s.warehouse.load(&j, Default::default()).await.unwrap();
        assert_eq!(
            (first.state.clone(), first.adopted),
            (LoadState::Done { rows: 3 }, false)
        );
        let again = s.warehouse.load(&j, Default::default()).await.unwrap();
        assert_eq!(
            (again.state, again.adopted),
            (LoadState::Done { rows: 3 }, true)
        );
        assert_eq!(
            dump(&s.warehouse_dir, "analytics", "parts").unwrap(),
            ["1", "2", "3"]
        );
        // A later file with a key the first file's schema lacks: its row is bad, the job loads
        // nothing (BigQuery without ignoreUnknownValues).
        let c = put(&s.store, "part-3.ndjson", b"{\"n\": 4, \"extra\": true}\n").await;
        let j = job(
            "load-parts-2",
            "analytics.parts2",
            Format::Ndjson,
            vec![a, c],
        );
        match s.warehouse.load(&j, Default::default()).await {
            Err(PortError::BadRows(bad)) => {
                assert!(
                    bad[0].reason.contains("part-3.ndjson") && bad[0].reason.contains("extra"),
                    "{bad:?}"
                )
            }
            other => panic!("expected bad rows, got {other:?}"),
        }
        assert!(dump(&s.warehouse_dir, "analytics", "parts2").is_none());
    }

    /// Issue 9 item 3: another process holding the dataset's write lock makes the load wait
    /// (busy timeout) and then fail as transient, to be retried; never a permanent failure.
    #[tokio::test]
    async fn a_locked_database_is_a_transient_load_failure() {
        let s = setup();
        let a = put(&s.store, "a.csv", b"n\n1\n").await;
        s.warehouse
            .load(
                &job(
                    "load-first",
                    "analytics.locked",
                    Format::Csv,
                    vec![a.clone()],
                ),
                Default::default(),
            )
            .await
            .unwrap();
        let other = rusqlite::Connection::open(s.warehouse_dir.join("analytics.sqlite")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO locked VALUES (99);")
            .unwrap();
        let result = s
            .warehouse
            .load(
                &job("load-second", "analytics.locked", Format::Csv, vec![a]),
                Default::default(),
            )
            .await;
        assert!(
            matches!(&result, Err(PortError::Transient(m)) if m.contains("locked")),
            "{result:?}"
        );
        other.execute_batch("ROLLBACK").unwrap();
    }

    #[tokio::test]
    async fn more_columns_than_sqlite_holds_or_a_record_over_the_limit_is_a_permanent_failure() {
        let s = setup();
        let header: Vec<String> = (0..2001).map(|i| format!("c{i}")).collect();
        let wide = put(
            &s.store,
            "wide.csv",
            format!("{}\n", header.join(",")).as_bytes(),
        )
        .await;
        let result = s
            .warehouse
            .load(
                &job("load-wide", "analytics.wide", Format::Csv, vec![wide]),
                Default::default(),
            )
            .await;
        assert!(
            matches!(&result, Err(PortError::Permanent(m)) if m.contains("columns")),
            "{result:?}"
        );
        let long = put(
            &s.store,
            "long.csv",
            format!("a\n1\n{}\n", "x".repeat(300_000)).as_bytes(),
        )
        .await;
        let mut limited = job("load-long", "analytics.long", Format::Csv, vec![long]);
        limited.max_record_bytes = 1000;
        let result = s.warehouse.load(&limited, Default::default()).await;
        assert!(
            matches!(&result, Err(PortError::Permanent(m)) if m.contains("max_record_bytes")),
            "{result:?}"
        );
    }
}
