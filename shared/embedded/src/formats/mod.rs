//! Decoding of landing-bucket files into rows, for the embedded warehouse.
//!
//! BigQuery decodes files itself; the embedded warehouse needs this module to do the same for
//! the load formats, as BigQuery does (its documented rules are cited where they apply).
//!
//! Files are read as streams: a [`Decoder`] yields one row at a time, so memory stays flat
//! whatever a file's size (autodetect holds at most the sample of [`SAMPLE_ROWS`] rows).
//!
//! # Layout
//! - `mod.rs`: the row model ([`Value`], [`Rows`]), [`Decoder`], [`BadRowBudget`], [`decode`].
//! - `convert.rs`: the one coercion table every format goes through (text, JSON and typed
//!   values to BigQuery column types, autodetect, REQUIRED checks).
//! - `csv.rs`, `ndjson.rs`, `avro.rs`, `parquet.rs`: one reader per format, turning its native
//!   values into cells for `convert.rs`.
//! - `test_support.rs` (tests only): what the readers' tests share.
//!
//! ORC files are refused with a clear error: the one maintained Rust ORC reader (`orc-rust`)
//! brings the whole Arrow stack, zstd and protobuf (about 60 more crates) into every build of
//! the CLI for a format no Conveyor pipeline has used; BigQuery loads ORC in production.

use std::io::{BufRead, Read};

mod avro;
mod convert;
mod csv;
mod ndjson;
mod parquet;
#[cfg(test)]
mod test_support;

pub use convert::SAMPLE_ROWS;
pub use conveyor_core::format::{BadRow, Column, ColumnType, Format};

/// One cell of a decoded row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Integer.
    Int(i64),
    /// Float (NaN and the infinities included).
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Text (also timestamps, dates and JSON, as documented on [`ColumnType`]).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// The decoded content of one file, whole (for tests and small files; loads use [`Decoder`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// The columns, in file order.
    pub columns: Vec<Column>,
    /// The rows; each has exactly `columns.len()` values.
    pub rows: Vec<Vec<Value>>,
}

/// Options of a decode, BigQuery's load options that concern reading a file.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// The declared schema; `None` means autodetect from the file.
    pub schema: Option<Vec<Column>>,
    /// CSV: number of leading lines to skip (a header is 1). With N skipped, the N-th is the
    /// header that names the columns.
    pub skip_leading_rows: u64,
    /// CSV: whether a quoted field may contain a newline (BigQuery's `allowQuotedNewlines`,
    /// default false: such a row is bad).
    pub allow_quoted_newlines: bool,
    /// CSV with autodetect and no leading rows to skip: whether the first line is read as
    /// the header when it looks like one (all text above rows with a typed column), as
    /// BigQuery's autodetect does when `skipLeadingRows` is unset.
    pub detect_header: bool,
    /// CSV: delimiter, quote, NULL marker, encoding and jagged rows (`load.csv`; its
    /// `skip_leading_rows` is read from [`Self::skip_leading_rows`] instead).
    pub csv: CsvOptions,
    /// CSV and NDJSON: the longest record, in bytes (`load.max_record_bytes`); `0` means
    /// [`MAX_RECORD_BYTES`]. A longer record makes the file unreadable as soon as the limit
    /// is passed: it is never read whole.
    pub max_record_bytes: u64,
}

impl DecodeOptions {
    /// The record limit in force.
    fn record_limit(&self) -> u64 {
        match self.max_record_bytes {
            0 => MAX_RECORD_BYTES,
            n => n,
        }
    }
}

pub use conveyor_core::config::{CsvOptions, MAX_RECORD_BYTES};

/// The most bytes of records an autodetect sample holds (beyond one record): with very long
/// records the sample has fewer than [`SAMPLE_ROWS`] rows, so memory stays bounded.
const SAMPLE_BYTES: u64 = 64 << 20;

