//! Decoding of landing-bucket files into rows, for the embedded warehouse.
//!
//! BigQuery decodes files itself; the embedded warehouse needs this module to do the same for the
//! four load formats Conveyor supports.
//!
//! # Layout
//! - `mod.rs`: the shared row model ([`Rows`], [`Column`], [`Value`]) and [`decode`].
//! - `csv.rs`, `ndjson.rs`, `avro.rs`, `parquet.rs`: one decoder per format.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};

mod avro;
mod csv;
mod ndjson;
mod parquet;

pub use conveyor_core::format::{BadRow, Column, ColumnType, Format};

/// One cell of a decoded row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Text (also timestamps, dates and JSON, as documented on [`ColumnType`]).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// The decoded content of one file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// The columns, in file order.
    pub columns: Vec<Column>,
    /// The rows; each has exactly `columns.len()` values.
    pub rows: Vec<Vec<Value>>,
}

/// Options of a decode.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// The declared schema; `None` means autodetect from the file.
    pub schema: Option<Vec<Column>>,
    /// CSV: number of leading lines to skip (a header is 1). With autodetect and 1, the header
    /// names the columns.
    pub skip_leading_rows: u64,
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
    /// Some rows are bad; none is loaded.
    #[error("{} bad row(s), first at row {}: {}", .0.len(), .0.first().map_or(0, |b| b.row), .0.first().map_or("", |b| b.reason.as_str()))]
    BadRows(Vec<BadRow>),
}

/// Decodes a whole file's bytes.
///
/// With `options.schema = None` the columns and their types are detected from the file, the way
/// a BigQuery load job with autodetect does; with a declared schema the output has exactly the
/// declared columns and every value is converted to its column's type.
///
/// All-or-nothing: if any row is bad the result is [`FormatError::BadRows`] listing the bad rows
/// (at most [`MAX_BAD_ROWS`] of them, each with its row or line number), never a partial
/// [`Rows`]. A file that is not in `format` at all is [`FormatError::Unreadable`].
///
/// # Errors
/// [`FormatError::Unreadable`] when the file as a whole cannot be read (or a declared column is
/// missing from an Avro/Parquet file or a CSV header), [`FormatError::BadRows`] when some rows
/// cannot be decoded or converted.
pub fn decode(format: Format, bytes: &[u8], options: &DecodeOptions) -> Result<Rows, FormatError> {
    match format {
        Format::Csv => csv::decode(bytes, options),
        Format::Ndjson => ndjson::decode(bytes, options),
        Format::Avro => avro::decode(bytes, options),
        Format::Parquet => parquet::decode(bytes, options),
        Format::Orc => Err(FormatError::Unreadable {
            format,
            reason: "the embedded warehouse cannot read ORC files (BigQuery loads them)".to_owned(),
        }),
    }
}

/// The most bad rows one [`decode`] reports; decoding stops once this many are found.
pub const MAX_BAD_ROWS: usize = 100;

/// Collects bad rows up to [`MAX_BAD_ROWS`].
#[derive(Debug, Default)]
struct BadRowList {
    rows: Vec<BadRow>,
}

impl BadRowList {
    /// Records a bad row. Returns `true` when the list is full and decoding should stop.
    fn push(&mut self, row: u64, reason: impl Into<String>) -> bool {
        if self.rows.len() < MAX_BAD_ROWS {
            self.rows.push(BadRow {
                row,
                reason: reason.into(),
            });
        }
        self.is_full()
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= MAX_BAD_ROWS
    }

    /// `ok` if no row was bad, otherwise [`FormatError::BadRows`].
    fn into_result<T>(self, ok: T) -> Result<T, FormatError> {
        if self.rows.is_empty() {
            Ok(ok)
        } else {
            Err(FormatError::BadRows(self.rows))
        }
    }
}

