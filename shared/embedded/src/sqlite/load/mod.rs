//! Load jobs: stream a job's files into its table, exactly once per job id.
//!
//! A job runs in one IMMEDIATE transaction on the warehouse connection: the write lock is
//! taken when the job starts (so SQLite's busy timeout applies, and another process holding
//! the lock makes the job wait, then fail as transient), every source is decoded row by row
//! and inserted as it is read (memory stays flat in the files' size), and the job's
//! record (`_conveyor_load_jobs` in the dataset's file) commits with its rows, or nothing
//! does.
//!
//! BigQuery's behaviours kept here:
//! - `maxBadRecords`: up to that many bad rows (over all the job's files) are skipped; one
//!   more fails the job and it loads nothing.
//! - Autodetect with several files: the schema is detected from one file (here the first
//!   that has columns) and every other file is read with it, as BigQuery samples one file
//!   (<https://cloud.google.com/bigquery/docs/schema-detect>): a CSV file lacking a detected
//!   column fails the job, an NDJSON key outside it makes its row bad.
//! - Table names are case-sensitive, as in a BigQuery dataset by default
//!   (`isCaseInsensitive` false,
//!   <https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets#Dataset>). SQLite's
//!   are not, so a table whose name differs only in case from an existing one is kept as
//!   `<name>__<8 hex digits of its name's SHA-256>` ([`sqlite_name`]).
//! - A file with no data (empty, or only a header) loads 0 rows and succeeds; with
//!   autodetect and no header there are no columns to create a table from, so none is
//!   created (the job is still recorded, so a redelivery adopts it).

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, ToSql, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;
use tracing::{info, warn};

use conveyor_core::config::{CreateDisposition, SchemaSpec, SchemaUpdateOption, WriteDisposition};
use conveyor_core::event::ObjectRef;
use conveyor_core::format::Format;
use conveyor_core::names::{JobId, TableRef};
use conveyor_core::ports::{LoadJob, LoadState, LoadStatus, ObjectStore, PortError, Warehouse};

use super::{Db, SqliteWarehouse, attach, sql_type, transient, ts};
use crate::LocalStore;
use crate::formats::{
    BadRowBudget, Column, DecodeOptions, Decoder, FormatError, Input, Next, Value,
};

/// Classifies a SQLite error: a busy or locked database, I/O trouble, a full disk are
/// transient (another process holds the lock; retrying later succeeds); a constraint or a
/// type mismatch is the data's fault and permanent.
fn sqlite_error(e: rusqlite::Error) -> PortError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig) => {
            PortError::permanent(format!("sqlite: {e}"))
        }
        _ => transient(e),
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            // SQLite stores a NaN REAL as NULL; BigQuery keeps NaN, so it is kept as the text
            // `NaN` (the infinities are REAL values SQLite keeps).
            Value::Float(f) if f.is_nan() => ValueRef::Text(b"NaN"),
            Value::Float(f) => ValueRef::Real(*f),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

/// The SQLite name of BigQuery table `table` in its dataset: the name itself, unless a table
/// whose name differs only in case already holds it (SQLite compares table names without
/// case), then `<name>__<8 hex digits of SHA-256 of the name>`. `true` when it exists.
pub(super) fn sqlite_name(
    conn: &Connection,
    table: &TableRef,
) -> Result<(String, bool), PortError> {
    let digest = Sha256::digest(table.table.as_bytes());
    let alternate = format!("{}__{}", table.table, hex::encode(&digest[..4]));
    // `=` compares with BINARY collation: exact case.
    let exact: Option<String> = conn
        .prepare_cached(&format!(
            "SELECT name FROM \"{}\".sqlite_master WHERE type = 'table' AND name IN (?1, ?2) \
             ORDER BY name = ?1 DESC LIMIT 1",
            table.dataset
        ))
        .and_then(|mut s| {
            s.query_row(params![table.table, alternate], |r| r.get(0))
                .optional()
        })
        .map_err(sqlite_error)?;
    if let Some(name) = exact {
        return Ok((name, true));
    }
    let taken: bool = conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM \"{}\".sqlite_master WHERE name = ?1 COLLATE NOCASE)",
            table.dataset
        ))
        .and_then(|mut s| s.query_row(params![table.table], |r| r.get(0)))
        .map_err(sqlite_error)?;
    Ok((
        if taken {
            alternate
        } else {
            table.table.clone()
        },
        false,
    ))
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns (name, NOT NULL) of table `name` in `dataset`.
fn columns_of(
    conn: &Connection,
    dataset: &str,
    name: &str,
) -> Result<Vec<(String, bool)>, PortError> {
    let mut stmt = conn
        // The schema is the pragma's second argument (a `schema.` prefix is ignored).
        .prepare_cached("SELECT name, \"notnull\" FROM pragma_table_info(?1, ?2) ORDER BY cid")
        .map_err(sqlite_error)?;
    let cols = stmt
        .query_map(params![name, dataset], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sqlite_error)?
        .collect::<Result<_, _>>()
        .map_err(sqlite_error)?;
    Ok(cols)
}