/// The most columns a file may have (BigQuery's limit on a table's columns); a file with
/// more is unreadable, refused before its columns are built.
pub const MAX_COLUMNS: usize = 10_000;

/// Why a file of `format` with `n` columns is refused.
fn too_many_columns(format: Format, n: usize) -> FormatError {
    FormatError::Unreadable {
        format,
        reason: format!("{n} columns: a table holds at most {MAX_COLUMNS} (BigQuery's limit)"),
    }
}

/// The message of a record over the limit.
fn record_too_long(limit: u64, line: u64) -> String {
    format!(
        "the record at line {line} is longer than {limit} bytes (load.max_record_bytes); \
         it was not read further"
    )
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file as a whole is unreadable (not this format, truncated, bad header).
    #[error("unreadable {format:?} file: {reason}")]
    Unreadable {
        /// The format that was expected.
        format: Format,
        /// What is wrong.
        reason: String,
    },
    /// More rows were bad than the load allows; none is loaded.
    #[error("{} bad row(s), first at row {}: {}", .0.len(), .0.first().map_or(0, |b| b.row), .0.first().map_or("", |b| b.reason.as_str()))]
    BadRows(Vec<BadRow>),
}

/// The input of a [`Decoder`]: a stream, or a file (Parquet needs random access).
pub enum Input {
    /// A sequential stream (CSV, NDJSON, Avro).
    Stream(Box<dyn BufRead + Send>),
    /// A seekable file (any format).
    File(std::fs::File),
    /// Bytes in memory (any format).
    Bytes(Vec<u8>),
}

impl Input {
    fn into_read(self) -> Box<dyn BufRead + Send> {
        match self {
            Input::Stream(r) => r,
            Input::File(f) => Box::new(std::io::BufReader::with_capacity(1 << 16, f)),
            Input::Bytes(b) => Box::new(std::io::Cursor::new(b)),
        }
    }
}

/// What [`Decoder::next_row`] read.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A row, with its number (CSV and NDJSON: the line it starts on; Avro and Parquet: its
    /// 1-based index), now in the row buffer.
    Row(u64),
    /// A bad row: the reason is kept, the row is not.
    Bad(BadRow),
    /// The end of the file.
    End,
}

/// One format's reader: fills a row of the decoder's columns at a time.
trait RowReader: Send {
    /// Whether `next_row` overwrites the row it is given (reusing its cells' buffers) rather
    /// than appending to an empty one.
    fn reuses_row(&self) -> bool {
        false
    }

    fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError>;
}

/// A streaming decoder of one file into rows of fixed columns.
///
/// With `options.schema = None` the columns and their types are detected the way a BigQuery
/// load job with autodetect does (CSV and NDJSON: from a sample of up to [`SAMPLE_ROWS`] rows;
/// Avro and Parquet: from the file's own schema); with a declared schema the rows have exactly
/// the declared columns, each value converted to its column's type.
pub struct Decoder {
    columns: Vec<Column>,
    reader: Box<dyn RowReader>,
    /// CSV: the first line was found to be a header ([`DecodeOptions::detect_header`]).
    header_detected: bool,
}

impl Decoder {
    /// Opens `input` as a `format` file.
    ///
    /// # Errors
    /// [`FormatError::Unreadable`] when the file is not in `format`, or when a declared
    /// column is missing from an Avro/Parquet file or a CSV header; ORC is always refused.
    pub fn open(
        format: Format,
        input: Input,
        options: &DecodeOptions,
    ) -> Result<Decoder, FormatError> {
        let mut header_detected = false;
        let (columns, reader): (Vec<Column>, Box<dyn RowReader>) = match format {
            Format::Csv => {
                let (columns, reader, detected) = csv::open(input.into_read(), options)?;
                header_detected = detected;
                (columns, reader)
            }
            Format::Ndjson => ndjson::open(input.into_read(), options)?,
            Format::Avro => avro::open(input.into_read(), options)?,
            Format::Parquet => parquet::open(input, options)?,
            Format::Orc => {
                return Err(FormatError::Unreadable {
                    format,
                    reason: "the embedded warehouse cannot read ORC files (BigQuery loads them; \
                             convert to Parquet or Avro to test the pipeline locally)"
                        .to_owned(),
                });
            }
        };
        Ok(Decoder {
            columns,
            reader,
            header_detected,
        })
    }