/// The index of the column named `wanted`: an exact match, else the only case-insensitive one
/// (BigQuery column names are case-insensitive).
fn find_column<'a>(names: impl IntoIterator<Item = &'a str>, wanted: &str) -> Option<usize> {
    let names: Vec<&str> = names.into_iter().collect();
    if let Some(i) = names.iter().position(|n| *n == wanted) {
        return Some(i);
    }
    let mut matches = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.eq_ignore_ascii_case(wanted))
        .map(|(i, _)| i);
    match (matches.next(), matches.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

/// The first name that occurs twice (case-insensitively), if any.
fn duplicate_name<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .find(|n| !seen.insert(n.to_ascii_lowercase()))
}

/// Whether `value` is of the kind [`Rows`] uses for a column of type `ty`.
fn fits(value: &Value, ty: ColumnType) -> bool {
    match value {
        Value::Null => true,
        Value::Int(_) => ty == ColumnType::Int64,
        Value::Float(_) => ty == ColumnType::Float64,
        Value::Bool(_) => ty == ColumnType::Bool,
        Value::Bytes(_) => ty == ColumnType::Bytes,
        Value::Text(_) => matches!(
            ty,
            ColumnType::String | ColumnType::Timestamp | ColumnType::Date | ColumnType::Json
        ),
    }
}

/// Rejects a NULL in a REQUIRED column.
fn check_null(column: &Column, value: Value) -> Result<Value, String> {
    if matches!(value, Value::Null) && !column.nullable {
        Err(format!(
            "column `{}` is REQUIRED but the value is NULL",
            column.name
        ))
    } else {
        Ok(value)
    }
}

/// The reason for a value that cannot be converted to its column's type.
fn conversion_error(column: &Column, shown: &str) -> String {
    format!(
        "column `{}`: cannot convert {shown} to {}",
        column.name, column.ty
    )
}

/// A short, quoted rendering of text for error messages.
fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if text.chars().count() > MAX_CHARS {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    } else {
        format!("{text:?}")
    }
}

/// A short rendering of a value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Text(t) => quote(t),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
    }
}

/// Converts a text cell (CSV field, JSON string) to `ty`, the way BigQuery reads text:
/// integers and floats in Rust's syntax, booleans as true/false/t/f/yes/no/y/n/1/0, BYTES as
/// base64, TIMESTAMP as RFC 3339 or `YYYY-MM-DD[ HH:MM:SS[.f]][ UTC]` (UTC when no zone), DATE
/// as `YYYY-MM-DD`, JSON as any JSON text. `None` if it does not convert.
fn from_text(text: &str, ty: ColumnType) -> Option<Value> {
    use base64::Engine as _;
    match ty {
        ColumnType::String => Some(Value::Text(text.to_owned())),
        ColumnType::Int64 => text.parse().ok().map(Value::Int),
        ColumnType::Float64 => text.parse().ok().map(Value::Float),
        ColumnType::Bool => parse_bool(text, true).map(Value::Bool),
        ColumnType::Bytes => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(Value::Bytes),
        ColumnType::Timestamp => parse_timestamp(text)
            .or_else(|| parse_date(text).map(|d| format!("{d}T00:00:00Z")))
            .map(Value::Text),
        ColumnType::Date => parse_date(text).map(Value::Text),
        ColumnType::Json => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .map(|json| Value::Text(json.to_string())),
    }
}

/// Converts a value decoded from a typed format (Avro, Parquet, JSON scalars), whose natural type
/// is `from`, to the declared type `to`. `None` if BigQuery would reject the conversion.
fn coerce(value: Value, from: ColumnType, to: ColumnType) -> Option<Value> {
    use ColumnType as T;
    if from == to || matches!(value, Value::Null) {
        return Some(value);
    }
    match (value, from, to) {
        (Value::Int(i), _, T::Float64) => Some(Value::Float(i as f64)),
        (Value::Int(i), _, T::String) => Some(Value::Text(i.to_string())),
        (Value::Float(f), _, T::Int64) => float_to_int(f).map(Value::Int),
        (Value::Float(f), _, T::String) => Some(Value::Text(f.to_string())),
        (Value::Bool(b), _, T::String) => Some(Value::Text(b.to_string())),
        (Value::Text(t), T::Timestamp | T::Date, T::String) => Some(Value::Text(t)),
        (Value::Text(t), T::Date, T::Timestamp) => Some(Value::Text(format!("{t}T00:00:00Z"))),
        (Value::Text(t), T::String, to) => from_text(&t, to),
        _ => None,
    }
}

