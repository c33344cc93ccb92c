//! Decoded rows on their way into the table: decoded ahead on a thread of their own for large
//! files ([`Ahead`]), and inserted in batches of one statement ([`Batch`]).

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use conveyor_core::format::Format;
use conveyor_core::ports::PortError;

use super::sqlite_error;
use super::table::Target;
use crate::formats::{Decoder, FormatError, Next, Value};

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

/// Files at least this large are decoded on a thread of their own, ahead of the inserts (a
/// thread per small file would cost more than it saves).
pub(super) const DECODE_AHEAD_BYTES: u64 = 1 << 20;

/// Rows decoded per hand-over between the decoding thread and the inserting one.
pub(super) const AHEAD_CHUNK: usize = 256;

/// One decoded item and the row buffer it filled.
pub(super) type Item = (Result<Next, FormatError>, Vec<Value>);

/// A file's rows: decoded on the inserting thread, or ahead of it on a thread of its own.
pub(super) enum Rows {
    Here(Decoder),
    Ahead(Ahead),
}

impl Rows {
    /// As [`Decoder::next_row`].
    pub(super) fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
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
pub(super) struct Ahead {
    chunks: Option<std::sync::mpsc::Receiver<Vec<Item>>>,
    spent: std::sync::mpsc::Sender<Vec<Item>>,
    current: std::vec::IntoIter<Item>,
    used: Vec<Item>,
    thread: Option<std::thread::JoinHandle<()>>,
    format: Format,
}

impl Ahead {
    pub(super) fn start(mut decoder: Decoder, format: Format) -> Self {
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

    pub(super) fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
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
pub(super) struct Batch {
    /// Row buffers; the first `filled` hold rows (the others are kept for their allocations).
    pub(super) rows: Vec<Vec<Value>>,
    pub(super) lines: Vec<u64>,
    pub(super) filled: usize,
    /// The bytes of text and blobs in the filled rows.
    pub(super) bytes: usize,
}

/// The bytes of text and blobs a batch holds before it is inserted, whatever its row count:
/// with long records (up to `load.max_record_bytes`) a batch of 64 would hold 64 of them.
pub(super) const BATCH_BYTES: usize = 8 << 20;

/// The bytes of text and blobs in `row` (what grows with the record's size).
pub(super) fn row_bytes(row: &[Value]) -> usize {
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
    pub(super) fn flush(&mut self, tx: &Connection, target: &Target) -> Result<(), PortError> {
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

#[cfg(test)]
mod tests {

    use conveyor_core::config::SchemaSpec;

    use conveyor_core::format::{ColumnType, Format};
    use conveyor_core::names::TableRef;
    use conveyor_core::ports::{LoadState, PortError, Warehouse};

    use super::super::fixtures::*;

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
            let mut strict = job(
                &format!("load-strict-{bad_line}"),
                "analytics.strict_n",
                Format::Csv,
                vec![object],
            );
            // Declared nullable, so SQLite's NOT NULL (not the decoder) refuses the row (with
            // none declared, the table's REQUIRED column would be read and checked first).
            strict.schema = conveyor_core::config::SchemaSpec::Columns(vec![
                col("n", conveyor_core::format::ColumnType::Int64, false),
                col("label", conveyor_core::format::ColumnType::String, false),
            ]);
            let result = s.warehouse.load(&strict, Default::default()).await;
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
}