    /// CSV: whether the first line was read as a header found by
    /// [`DecodeOptions::detect_header`] (the next files of the job skip theirs too).
    pub fn header_detected(&self) -> bool {
        self.header_detected
    }

    /// The columns of every row. Empty only for a file with no columns at all (an empty
    /// CSV or NDJSON file with autodetect).
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Reads the next row into `row`: on [`Next::Row`] it holds one value per column (what it
    /// held before is replaced; passing the same buffer row after row lets a reader reuse its
    /// cells' allocations); otherwise its content is unspecified.
    ///
    /// # Errors
    /// [`FormatError::Unreadable`] when the rest of the file cannot be read.
    pub fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
        if !self.reader.reuses_row() {
            row.clear();
        }
        self.reader.next_row(row)
    }
}

/// The most bad rows an error lists.
pub const MAX_BAD_ROWS: usize = 100;

/// BigQuery's `maxBadRecords` for one load job (all its files together): up to `max` bad rows
/// are skipped; one more fails the job, which then loads nothing
/// (<https://cloud.google.com/bigquery/docs/reference/rest/v2/Job#JobConfigurationLoad>).
#[derive(Debug, Default)]
pub struct BadRowBudget {
    max: u64,
    count: u64,
    kept: Vec<BadRow>,
}

impl BadRowBudget {
    /// A budget of `max` bad rows.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Counts a bad row (keeping the first [`MAX_BAD_ROWS`] for the error).
    pub fn record(&mut self, bad: BadRow) {
        self.count += 1;
        if self.kept.len() < MAX_BAD_ROWS {
            self.kept.push(bad);
        }
    }

    /// Whether more rows were bad than allowed: the job fails.
    pub fn exceeded(&self) -> bool {
        self.count > self.max
    }

    /// Whether the error already lists as many rows as it will.
    pub fn full(&self) -> bool {
        self.kept.len() >= MAX_BAD_ROWS
    }

    /// Forgets the bad rows recorded after the first `count` (a source that is not loaded
    /// after all).
    pub fn truncate(&mut self, count: u64) {
        if count < self.count {
            self.count = count;
            self.kept
                .truncate(usize::try_from(count).unwrap_or(usize::MAX));
        }
    }

    /// Bad rows skipped so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The bad rows kept, for the error (or the log, when they were skipped).
    pub fn rows(&self) -> &[BadRow] {
        &self.kept
    }

    /// `Err` with the bad rows when the budget is exceeded.
    ///
    /// # Errors
    /// [`FormatError::BadRows`] when more rows were bad than allowed.
    pub fn check(&self) -> Result<(), FormatError> {
        if self.exceeded() {
            Err(FormatError::BadRows(self.kept.clone()))
        } else {
            Ok(())
        }
    }
}

/// Decodes a whole file's bytes, all or nothing: if any row is bad the result is
/// [`FormatError::BadRows`] listing the bad rows (at most [`MAX_BAD_ROWS`], each with its row
/// or line number). A convenience over [`Decoder`] for tests and small files.
///
/// # Errors
/// As [`Decoder::open`] and [`Decoder::next_row`], and [`FormatError::BadRows`].
pub fn decode(format: Format, bytes: &[u8], options: &DecodeOptions) -> Result<Rows, FormatError> {
    let mut decoder = Decoder::open(format, Input::Bytes(bytes.to_vec()), options)?;
    let mut budget = BadRowBudget::new(0);
    let mut rows = Vec::new();
    let mut row = Vec::new();
    loop {
        match decoder.next_row(&mut row)? {
            Next::Row(_) => rows.push(std::mem::take(&mut row)),
            Next::Bad(bad) => {
                budget.record(bad);
                if budget.full() {
                    break;
                }
            }
            Next::End => break,
        }
    }
    budget.check()?;
    Ok(Rows {
        columns: decoder.columns,
        rows,
    })
}