/// `f` as an integer, if it is one exactly and fits.
fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; anything in [-2^63, 2^63) converts without loss.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// Parses a boolean; `lenient` also accepts t/f/yes/no/y/n/1/0 (as BigQuery does for declared
/// BOOL columns). Case-insensitive.
fn parse_bool(text: &str, lenient: bool) -> Option<bool> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "true" => Some(true),
        "false" => Some(false),
        "t" | "yes" | "y" | "1" if lenient => Some(true),
        "f" | "no" | "n" | "0" if lenient => Some(false),
        _ => None,
    }
}

/// Parses a timestamp: RFC 3339 (`T`, `t` or a space between date and time), or a zone-less
/// `YYYY-MM-DD[T ]HH:MM:SS[.f]`, optionally followed by ` UTC`, read as UTC. Returns it as RFC 3339
/// text in UTC (`2026-11-20T08:30:00Z`, with as many fractional digits as needed).
fn parse_timestamp(text: &str) -> Option<String> {
    let instant = match DateTime::parse_from_rfc3339(text) {
        Ok(dt) => dt.with_timezone(&Utc),
        Err(_) => {
            let naive = text.strip_suffix(" UTC").unwrap_or(text);
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(naive, fmt).ok())?
                .and_utc()
        }
    };
    Some(timestamp_text(instant))
}