/// The table a job writes, once its columns are known: created or checked, then the INSERTs
/// that take decoded rows.
struct Target {
    /// One row.
    insert: String,
    /// `per_insert` rows (when more than one).
    insert_many: String,
    per_insert: usize,
    columns: Vec<Column>,
}

/// Rows per INSERT statement: stepping one statement over many rows costs SQLite less per row
/// than a statement per row. Fewer for wide tables: a statement binds at most
/// [`MAX_PARAMETERS`] values.
const ROWS_PER_INSERT: usize = 64;

/// SQLite's limit on the parameters of one statement (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766
/// since 3.32; the bundled SQLite is newer).
const MAX_PARAMETERS: usize = 32_766;

/// Files at least this large are decoded on a thread of their own, ahead of the inserts (a
/// thread per small file would cost more than it saves).
const DECODE_AHEAD_BYTES: u64 = 1 << 20;

/// Rows decoded per hand-over between the decoding thread and the inserting one.
const AHEAD_CHUNK: usize = 256;

/// One decoded item and the row buffer it filled.
type Item = (Result<Next, FormatError>, Vec<Value>);

/// A file's rows: decoded on the inserting thread, or ahead of it on a thread of its own.
enum Rows {
    Here(Decoder),
    Ahead(Ahead),
}

impl Rows {
    /// As [`Decoder::next_row`].
    fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
        match self {
            Rows::Here(decoder) => decoder.next_row(row),
            Rows::Ahead(ahead) => ahead.next_row(row),
        }
    }
}

/// A decoder running on its own thread, handing over chunks of rows in file order through a
/// bounded channel (two chunks in flight: memory stays flat), each item exactly what
/// [`Decoder::next_row`] returned. Spent chunks go back, so row buffers are reused. Dropping
/// it stops the thread and waits for it.
struct Ahead {
    chunks: Option<std::sync::mpsc::Receiver<Vec<Item>>>,
    spent: std::sync::mpsc::Sender<Vec<Item>>,
    current: std::vec::IntoIter<Item>,
    used: Vec<Item>,
    thread: Option<std::thread::JoinHandle<()>>,
    format: Format,
}

impl Ahead {
    fn start(mut decoder: Decoder, format: Format) -> Self {
        let (chunk_tx, chunks) = std::sync::mpsc::sync_channel::<Vec<Item>>(2);
        let (spent, spent_rx) = std::sync::mpsc::channel::<Vec<Item>>();
        let thread = std::thread::spawn(move || {
            loop {
                let mut chunk = spent_rx.try_recv().unwrap_or_default();
                let mut buffers: Vec<Vec<Value>> = chunk.drain(..).map(|(_, row)| row).collect();
                let mut last = false;
                let mut bytes = 0;
                // At most AHEAD_CHUNK rows, and at most BATCH_BYTES of them (or one row):
                // the two chunks in flight stay bounded with long records.
                while chunk.len() < AHEAD_CHUNK && bytes < BATCH_BYTES && !last {
                    let mut row = buffers.pop().unwrap_or_default();
                    let next = decoder.next_row(&mut row);
                    last = !matches!(next, Ok(Next::Row(_) | Next::Bad(_)));
                    bytes += row_bytes(&row);
                    chunk.push((next, row));
                }
                // The receiver is gone when the job stopped early: stop too.
                if chunk_tx.send(chunk).is_err() || last {
                    return;
                }
            }
        });
        Self {
            chunks: Some(chunks),
            spent,
            current: Vec::new().into_iter(),
            used: Vec::new(),
            thread: Some(thread),
            format,
        }
    }

    fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
        loop {
            if let Some((next, mut decoded)) = self.current.next() {
                std::mem::swap(row, &mut decoded);
                // The caller's previous buffer goes back to the decoder with the chunk.
                self.used.push((Ok(Next::End), decoded));
                return next;
            }
            if !self.used.is_empty() {
                let _ = self.spent.send(std::mem::take(&mut self.used));
            }
            let received = self.chunks.as_ref().and_then(|c| c.recv().ok());
            match received {
                Some(chunk) => self.current = chunk.into_iter(),
                // The thread ended after its last item (or panicked): nothing more to read.
                None => {
                    return Err(FormatError::Unreadable {
                        format: self.format,
                        reason: "the decoding thread stopped".to_owned(),
                    });
                }
            }
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next hand-over.
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Decoded rows waiting for their INSERT, with their row numbers.
#[derive(Default)]
struct Batch {
    /// Row buffers; the first `filled` hold rows (the others are kept for their allocations).
    rows: Vec<Vec<Value>>,
    lines: Vec<u64>,
    filled: usize,
    /// The bytes of text and blobs in the filled rows.
    bytes: usize,
}

/// The bytes of text and blobs a batch holds before it is inserted, whatever its row count:
/// with long records (up to `load.max_record_bytes`) a batch of 64 would hold 64 of them.
const BATCH_BYTES: usize = 8 << 20;

/// The bytes of text and blobs in `row` (what grows with the record's size).
fn row_bytes(row: &[Value]) -> usize {
    row.iter()
        .map(|v| match v {
            Value::Text(t) => t.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        })
        .sum()
}

impl Batch {
    /// Inserts the waiting rows: a full batch with one statement, else row by row. A row
    /// SQLite refuses (a constraint) is a bad row with its number, as when each row had its
    /// own statement: a refused batch (which SQLite undoes whole) is inserted again row by
    /// row to name it.
    fn flush(&mut self, tx: &Connection, target: &Target) -> Result<(), PortError> {
        let filled = std::mem::take(&mut self.filled);
        self.bytes = 0;
        if filled == 0 {
            return Ok(());
        }
        if filled == target.per_insert && filled > 1 {
            let mut insert = tx
                .prepare_cached(&target.insert_many)
                .map_err(sqlite_error)?;
            let values = self.rows[..filled].iter().flatten();
            for (i, value) in values.enumerate() {
                insert
                    .raw_bind_parameter(i + 1, value)
                    .map_err(sqlite_error)?;
            }
            match insert.raw_execute().map_err(sqlite_error) {
                Ok(_) => return Ok(()),
                // Found row by row below.
                Err(PortError::Permanent(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut insert = tx.prepare_cached(&target.insert).map_err(sqlite_error)?;
        for (row, &number) in self.rows[..filled].iter().zip(&self.lines) {
            for (i, value) in row.iter().enumerate() {
                insert
                    .raw_bind_parameter(i + 1, value)
                    .map_err(sqlite_error)?;
            }
            insert.raw_execute().map_err(|e| match sqlite_error(e) {
                PortError::Permanent(m) => PortError::BadRows(vec![crate::formats::BadRow {
                    row: number,
                    reason: m.into(),
                }]),
                other => other,
            })?;
        }
        Ok(())
    }
}

/// The most columns of a SQLite table (`SQLITE_MAX_COLUMN` of the bundled build); BigQuery
/// holds 10,000.
const SQLITE_MAX_COLUMNS: usize = 2000;

fn prepare_target(
    conn: &Connection,
    job: &LoadJob,
    name: &str,
    exists: bool,
    columns: &[Column],
) -> Result<Target, PortError> {
    if columns.len() > SQLITE_MAX_COLUMNS {
        // SQLite answers "too many columns" as a generic error: never retried here.
        return Err(PortError::permanent(format!(
            "the file has {} columns: the embedded warehouse (SQLite) holds at most \
             {SQLITE_MAX_COLUMNS} per table (BigQuery 10,000)",
            columns.len()
        )));
    }
    let dataset = &job.table.dataset;
    let quoted = format!("\"{dataset}\".{}", ident(name));
    if exists {
        let mut existing = columns_of(conn, dataset, name)?;
        let additions = job
            .schema_update_options
            .contains(&SchemaUpdateOption::AllowFieldAddition);
        for column in columns {
            if existing
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&column.name))
            {
                continue;
            }
            if !additions {
                return Err(PortError::permanent(format!(
                    "the file's column `{}` is not in table {} (columns {:?}); \
                     schema_update_options ALLOW_FIELD_ADDITION would add it",
                    column.name,
                    job.table,
                    existing.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                )));
            }
            // An added column is NULLABLE, as in BigQuery.
            conn.execute_batch(&format!(
                "ALTER TABLE {quoted} ADD COLUMN {} {}",
                ident(&column.name),
                sql_type(column.ty)
            ))
            .map_err(sqlite_error)?;
            existing.push((column.name.clone(), false));
        }
        if let Some((missing, _)) = existing.iter().find(|(n, required)| {
            *required && !columns.iter().any(|c| c.name.eq_ignore_ascii_case(n))
        }) {
            return Err(PortError::permanent(format!(
                "table {}'s REQUIRED column `{missing}` is not in the file",
                job.table
            )));
        }
        match job.write {
            WriteDisposition::WriteAppend => {}
            WriteDisposition::WriteTruncate => {
                conn.execute_batch(&format!("DELETE FROM {quoted}"))
                    .map_err(sqlite_error)?;
            }
            WriteDisposition::WriteEmpty => {
                let any: bool = conn
                    .query_row(
                        &format!("SELECT EXISTS (SELECT 1 FROM {quoted})"),
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sqlite_error)?;
                if any {
                    return Err(PortError::permanent(format!(
                        "table {} is not empty and write_disposition is WRITE_EMPTY",
                        job.table
                    )));
                }
            }
        }
    } else {
        if job.create == CreateDisposition::CreateNever {
            return Err(PortError::permanent(format!(
                "table {} does not exist and create_disposition is CREATE_NEVER",
                job.table
            )));
        }
        let defs: Vec<String> = columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    ident(&c.name),
                    sql_type(c.ty),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        conn.execute_batch(&format!("CREATE TABLE {quoted} ({})", defs.join(", ")))
            .map_err(sqlite_error)?;
        if name != job.table.table {
            info!(table = %job.table, sqlite_table = name, "table name differs only in case from an existing table; kept apart");
        }
        if let Some(field) = job.partition.as_ref().and_then(|p| p.field.as_ref())
            && columns.iter().any(|c| &c.name == field)
        {
            // SQLite has no partitions; an index on the partition column serves the same queries.
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS \"{dataset}\".{} ON {} ({})",
                ident(&format!("{name}__partition")),
                ident(name),
                ident(field)
            ))
            .map_err(sqlite_error)?;
        }
    }
    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let marks = format!("({})", vec!["?"; columns.len()].join(", "));
    let per_insert = (MAX_PARAMETERS / columns.len().max(1)).clamp(1, ROWS_PER_INSERT);
    let insert = format!("INSERT INTO {quoted} ({}) VALUES ", names.join(", "));
    Ok(Target {
        insert_many: format!("{insert}{}", vec![marks.as_str(); per_insert].join(", ")),
        insert: format!("{insert}{marks}"),
        per_insert,
        columns: columns.to_vec(),
    })
}

/// The content check of one local source: the SHA-256 of every byte the decoder read, and a
/// second handle on the same open file (sharing its offset) to hash what it left unread.
/// The open file is the one that was checked, so a rename over the name (how the store and
/// most tools overwrite) cannot swap the bytes under the load.
struct ContentCheck {
    hashed: Arc<std::sync::Mutex<(Sha256, u64)>>,
    rest: std::fs::File,
    generation: String,
}

impl ContentCheck {
    /// Whether the content read (and the rest of the file) is still `generation`.
    fn holds(self) -> Result<bool, std::io::Error> {
        let mut rest = Hashing {
            file: self.rest,
            hashed: self.hashed.clone(),
        };
        std::io::copy(&mut rest, &mut std::io::sink())?;
        drop(rest);
        let (h, size) = std::mem::take(
            &mut *self
                .hashed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        Ok(crate::store::content_generation(size, &h.finalize()) == self.generation)
    }
}

/// A file whose bytes are hashed as they are read.
struct Hashing {
    file: std::fs::File,
    hashed: Arc<std::sync::Mutex<(Sha256, u64)>>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let mut hashed = self
            .hashed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hashed.0.update(&buf[..n]);
        hashed.1 += n as u64;
        Ok(n)
    }
}

/// Why a source is not loaded: its content is no longer the generation the job names.
fn overwritten(source: &ObjectRef) -> PortError {
    PortError::precondition(format!(
        "{} changed after its arrival: its content is no longer generation {}",
        source.uri(),
        source.generation
    ))
}

/// Opens one source for the decoder: a stream read through the runtime, or, for Parquet
/// (which needs random access), a copy in an anonymous temporary file beside the databases.
/// A local file checked against its generation (`check`) comes with its [`ContentCheck`]
/// (a Parquet file is hashed before it is decoded: [`PortError::Precondition`] when changed).
fn open_input(
    handle: &Handle,
    store: &Arc<dyn ObjectStore>,
    local: Option<&LocalStore>,
    source: &ObjectRef,
    format: Format,
    dir: &Path,
    check: bool,
) -> Result<(Input, Option<ContentCheck>), PortError> {
    let missing = || PortError::permanent(format!("{} does not exist", source.uri()));
    if let Some(local) = local {
        // A local file is read here, on the load's thread: no trip through the runtime per
        // read, and a Parquet file is read in place (it is seekable).
        let mut file = match local.open_blocking(&source.bucket, &source.name) {
            Ok(file) => file,
            Err(PortError::NotFound(_)) => return Err(missing()),
            Err(e) => return Err(e),
        };
        let read_error =
            |e: std::io::Error| PortError::transient(format!("read {}: {e}", source.uri()));
        let check = check && !source.generation.is_empty();
        if format == Format::Parquet {
            if check {
                use std::io::Seek as _;
                let (size, digest) =
                    crate::store::hash_content(&mut file, 1 << 16).map_err(read_error)?;
                if crate::store::content_generation(size, &digest) != source.generation {
                    return Err(overwritten(source));
                }
                file.rewind().map_err(read_error)?;
            }
            return Ok((Input::File(file), None));
        }
        if !check {
            let input = Input::Stream(Box::new(BufReader::with_capacity(1 << 16, file)));
            return Ok((input, None));
        }
        let hashed = Arc::new(std::sync::Mutex::new((Sha256::new(), 0)));
        let content = ContentCheck {
            hashed: hashed.clone(),
            rest: file.try_clone().map_err(read_error)?,
            generation: source.generation.clone(),
        };
        let reader = Hashing { file, hashed };
        let input = Input::Stream(Box::new(BufReader::with_capacity(1 << 16, reader)));
        return Ok((input, Some(content)));
    }
    let stream = match handle.block_on(store.open(&source.bucket, &source.name)) {
        Ok(s) => s,
        Err(PortError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e),
    };
    let read_error =
        |e: std::io::Error| PortError::transient(format!("read {}: {e}", source.uri()));
    let mut reader = SyncIoBridge::new_with_handle(stream, handle.clone());
    if format == Format::Parquet {
        let mut file = tempfile::tempfile_in(dir).map_err(transient)?;
        std::io::copy(&mut reader, &mut file).map_err(read_error)?;
        Ok((Input::File(file), None))
    } else {
        Ok((
            Input::Stream(Box::new(BufReader::with_capacity(
                1 << 16,
                ReadErrors(reader),
            ))),
            None,
        ))
    }
}

/// A reader whose errors are kept as they are (a bridge to the async stream).
struct ReadErrors<R>(R);

impl<R: Read> Read for ReadErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

fn format_error(e: FormatError, source: &ObjectRef) -> PortError {
    match e {
        FormatError::BadRows(bad) => PortError::BadRows(bad),
        other => PortError::permanent(format!("{}: {other}", source.uri())),
    }
}

/// Runs `job` in one transaction on `conn` (the warehouse's connection, `dir` its directory).
fn run(
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
    let declared = match &job.schema {
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
    for source in &job.sources {
        let options = DecodeOptions {
            schema: declared.clone().or_else(|| detected.clone()),
            skip_leading_rows: job.skip_leading_rows,
            allow_quoted_newlines: job.allow_quoted_newlines,
            max_record_bytes: job.max_record_bytes,
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

fn same_columns(a: &[Column], b: &[Column]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name.eq_ignore_ascii_case(&y.name))
}

fn names(columns: &[Column]) -> Vec<&str> {
    columns.iter().map(|c| c.name.as_str()).collect()
}

/// The table recording a dataset's load jobs, in the dataset's own file, so a job's record
/// commits atomically with its rows.
const JOBS: &str = "_conveyor_load_jobs";

fn finished(conn: &Connection, dataset: &str, job_id: &JobId) -> Result<Option<i64>, PortError> {
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

fn done_status(rows: i64, adopted: bool) -> LoadStatus {
    LoadStatus {
        state: LoadState::Done {
            rows: rows.max(0) as u64,
        },
        adopted,
    }
}

impl SqliteWarehouse {
    /// The rows of the load job `job_id` when it has run (from the index in `_jobs.sqlite`).
    async fn finished_load(&self, job_id: &JobId) -> Result<Option<i64>, PortError> {
        let job_id = job_id.clone();
        self.with_db(move |db, _| {
            db.conn
                .prepare_cached("SELECT rows FROM load_jobs WHERE job_id = ?1")
                .and_then(|mut s| {
                    s.query_row(params![job_id.as_str()], |r| r.get(0))
                        .optional()
                })
                .map_err(sqlite_error)
        })
        .await
    }
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    async fn load(&self, job: &LoadJob, _wait: Duration) -> Result<LoadStatus, PortError> {
        if job.sources.is_empty() {
            return Err(PortError::permanent(format!(
                "load job {} names no source",
                job.job_id
            )));
        }
        let job = job.clone();
        let store = self.store.clone();
        let local = self.local.clone();
        let handle = Handle::current();
        self.with_db(move |db, dir| run(db, dir, &store, local.as_ref(), &handle, &job))
            .await
    }

    async fn load_state(&self, job_id: &JobId) -> Result<LoadStatus, PortError> {
        // Embedded loads end within their request: a job is done, or was never run.
        match self.finished_load(job_id).await? {
            Some(n) => Ok(done_status(n, true)),
            None => Err(PortError::not_found(format!("load job {job_id}"))),
        }
    }

    async fn read_table(
        &self,
        table: &TableRef,
        limit: usize,
    ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| super::read_table(db, dir, &table, limit))
            .await
    }

    async fn row_count(&self, table: &TableRef) -> Result<u64, PortError> {
        let table = table.clone();
        self.with_db(move |db, dir| {
            attach(db, dir, &table.dataset)?;
            let (name, exists) = sqlite_name(&db.conn, &table)?;
            if !exists {
                return Err(PortError::not_found(format!("table {table}")));
            }
            let n: i64 = db
                .conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM \"{}\".{}",
                        table.dataset,
                        ident(&name)
                    ),
                    [],
                    |r| r.get(0),
                )
                .map_err(sqlite_error)?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use conveyor_core::config::{CreateDisposition, SchemaSpec, WriteDisposition};
    use conveyor_core::event::ObjectRef;
    use conveyor_core::format::{Column, ColumnType, Format};
    use conveyor_core::names::{BucketName, JobId, ObjectName, TableRef};
    use conveyor_core::ports::{LoadJob, LoadState, ObjectStore, PortError, Warehouse};
    use rusqlite::types::ValueRef;

    use crate::{LocalStore, SqliteWarehouse};

    struct Setup {
        _dir: tempfile::TempDir,
        store: LocalStore,
        warehouse: SqliteWarehouse,
        warehouse_dir: std::path::PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("buckets")).unwrap();
        let warehouse_dir = dir.path().join("warehouse");
        let warehouse = SqliteWarehouse::open(&warehouse_dir, Arc::new(store.clone())).unwrap();
        Setup {
            _dir: dir,
            store,
            warehouse,
            warehouse_dir,
        }
    }

    async fn put(store: &LocalStore, name: &str, bytes: &[u8]) -> ObjectRef {
        let bucket = BucketName::parse("landing").unwrap();
        let name = ObjectName::parse(name).unwrap();
        store
            .put(
                &bucket,
                &name,
                Box::pin(std::io::Cursor::new(bytes.to_vec())),
            )
            .await
            .unwrap()
            .object
    }

    fn job(id: &str, table: &str, format: Format, sources: Vec<ObjectRef>) -> LoadJob {
        LoadJob {
            job_id: JobId::parse(id).unwrap(),
            sources,
            table: TableRef::parse(table).unwrap(),
            format,
            write: WriteDisposition::WriteAppend,
            create: CreateDisposition::CreateIfNeeded,
            schema: SchemaSpec::Autodetect,
            partition: None,
            clustering: Vec::new(),
            skip_leading_rows: u64::from(format == Format::Csv),
            max_bad_records: 0,
            allow_quoted_newlines: false,
            schema_update_options: Vec::new(),
            max_record_bytes: conveyor_core::config::MAX_RECORD_BYTES,
            generations_checked: true,
        }
    }

    fn col(name: &str, ty: ColumnType, required: bool) -> Column {
        Column {
            name: name.to_owned(),
            ty,
            nullable: !required,
        }
    }

    /// The table's rows as `v|v` text: NULL, integers, reals, 'text', x'blob'.
    fn dump(warehouse_dir: &std::path::Path, dataset: &str, table: &str) -> Option<Vec<String>> {
        let conn =
            rusqlite::Connection::open(warehouse_dir.join(format!("{dataset}.sqlite"))).ok()?;
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
            .ok()?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        ValueRef::Null => "NULL".to_owned(),
                        ValueRef::Integer(i) => i.to_string(),
                        ValueRef::Real(f) => format!("{f:?}"),
                        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
                        ValueRef::Blob(b) => format!("x'{}'", hex::encode(b)),
                    })
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .ok()?;
        Some(rows.map(Result::unwrap).collect())
    }

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
    async fn tables_differing_only_in_case_are_kept_apart() {
        let s = setup();
        let a = put(&s.store, "a.csv", b"n\n1\n").await;
        let b = put(&s.store, "b.csv", b"n\n2\n3\n").await;
        s.warehouse
            .load(
                &job("load-a", "analytics.Sales", Format::Csv, vec![a]),
                Default::default(),
            )
            .await
            .unwrap();
        s.warehouse
            .load(
                &job("load-b", "analytics.sales", Format::Csv, vec![b]),
                Default::default(),
            )
            .await
            .unwrap();
        let count = |t: &str| {
            let w = s.warehouse.clone();
            let t = TableRef::parse(t).unwrap();
            async move { w.row_count(&t).await.unwrap() }
        };
        assert_eq!(count("analytics.Sales").await, 1);
        assert_eq!(count("analytics.sales").await, 2);
        assert!(matches!(
            s.warehouse
                .row_count(&TableRef::parse("analytics.SALES").unwrap())
                .await,
            Err(PortError::NotFound(_))
        ));
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

    /// Rows go to SQLite many to a statement; a row SQLite refuses still fails the job with
    /// its own line number, whether it falls in a full batch or in the last partial one, and
    /// nothing of the job is kept.
    #[tokio::test]
    async fn a_row_sqlite_refuses_is_named_by_its_line_in_a_batched_insert() {
        for (bad_line, total) in [(150_u64, 300_u64), (290, 300), (2, 3)] {
            let s = setup();
            std::fs::create_dir_all(&s.warehouse_dir).unwrap();
            let conn =
                rusqlite::Connection::open(s.warehouse_dir.join("analytics.sqlite")).unwrap();
            conn.execute_batch("CREATE TABLE strict_n (n INTEGER NOT NULL, label TEXT)")
                .unwrap();
            drop(conn);
            // Line 1 is the header; line k holds row k - 1.
            let mut file = b"n,label\n".to_vec();
            for line in 2..=total + 1 {
                let n = if line == bad_line {
                    String::new()
                } else {
                    line.to_string()
                };
                file.extend_from_slice(format!("{n},row {line}\n").as_bytes());
            }
            let object = put(&s.store, &format!("strict-{bad_line}.csv"), &file).await;
            let result = s
                .warehouse
                .load(
                    &job(
                        &format!("load-strict-{bad_line}"),
                        "analytics.strict_n",
                        Format::Csv,
                        vec![object],
                    ),
                    Default::default(),
                )
                .await;
            match result {
                Err(PortError::BadRows(bad)) => {
                    assert_eq!(bad.len(), 1, "{bad:?}");
                    assert_eq!(bad[0].row, bad_line, "{bad:?}");
                    assert!(bad[0].reason.contains("NOT NULL"), "{bad:?}");
                }
                other => panic!("expected a bad row at line {bad_line}, got {other:?}"),
            }
            assert_eq!(
                dump(&s.warehouse_dir, "analytics", "strict_n").unwrap(),
                Vec::<String>::new()
            );
        }
    }

    /// Many rows (several full batches and a partial one) load as they are, in file order.
    #[tokio::test]
    async fn batched_inserts_keep_every_row_and_its_order() {
        let s = setup();
        let mut file = b"n,t,s\n".to_vec();
        let mut want = Vec::new();
        for i in 0..1000_u32 {
            let t = format!(
                "2026-11-{:02} 08:{:02}:{:02}.{}",
                1 + i % 28,
                i % 60,
                (i * 7) % 60,
                i % 10
            );
            let s = if i % 3 == 0 {
                String::new()
            } else {
                format!("v{i}")
            };
            file.extend_from_slice(format!("{i},{t},{s}\n").as_bytes());
            let frac = if i % 10 == 0 {
                String::new()
            } else {
                format!(".{}00", i % 10)
            };
            want.push(format!(
                "{i}|'2026-11-{:02}T08:{:02}:{:02}{frac}Z'|{}",
                1 + i % 28,
                i % 60,
                (i * 7) % 60,
                if s.is_empty() {
                    "NULL".to_owned()
                } else {
                    format!("'{s}'")
                }
            ));
        }
        let object = put(&s.store, "many.csv", &file).await;
        let status = s
            .warehouse
            .load(
                &job("load-many", "analytics.many", Format::Csv, vec![object]),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 1000 });
        assert_eq!(dump(&s.warehouse_dir, "analytics", "many").unwrap(), want);
    }

    /// A file over a megabyte is decoded on a thread of its own, ahead of the inserts: the
    /// same rows, bad rows and errors as when decoded in place.
    #[tokio::test]
    async fn a_large_file_decoded_ahead_loads_the_same_rows_and_errors() {
        let s = setup();
        let file = |bad: &[u64]| {
            let mut f = b"n,label\n".to_vec();
            for line in 2..=40_001_u64 {
                let n = if bad.contains(&line) {
                    "x".to_owned()
                } else {
                    line.to_string()
                };
                f.extend_from_slice(format!("{n},row number {line:>10}\n").as_bytes());
            }
            assert!(f.len() as u64 > super::DECODE_AHEAD_BYTES);
            f
        };
        let schema = SchemaSpec::Columns(vec![
            col("n", ColumnType::Int64, true),
            col("label", ColumnType::String, false),
        ]);
        let table = TableRef::parse("analytics.large").unwrap();
        // A bad row near the end: the job fails with its line, and loads nothing.
        let object = put(&s.store, "large-bad.csv", &file(&[35_000])).await;
        let mut j = job(
            "load-large-bad",
            "analytics.large",
            Format::Csv,
            vec![object],
        );
        j.schema = schema.clone();
        match s.warehouse.load(&j, Default::default()).await {
            Err(PortError::BadRows(bad)) => {
                assert_eq!(bad[0].row, 35_000, "{bad:?}");
                assert!(bad[0].reason.contains("INT64"), "{bad:?}");
            }
            other => panic!("expected a bad row, got {other:?}"),
        }
        // Not even the table it would have created.
        assert!(matches!(
            s.warehouse.row_count(&table).await,
            Err(PortError::NotFound(_))
        ));
        // Within max_bad_records: every other row loads.
        let object = put(&s.store, "large-skip.csv", &file(&[3, 39_000])).await;
        let mut j = job(
            "load-large-skip",
            "analytics.large",
            Format::Csv,
            vec![object],
        );
        j.schema = schema;
        j.max_bad_records = 2;
        let status = s.warehouse.load(&j, Default::default()).await.unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 39_998 });
        assert_eq!(s.warehouse.row_count(&table).await.unwrap(), 39_998);
        let conn = rusqlite::Connection::open(s.warehouse_dir.join("analytics.sqlite")).unwrap();
        let (sum, last): (i64, String) = conn
            .query_row(
                "SELECT SUM(n), (SELECT label FROM large ORDER BY rowid DESC LIMIT 1) FROM large",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(sum, (2..=40_001).sum::<i64>() - 3 - 39_000);
        assert_eq!(last, format!("row number {:>10}", 40_001));
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
    async fn a_source_overwritten_after_its_arrival_is_not_loaded_under_the_old_generation() {
        let mut s = setup();
        // As the embedded runtime opens it: reading the local store's files itself.
        s.warehouse = SqliteWarehouse::open_local(&s.warehouse_dir, s.store.clone()).unwrap();
        let old = put(&s.store, "a.csv", b"n\n1\n2\n").await;
        let kept = put(&s.store, "b.csv", b"n\n7\n").await;
        // Overwritten while the arrival waited for the database.
        let new = put(&s.store, "a.csv", b"n\n10\n20\n30\n").await;
        assert_ne!(old.generation, new.generation);
        let result = s
            .warehouse
            .load(
                &job("load-old", "analytics.t", Format::Csv, vec![old.clone()]),
                Default::default(),
            )
            .await;
        assert!(
            matches!(&result, Err(PortError::Precondition(_))),
            "the newer content was loaded under the older generation: {result:?}"
        );
        assert_eq!(
            dump(&s.warehouse_dir, "analytics", "t"),
            None,
            "nothing loaded"
        );
        // In a job of several sources, the changed one is left out (its own arrival loads
        // the new content), the others load.
        let status = s
            .warehouse
            .load(
                &job("load-two", "analytics.t", Format::Csv, vec![old, kept]),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 1 });
        let status = s
            .warehouse
            .load(
                &job("load-new", "analytics.t", Format::Csv, vec![new]),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(status.state, LoadState::Done { rows: 3 });
        assert_eq!(
            dump(&s.warehouse_dir, "analytics", "t").unwrap(),
            ["7", "10", "20", "30"]
        );
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