/// Reads all of `input` (for readers that need the whole file).
fn read_all(mut input: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::convert::*;
    use super::*;
    use chrono::DateTime;

    /// `examples/data/landing/sales/2026-11-20` of the repository.
    fn example_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/data/landing/sales/2026-11-20")
    }

    fn micros(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid example timestamp")
            .timestamp_micros()
    }

    /// Regenerates the binary example files (the CSV and NDJSON ones are written by hand):
    /// `cargo test -p conveyor --lib formats::tests::write_example_files -- --ignored`.
    #[test]
    #[ignore = "writes examples/data; run explicitly to regenerate the example files"]
    fn write_example_files() {
        use apache_avro::types::{Record, Value as Avro};

        let dir = example_dir();
        std::fs::create_dir_all(&dir).expect("example directory");

        let schema = apache_avro::Schema::parse_str(
            r#"{
                "type": "record", "name": "Order", "namespace": "conveyor.examples.sales",
                "fields": [
                    {"name": "order_id", "type": "long"},
                    {"name": "customer", "type": "string"},
                    {"name": "amount", "type": "double"},
                    {"name": "paid", "type": "boolean"},
                    {"name": "ordered_at", "type": {"type": "long", "logicalType": "timestamp-micros"}}
                ]
            }"#,
        )
        .expect("sales schema");
        let mut writer = apache_avro::Writer::new(&schema, Vec::new());
        let avro_rows = [
            (1001, "acme", 120.50, true, "2026-11-20T08:15:00Z"),
            (1002, "globex", 75.00, false, "2026-11-20T09:02:30Z"),
            (1003, "initech", 310.25, true, "2026-11-20T10:45:00Z"),
            (1004, "umbrella", 12.99, true, "2026-11-20T11:20:15Z"),
            (1005, "hooli", 980.00, false, "2026-11-20T13:05:00Z"),
        ];
        for (id, customer, amount, paid, at) in avro_rows {
            let mut record = Record::new(&schema).expect("record schema");
            record.put("order_id", Avro::Long(id));
            record.put("customer", Avro::String(customer.to_owned()));
            record.put("amount", Avro::Double(amount));
            record.put("paid", Avro::Boolean(paid));
            record.put("ordered_at", Avro::TimestampMicros(micros(at)));
            writer.append(record).expect("append order");
        }
        std::fs::write(
            dir.join("orders.avro"),
            writer.into_inner().expect("avro bytes"),
        )
        .expect("write orders.avro");

        use super::parquet::TestValues as V;
        let parquet_rows = [
            (2001, "stark", 45.10, true, "2026-11-20T14:00:00Z"),
            (2002, "wayne", 1500.00, true, "2026-11-20T14:30:00Z"),
            (2003, "acme", 88.80, false, "2026-11-20T15:10:45Z"),
            (2004, "globex", 19.95, true, "2026-11-20T16:00:00Z"),
        ];
        let bytes = super::parquet::write_test_file(
            "message orders {
                REQUIRED INT64 order_id;
                REQUIRED BYTE_ARRAY customer (STRING);
                REQUIRED DOUBLE amount;
                REQUIRED BOOLEAN paid;
                REQUIRED INT64 ordered_at (TIMESTAMP(MICROS,true));
            }",
            vec![vec![
                (
                    V::I64(parquet_rows.iter().map(|r| r.0).collect()),
                    None,
                    None,
                ),
                (
                    V::Bytes(parquet_rows.iter().map(|r| r.1.as_bytes()).collect()),
                    None,
                    None,
                ),
                (
                    V::F64(parquet_rows.iter().map(|r| r.2).collect()),
                    None,
                    None,
                ),
                (
                    V::Bool(parquet_rows.iter().map(|r| r.3).collect()),
                    None,
                    None,
                ),
                (
                    V::I64(parquet_rows.iter().map(|r| micros(r.4)).collect()),
                    None,
                    None,
                ),
            ]],
        );
        std::fs::write(dir.join("orders.parquet"), bytes).expect("write orders.parquet");
    }

    #[test]
    fn example_files_decode_with_autodetect() {
        let cases = [
            (Format::Avro, "orders.avro", 5, false),
            (Format::Parquet, "orders.parquet", 4, false),
            (Format::Csv, "orders.csv", 6, true),
            (Format::Ndjson, "orders.ndjson", 3, true),
        ];
        for (format, file, count, nullable) in cases {
            let bytes = std::fs::read(example_dir().join(file)).expect("example file exists");
            let options = DecodeOptions {
                schema: None,
                skip_leading_rows: u64::from(format == Format::Csv),
                ..Default::default()
            };
            let rows = decode(format, &bytes, &options)
                .unwrap_or_else(|e| panic!("{file} does not decode: {e}"));
            assert_eq!(rows.rows.len(), count, "{file}");
            let expected: Vec<Column> = [
                ("order_id", ColumnType::Int64),
                ("customer", ColumnType::String),
                ("amount", ColumnType::Float64),
                ("paid", ColumnType::Bool),
                ("ordered_at", ColumnType::Timestamp),
            ]
            .into_iter()
            .map(|(name, ty)| Column {
                name: name.to_owned(),
                ty,
                nullable,
            })
            .collect();
            assert_eq!(rows.columns, expected, "{file}");
        }
    }

    #[test]
    fn every_format_decodes_the_same_declared_schema_from_the_examples() {
        // Every column (NDJSON rejects unknown keys), in another order than the files'.
        let schema: Vec<Column> = [
            ("amount", ColumnType::Float64),
            ("order_id", ColumnType::Int64),
            ("ordered_at", ColumnType::Timestamp),
            ("customer", ColumnType::String),
            ("paid", ColumnType::Bool),
        ]
        .into_iter()
        .map(|(name, ty)| Column {
            name: name.to_owned(),
            ty,
            nullable: false,
        })
        .collect();
        // CSV takes declared columns by position (as BigQuery): its schema is in the file's
        // order, and the decoded columns are put in the others' order to compare.
        let csv_order = [1, 3, 0, 4, 2];
        let csv_schema: Vec<Column> = csv_order.iter().map(|&i| schema[i].clone()).collect();
        for (format, file) in [
            (Format::Avro, "orders.avro"),
            (Format::Parquet, "orders.parquet"),
            (Format::Csv, "orders.csv"),
            (Format::Ndjson, "orders.ndjson"),
        ] {
            let bytes = std::fs::read(example_dir().join(file)).expect("example file exists");
            let csv = format == Format::Csv;
            let options = DecodeOptions {
                schema: Some(if csv {
                    csv_schema.clone()
                } else {
                    schema.clone()
                }),
                skip_leading_rows: u64::from(csv),
                ..Default::default()
            };
            let mut rows = decode(format, &bytes, &options)
                .unwrap_or_else(|e| panic!("{file} does not decode: {e}"));
            if csv {
                let reorder = |cells: &[Value]| -> Vec<Value> {
                    (0..5)
                        .map(|k| {
                            let at = csv_order.iter().position(|&i| i == k).unwrap_or(k);
                            cells[at].clone()
                        })
                        .collect()
                };
                rows.columns = reorder_columns(&rows.columns, &csv_order);
                rows.rows = rows.rows.iter().map(|r| reorder(r)).collect();
            }
            assert_eq!(rows.columns, schema, "{file}");
            let first = rows.rows.first().expect("has rows");
            assert!(
                matches!(first.as_slice(),
                    [Value::Float(_), Value::Int(_), Value::Text(ts), Value::Text(_), Value::Bool(_)]
                    if ts.starts_with("2026-11-20T") && ts.ends_with('Z')),
                "{file}: {first:?}"
            );
        }
    }

    /// `columns` (in `order` of another list) back in that list's order.
    fn reorder_columns(columns: &[Column], order: &[usize]) -> Vec<Column> {
        (0..columns.len())
            .map(|k| columns[order.iter().position(|&i| i == k).unwrap_or(k)].clone())
            .collect()
    }

    #[test]
    fn decimal_text_handles_sign_scale_and_wide_values() {
        assert_eq!(decimal_text(&[], 2), "0.00");
        assert_eq!(decimal_text(&[0x00], 0), "0");
        assert_eq!(decimal_text(&[0x30, 0x39], 2), "123.45");
        assert_eq!(decimal_text(&[0xFF, 0x85], 2), "-1.23");
        assert_eq!(decimal_text(&[0xFF, 0xFB], 3), "-0.005");
        assert_eq!(decimal_text(&[0x80], 0), "-128");
        assert_eq!(decimal_text(&[0x07], -2), "700");
        // 2^80 = 1208925819614629174706176
        let mut wide = vec![0x01];
        wide.extend([0u8; 10]);
        assert_eq!(decimal_text(&wide, 4), "120892581961462917470.6176");
    }

    #[test]
    fn timestamps_are_normalized_to_rfc3339_utc() {
        assert_eq!(
            parse_timestamp("2026-11-20T08:30:00Z").as_deref(),
            Some("2026-11-20T08:30:00Z")
        );
        assert_eq!(
            parse_timestamp("2026-11-20 09:30:00.5+01:00").as_deref(),
            Some("2026-11-20T08:30:00.500Z")
        );
        assert_eq!(
            parse_timestamp("2026-11-20 08:30:00").as_deref(),
            Some("2026-11-20T08:30:00Z")
        );
        assert_eq!(
            parse_timestamp("2026-11-20 08:30:00 UTC").as_deref(),
            Some("2026-11-20T08:30:00Z")
        );
        assert_eq!(
            parse_timestamp("2026/11/20 08:30:00.25").as_deref(),
            Some("2026-11-20T08:30:00.250Z")
        );
        assert_eq!(
            parse_timestamp("2026-11-20T09:30:00.123456-01:00").as_deref(),
            Some("2026-11-20T10:30:00.123456Z")
        );
        assert_eq!(parse_timestamp("2026-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("2026-11-20 25:00:00"), None);
        assert_eq!(parse_timestamp("2026-11-20"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(epoch_timestamp_text(i64::MAX, TimeUnit::Micros), None);
    }

    /// The timestamp text is written digit by digit; it must be what chrono's RFC 3339
    /// formatter writes, fraction widths and year range edges included.
    #[test]
    fn timestamp_text_is_chronos_rfc3339() {
        use chrono::{SecondsFormat, TimeZone, Utc};
        let seconds = [
            -62_167_219_200_i64, // 0000-01-01
            -62_167_219_201,     // -0001-12-31: chrono writes it
            -1,
            0,
            951_782_400,     // 2000-02-29
            1_795_169_409,   // 2026-11-21T07:30:09
            253_402_300_799, // 9999-12-31T23:59:59
            253_402_300_800, // +10000-01-01: chrono writes it
        ];
        let nanos = [
            0_u32,
            1,
            10,
            999,
            1_000,
            120_000,
            1_000_000,
            250_000_000,
            999_999_999,
        ];
        for s in seconds {
            for n in nanos {
                let instant = Utc.timestamp_opt(s, n).single().expect("valid instant");
                assert_eq!(
                    timestamp_text(instant),
                    instant.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    "{s} s {n} ns"
                );
            }
        }
        // A leap second (nanoseconds past 10^9) is chrono's to write.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("leap second")
            .and_utc();
        assert_eq!(
            timestamp_text(leap),
            leap.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        );
    }

    /// A text cell converted in place reuses the buffer the cell held and gives what
    /// `from_text` gives.
    #[test]
    fn from_text_into_matches_from_text() {
        use ColumnType as T;
        let cases = [
            ("abc", T::String),
            ("2026-11-20 08:30:00.5", T::Timestamp),
            ("2026/11/20 08:30:00 UTC", T::Timestamp),
            ("2026-11-20", T::Timestamp),
            ("2026-11-20T09:30:00+01:00", T::Timestamp),
            ("not a time", T::Timestamp),
            ("12", T::Int64),
            ("1.5", T::Float64),
            ("NaN", T::Float64),
            ("yes", T::Bool),
            ("{\"a\": 1}", T::Json),
            ("2026-11-20", T::Date),
        ];
        for (text, ty) in cases {
            for start in [
                Value::Null,
                Value::Text("previous".to_owned()),
                Value::Int(3),
            ] {
                let mut slot = start;
                let converted = from_text_into(text, ty, &mut slot);
                let want = from_text(text, ty);
                assert_eq!(converted, want.is_some(), "{text} as {ty}");
                if let Some(want) = want {
                    // Compared as text: NaN is not equal to itself.
                    assert_eq!(format!("{slot:?}"), format!("{want:?}"), "{text} as {ty}");
                }
            }
        }
    }

    #[test]
    fn dates_must_be_yyyy_mm_dd() {
        assert_eq!(parse_date("2026-11-20").as_deref(), Some("2026-11-20"));
        assert_eq!(parse_date("2026-1-20"), None);
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(epoch_date_text(20_412).as_deref(), Some("2025-11-20"));
        assert_eq!(
            time_of_day_text(3_723_004_000, TimeUnit::Micros).as_deref(),
            Some("01:02:03.004")
        );
        assert_eq!(time_of_day_text(-1, TimeUnit::Millis), None);
    }

    #[test]
    fn text_inference_prefers_int_then_float_then_bool_then_timestamp_then_date() {
        let infer = |values: &[&str]| {
            let mut inference = TextInference::default();
            values.iter().for_each(|v| inference.observe(v));
            inference.column_type()
        };
        assert_eq!(infer(&["1", "-2"]), ColumnType::Int64);
        assert_eq!(infer(&["1", "2.5"]), ColumnType::Float64);
        assert_eq!(infer(&["TRUE", "false"]), ColumnType::Bool);
        assert_eq!(infer(&["2026-11-20T00:00:00Z"]), ColumnType::Timestamp);
        assert_eq!(infer(&["2026-11-20"]), ColumnType::Date);
        assert_eq!(
            infer(&["2026-11-20", "2026-11-20T00:00:00Z"]),
            ColumnType::String
        );
        assert_eq!(infer(&["NaN", "inf"]), ColumnType::String);
        assert_eq!(infer(&[]), ColumnType::String);
    }

    #[test]
    fn coercion_follows_bigquery_rules() {
        use ColumnType as T;
        assert_eq!(
            coerce(Value::Int(2), T::Int64, T::Float64),
            Some(Value::Float(2.0))
        );
        assert_eq!(
            coerce(Value::Float(2.0), T::Float64, T::Int64),
            Some(Value::Int(2))
        );
        assert_eq!(coerce(Value::Float(2.5), T::Float64, T::Int64), None);
        assert_eq!(coerce(Value::Float(1e19), T::Float64, T::Int64), None);
        assert_eq!(
            coerce(Value::Text("5".into()), T::String, T::Int64),
            Some(Value::Int(5))
        );
        assert_eq!(
            coerce(Value::Text("2026-11-20".into()), T::Date, T::Timestamp),
            Some(Value::Text("2026-11-20T00:00:00Z".into()))
        );
        assert_eq!(coerce(Value::Text("{}".into()), T::Json, T::String), None);
        assert_eq!(coerce(Value::Bytes(vec![1]), T::Bytes, T::String), None);
        assert_eq!(coerce(Value::Null, T::Bytes, T::Bool), Some(Value::Null));
    }

    #[test]
    fn column_lookup_prefers_exact_then_unique_case_insensitive_match() {
        assert_eq!(find_column(["a", "A"], "A"), Some(1));
        assert_eq!(find_column(["Amount"], "amount"), Some(0));
        assert_eq!(find_column(["ab", "AB"], "Ab"), None);
        assert_eq!(find_column(["a"], "b"), None);
    }

    #[test]
    fn format_errors_read_well() {
        let bad = FormatError::BadRows(vec![BadRow {
            row: 7,
            reason: "column `x` is REQUIRED but the value is NULL".into(),
        }]);
        assert_eq!(
            bad.to_string(),
            "1 bad row(s), first at row 7: column `x` is REQUIRED but the value is NULL"
        );
        assert_eq!(ColumnType::Float64.to_string(), "FLOAT64");
    }

    /// A stream of `header` then `body` repeated up to `len` bytes, counting what was read.
    struct Counted {
        inner: Box<dyn Read + Send>,
        read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }
    }

    /// Decodes a file of `head` and then 50 MB of `fill` (one endless record) with a 64 KiB
    /// record limit: the error, and how many bytes were read.
    fn decode_endless(format: Format, head: &'static [u8], fill: u8) -> (String, u64) {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let inner = head.chain(std::io::repeat(fill).take(50 << 20));
        let input = Input::Stream(Box::new(std::io::BufReader::new(Counted {
            inner: Box::new(inner),
            read: read.clone(),
        })));
        let options = DecodeOptions {
            skip_leading_rows: u64::from(format == Format::Csv),
            max_record_bytes: 64 << 10,
            ..Default::default()
        };
        let mut row = Vec::new();
        let error = match Decoder::open(format, input, &options) {
            Err(e) => e.to_string(),
            Ok(mut decoder) => loop {
                match decoder.next_row(&mut row) {
                    Err(e) => break e.to_string(),
                    Ok(Next::End) => break "no error".to_owned(),
                    Ok(_) => {}
                }
            },
        };
        (error, read.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[test]
    fn a_record_over_the_limit_is_refused_without_being_read_whole() {
        for (format, head, fill) in [
            (Format::Csv, &b"a,b\n1,2\n"[..], b'x'),
            (Format::Csv, &b"a,b\n1,\""[..], b'x'), // one quoted field, never closed
            (Format::Ndjson, &b"{\"a\": 1}\n{\"a\": \""[..], b'x'),
            (Format::Csv, &b""[..], 0), // a sparse file: NUL bytes, no line end
        ] {
            let (error, read) = decode_endless(format, head, fill);
            assert!(error.contains("max_record_bytes"), "{format:?}: {error}");
            assert!(
                read < 2 << 20,
                "{format:?}: read {read} bytes of a 50 MB record to refuse it"
            );
        }
    }

    #[test]
    fn a_file_with_more_columns_than_a_table_holds_is_unreadable() {
        let wide = |n: usize| {
            let mut line = (0..n)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",");
            line.push('\n');
            line
        };
        for skip in [0, 1] {
            let text = wide(MAX_COLUMNS + 1);
            let options = DecodeOptions {
                skip_leading_rows: skip,
                ..Default::default()
            };
            let e = decode(Format::Csv, text.as_bytes(), &options).unwrap_err();
            assert!(e.to_string().contains("columns"), "{e}");
        }
        let object: String = (0..=MAX_COLUMNS)
            .map(|i| format!("\"c{i}\": 1"))
            .collect::<Vec<_>>()
            .join(",");
        let e = decode(
            Format::Ndjson,
            format!("{{{object}}}\n").as_bytes(),
            &DecodeOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("columns"), "{e}");
        assert!(decode(Format::Csv, wide(50).as_bytes(), &DecodeOptions::default()).is_ok());
    }
}