/// Parses a `YYYY-MM-DD` date (exactly that shape), returned in the same form.
fn parse_date(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape_ok {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// An instant as RFC 3339 text in UTC.
fn timestamp_text(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The unit of an integer timestamp or time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeUnit {
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    fn instant(self, value: i64) -> Option<DateTime<Utc>> {
        match self {
            TimeUnit::Millis => DateTime::from_timestamp_millis(value),
            TimeUnit::Micros => DateTime::from_timestamp_micros(value),
            TimeUnit::Nanos => Some(DateTime::from_timestamp_nanos(value)),
        }
    }
}

/// An epoch-based integer timestamp as RFC 3339 UTC text; `None` if out of range.
fn epoch_timestamp_text(value: i64, unit: TimeUnit) -> Option<String> {
    unit.instant(value).map(timestamp_text)
}

/// An epoch-based integer timestamp without a zone (Avro local-timestamp, Parquet timestamp not
/// adjusted to UTC) as `YYYY-MM-DDTHH:MM:SS[.f]` text; `None` if out of range.
fn local_timestamp_text(value: i64, unit: TimeUnit) -> Option<String> {
    unit.instant(value)
        .map(|dt| dt.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string())
}

/// Days since 1970-01-01 as `YYYY-MM-DD`; `None` if out of range.
fn epoch_date_text(days: i32) -> Option<String> {
    DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|dt| dt.date_naive().format("%Y-%m-%d").to_string())
}

/// A time of day given in `unit`s since midnight as `HH:MM:SS[.f]`; `None` if out of range.
fn time_of_day_text(value: i64, unit: TimeUnit) -> Option<String> {
    let per_second: i64 = match unit {
        TimeUnit::Millis => 1_000,
        TimeUnit::Micros => 1_000_000,
        TimeUnit::Nanos => 1_000_000_000,
    };
    if value < 0 {
        return None;
    }
    let secs = u32::try_from(value / per_second).ok()?;
    let nanos = u32::try_from((value % per_second) * (1_000_000_000 / per_second)).ok()?;
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
        .map(|t| t.format("%H:%M:%S%.f").to_string())
}

/// A decimal given as a big-endian two's-complement unscaled integer and a scale, as exact text
/// (`-12.340`). Used for Avro and Parquet DECIMAL, which Conveyor keeps as STRING.
fn decimal_text(unscaled_be: &[u8], scale: i64) -> String {
    let negative = unscaled_be.first().is_some_and(|b| b & 0x80 != 0);
    // Magnitude, big-endian base 256.
    let mut magnitude: Vec<u8> = unscaled_be.to_vec();
    if negative {
        // Two's complement negation: invert, add one.
        for b in &mut magnitude {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
    }
    // Repeated division by 10 gives the decimal digits, least significant first.
    let mut digits = Vec::new();
    let mut rest: Vec<u8> = magnitude.into_iter().skip_while(|b| *b == 0).collect();
    while !rest.is_empty() {
        let mut remainder: u16 = 0;
        for b in &mut rest {
            let acc = (remainder << 8) | u16::from(*b);
            *b = (acc / 10) as u8;
            remainder = acc % 10;
        }
        digits.push(b'0' + remainder as u8);
        let leading_zeros = rest.iter().take_while(|b| **b == 0).count();
        rest.drain(..leading_zeros);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    let mut text = String::from_utf8_lossy(&digits).into_owned();
    if scale > 0 {
        let scale = usize::try_from(scale).unwrap_or(usize::MAX).min(4096);
        if text.len() <= scale {
            text = format!("{}{text}", "0".repeat(scale + 1 - text.len()));
        }
        text.insert(text.len() - scale, '.');
    } else if scale < 0 && text != "0" {
        let zeros = usize::try_from(-scale).unwrap_or(usize::MAX).min(4096);
        text.push_str(&"0".repeat(zeros));
    }
    if negative && text.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        text.insert(0, '-');
    }
    text
}

/// Detects the type of a text column (CSV fields, JSON strings) from its non-empty values:
/// INT64, else FLOAT64, else BOOL (true/false), else TIMESTAMP, else DATE, else STRING.
#[derive(Debug, Default)]
struct TextInference {
    seen: bool,
    not_int: bool,
    not_float: bool,
    not_bool: bool,
    not_timestamp: bool,
    not_date: bool,
}

impl TextInference {
    fn observe(&mut self, text: &str) {
        self.seen = true;
        if !self.not_int && text.parse::<i64>().is_err() {
            self.not_int = true;
        }
        // Require a digit so that words like "nan" or "Infinity" stay text.
        if !self.not_float
            && (text.parse::<f64>().is_err() || !text.bytes().any(|b| b.is_ascii_digit()))
        {
            self.not_float = true;
        }
        if !self.not_bool && parse_bool(text, false).is_none() {
            self.not_bool = true;
        }
        if !self.not_timestamp && parse_timestamp(text).is_none() {
            self.not_timestamp = true;
        }
        if !self.not_date && parse_date(text).is_none() {
            self.not_date = true;
        }
    }

    /// Whether every value seen is a timestamp, or a date (for JSON, which infers the rest
    /// from JSON types).
    fn temporal_type(&self) -> Option<ColumnType> {
        if !self.seen {
            None
        } else if !self.not_timestamp {
            Some(ColumnType::Timestamp)
        } else if !self.not_date {
            Some(ColumnType::Date)
        } else {
            None
        }
    }

    fn column_type(&self) -> ColumnType {
        if !self.seen {
            ColumnType::String
        } else if !self.not_int {
            ColumnType::Int64
        } else if !self.not_float {
            ColumnType::Float64
        } else if !self.not_bool {
            ColumnType::Bool
        } else {
            self.temporal_type().unwrap_or(ColumnType::String)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

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
        for (format, file) in [
            (Format::Avro, "orders.avro"),
            (Format::Parquet, "orders.parquet"),
            (Format::Csv, "orders.csv"),
            (Format::Ndjson, "orders.ndjson"),
        ] {
            let bytes = std::fs::read(example_dir().join(file)).expect("example file exists");
            let options = DecodeOptions {
                schema: Some(schema.clone()),
                skip_leading_rows: u64::from(format == Format::Csv),
            };
            let rows = decode(format, &bytes, &options)
                .unwrap_or_else(|e| panic!("{file} does not decode: {e}"));
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
        assert_eq!(parse_timestamp("2026-11-20"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(epoch_timestamp_text(i64::MAX, TimeUnit::Micros), None);
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
}
