//! The one coercion table: how a value read from a file becomes a value of a BigQuery column
//! type, and how autodetect picks a column's type. Every format goes through it; the format
//! readers only turn their native values into text (CSV), JSON (NDJSON) or a typed value
//! (Avro, Parquet).
//!
//! The rules follow BigQuery's documentation:
//! - CSV and JSON loading, <https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-csv>
//!   and `…-json`: DATE values are `YYYY-MM-DD`; TIMESTAMP values use a dash or a slash in the
//!   date part (`YYYY-MM-DD` or `YYYY/MM/DD`) and colons in the `hh:mm:ss` part, with an
//!   optional fraction and zone.
//! - Schema auto-detection, <https://cloud.google.com/bigquery/docs/schema-detect>: the type
//!   of a column is chosen from up to the first 500 rows; a column whose sampled values are
//!   all empty is STRING.
//! - Avro and Parquet conversions,
//!   <https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-avro#avro_conversions>
//!   and `…-parquet#parquet_conversions`: the natural type of each field, converted to a
//!   declared type where BigQuery allows it.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};

use super::{BadRow, Column, ColumnType, Value};

/// The rows BigQuery samples for schema auto-detection ("scans up to the first 500 rows",
/// <https://cloud.google.com/bigquery/docs/schema-detect>).
pub const SAMPLE_ROWS: usize = 500;

/// The index of the column named `wanted`: an exact match, else the only case-insensitive one
/// (BigQuery column names are case-insensitive).
pub(super) fn find_column<'a>(
    names: impl IntoIterator<Item = &'a str>,
    wanted: &str,
) -> Option<usize> {
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
pub(super) fn duplicate_name<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .find(|n| !seen.insert(n.to_ascii_lowercase()))
}

/// Whether `value` is of the kind [`Rows`] uses for a column of type `ty`.
pub(super) fn fits(value: &Value, ty: ColumnType) -> bool {
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
pub(super) fn check_null(column: &Column, value: Value) -> Result<Value, String> {
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
pub(super) fn conversion_error(column: &Column, shown: &str) -> String {
    format!(
        "column `{}`: cannot convert {shown} to {}",
        column.name, column.ty
    )
}

/// A short, quoted rendering of text for error messages.
pub(super) fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if text.chars().count() > MAX_CHARS {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    } else {
        format!("{text:?}")
    }
}

/// A short rendering of a value for error messages.
pub(super) fn describe(value: &Value) -> String {
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
/// integers and floats in decimal notation (FLOAT64 also `NaN`, `Infinity`, `-inf`, as
/// GoogleSQL casts them), booleans as true/false/t/f/yes/no/y/n/1/0, BYTES as base64, TIMESTAMP
/// as [`parse_timestamp`] reads it, DATE as `YYYY-MM-DD`, JSON as any JSON text. `None` if it
/// does not convert.
pub(super) fn from_text(text: &str, ty: ColumnType) -> Option<Value> {
    use base64::Engine as _;
    match ty {
        ColumnType::String => Some(Value::Text(text.to_owned())),
        ColumnType::Int64 => parse_int(text).map(Value::Int),
        ColumnType::Float64 => parse_float(text).map(Value::Float),
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

/// [`from_text`] into `slot`, reusing the text buffer `slot` holds when the value is text
/// (a reader that keeps its row between rows allocates nothing for a STRING or TIMESTAMP
/// cell). `false` if `text` does not convert (`slot` is then unspecified).
pub(super) fn from_text_into(text: &str, ty: ColumnType, slot: &mut Value) -> bool {
    match ty {
        ColumnType::String => {
            set_text(slot, |buf| buf.push_str(text));
            true
        }
        ColumnType::Timestamp => match fast_timestamp(text.as_bytes()) {
            Some(instant) => {
                set_text(slot, |buf| push_timestamp_text(instant, buf));
                true
            }
            None => match from_text(text, ty) {
                Some(value) => {
                    *slot = value;
                    true
                }
                None => false,
            },
        },
        _ => match from_text(text, ty) {
            Some(value) => {
                *slot = value;
                true
            }
            None => false,
        },
    }
}

/// Sets `slot` to the text `write` puts in an empty buffer: the buffer `slot` held when it
/// was text, else a new one.
fn set_text(slot: &mut Value, write: impl FnOnce(&mut String)) {
    let mut buf = match std::mem::replace(slot, Value::Null) {
        Value::Text(mut s) => {
            s.clear();
            s
        }
        _ => String::new(),
    };
    write(&mut buf);
    *slot = Value::Text(buf);
}

/// A decimal integer, optionally signed (`+7`, `-12`, `007`).
pub(super) fn parse_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A float in decimal or exponent notation, or one of the special values GoogleSQL accepts
/// for FLOAT64 (`NaN`, `inf`, `+inf`, `-inf`, `Infinity`, case-insensitive).
pub(super) fn parse_float(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let special = ["nan", "inf", "infinity"]
        .iter()
        .any(|s| body.eq_ignore_ascii_case(s));
    let numeric = !body.is_empty()
        && body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if special || numeric {
        text.parse().ok()
    } else {
        None
    }
}

/// Whether `text` is a number written with a redundant leading zero (`007`, `-01.5`).
/// Schema auto-detection keeps such values as STRING, as BigQuery does (identifiers such as
/// ZIP codes and account numbers keep their zeros); a declared INT64 or FLOAT64 column still
/// reads them as numbers.
fn has_leading_zero(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text).as_bytes();
    matches!(body, [b'0', next, ..] if next.is_ascii_digit())
}

/// Converts a value decoded from a typed format (Avro, Parquet, JSON scalars), whose natural type
/// is `from`, to the declared type `to`. `None` if BigQuery would reject the conversion.
pub(super) fn coerce(value: Value, from: ColumnType, to: ColumnType) -> Option<Value> {
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
pub(super) fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; anything in [-2^63, 2^63) converts without loss.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// Parses a boolean; `lenient` also accepts t/f/yes/no/y/n/1/0 (as BigQuery does for declared
/// BOOL columns). Case-insensitive.
pub(super) fn parse_bool(text: &str, lenient: bool) -> Option<bool> {
    let is = |word: &str| text.eq_ignore_ascii_case(word);
    if is("true") {
        Some(true)
    } else if is("false") {
        Some(false)
    } else if lenient && ["t", "yes", "y", "1"].into_iter().any(is) {
        Some(true)
    } else if lenient && ["f", "no", "n", "0"].into_iter().any(is) {
        Some(false)
    } else {
        None
    }
}

/// Parses a timestamp as BigQuery loads one from CSV or JSON: the date part `YYYY-MM-DD` or
/// `YYYY/MM/DD`, then `T`, `t` or a space, `hh:mm:ss` with an optional fraction, then an
/// optional zone (`Z`, `+hh:mm`, ` UTC`); no zone means UTC. Returns it as RFC 3339 text in UTC
/// (`2026-11-20T08:30:00Z`, with as many fractional digits as needed).
pub(super) fn parse_timestamp(text: &str) -> Option<String> {
    if let Some(instant) = fast_timestamp(text.as_bytes()) {
        return Some(timestamp_text(instant));
    }
    // `YYYY/MM/DD` is documented as valid for TIMESTAMP (not for DATE): read it as dashes.
    let normalized;
    let text = match text.as_bytes() {
        [_, _, _, _, b'/', _, _, b'/', ..] => {
            normalized = text.replacen('/', "-", 2);
            normalized.as_str()
        }
        _ => text,
    };
    let instant = match DateTime::parse_from_rfc3339(text) {
        Ok(dt) => dt.with_timezone(&Utc),
        Err(_) => {
            let naive = text.strip_suffix(" UTC").unwrap_or(text);
            let with_zone = ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z"]
                .iter()
                .find_map(|fmt| DateTime::parse_from_str(naive, fmt).ok())
                .map(|dt| dt.with_timezone(&Utc));
            match with_zone {
                Some(instant) => instant,
                None => ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                    .iter()
                    .find_map(|fmt| NaiveDateTime::parse_from_str(naive, fmt).ok())?
                    .and_utc(),
            }
        }
    };
    Some(timestamp_text(instant))
}

/// The common shapes of [`parse_timestamp`] without trying one `chrono` format after another
/// (a timestamp column otherwise dominates the cost of a CSV load): `YYYY-MM-DD` or
/// `YYYY/MM/DD`, `T`/`t`/space, `hh:mm:ss`, an optional fraction of up to 9 digits, then
/// nothing, `Z`, ` UTC` or `±hh:mm`. `None` for anything else (the general path decides).
fn fast_timestamp(b: &[u8]) -> Option<DateTime<Utc>> {
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    }
    let sep = *b.get(4)?;
    if b.len() < 19
        || !matches!(sep, b'-' | b'/')
        || b.get(7) != Some(&sep)
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(num(b.get(0..4)?)?).ok()?,
        num(b.get(5..7)?)?,
        num(b.get(8..10)?)?,
    )?;
    let (h, m, sec) = (
        num(b.get(11..13)?)?,
        num(b.get(14..16)?)?,
        num(b.get(17..19)?)?,
    );
    let mut rest = b.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(frac.get(..digits)?)? * 10u32.pow(9 - u32::try_from(digits).ok()?);
        rest = frac.get(digits..)?;
    }
    let offset_secs: i64 = match rest {
        b"" | b"Z" | b"z" | b" UTC" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = i64::from(num(&[*h1, *h2])?);
            let mm = i64::from(num(&[*m1, *m2])?);
            if hh > 23 || mm > 59 {
                return None;
            }
            let secs = hh * 3600 + mm * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let time = NaiveTime::from_hms_nano_opt(h, m, sec, nanos)?;
    let local = NaiveDateTime::new(date, time).and_utc();
    local.checked_sub_signed(chrono::Duration::seconds(offset_secs))
}

/// Parses a `YYYY-MM-DD` date (exactly that shape), returned in the same form.
pub(super) fn parse_date(text: &str) -> Option<String> {
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
pub(super) fn timestamp_text(instant: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(30);
    push_timestamp_text(instant, &mut out);
    out
}

/// Appends [`timestamp_text`] of `instant` to `out`: what chrono's `to_rfc3339_opts(AutoSi,
/// true)` writes (`2026-11-20T08:30:00Z`, a fraction of 3, 6 or 9 digits when there is one),
/// written digit by digit for the years 0 to 9999 (a timestamp column otherwise spends most
/// of a CSV load's conversion time in chrono's formatter); chrono writes the others.
fn push_timestamp_text(instant: DateTime<Utc>, out: &mut String) {
    use chrono::{Datelike, Timelike};
    let year = instant.year();
    let nanos = instant.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        out.push_str(&instant.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    fn digits(out: &mut String, value: u32, width: u32) {
        for k in (0..width).rev() {
            let d = (value / 10u32.pow(k)) % 10;
            out.push(char::from(b'0' + d as u8));
        }
    }
    digits(out, year.unsigned_abs(), 4);
    out.push('-');
    digits(out, instant.month(), 2);
    out.push('-');
    digits(out, instant.day(), 2);
    out.push('T');
    digits(out, instant.hour(), 2);
    out.push(':');
    digits(out, instant.minute(), 2);
    out.push(':');
    digits(out, instant.second(), 2);
    let (fraction, width) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if width > 0 {
        out.push('.');
        digits(out, fraction, width);
    }
    out.push('Z');
}

/// The unit of an integer timestamp or time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeUnit {
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    pub(super) fn instant(self, value: i64) -> Option<DateTime<Utc>> {
        match self {
            TimeUnit::Millis => DateTime::from_timestamp_millis(value),
            TimeUnit::Micros => DateTime::from_timestamp_micros(value),
            TimeUnit::Nanos => Some(DateTime::from_timestamp_nanos(value)),
        }
    }
}

/// An epoch-based integer timestamp as RFC 3339 UTC text; `None` if out of range.
pub(super) fn epoch_timestamp_text(value: i64, unit: TimeUnit) -> Option<String> {
    unit.instant(value).map(timestamp_text)
}

/// An epoch-based integer timestamp without a zone (Avro local-timestamp, Parquet timestamp not
/// adjusted to UTC) as `YYYY-MM-DDTHH:MM:SS[.f]` text; `None` if out of range.
pub(super) fn local_timestamp_text(value: i64, unit: TimeUnit) -> Option<String> {
    unit.instant(value)
        .map(|dt| dt.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string())
}

/// Days since 1970-01-01 as `YYYY-MM-DD`; `None` if out of range.
pub(super) fn epoch_date_text(days: i32) -> Option<String> {
    DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|dt| dt.date_naive().format("%Y-%m-%d").to_string())
}

/// A time of day given in `unit`s since midnight as `HH:MM:SS[.f]`; `None` if out of range.
pub(super) fn time_of_day_text(value: i64, unit: TimeUnit) -> Option<String> {
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
pub(super) fn decimal_text(unscaled_be: &[u8], scale: i64) -> String {
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

/// Detects the type of a text column (CSV fields, JSON strings) from its non-empty sampled
/// values: INT64, else FLOAT64, else BOOL (true/false), else TIMESTAMP, else DATE, else STRING.
/// A number with a redundant leading zero (`007`) is not a number here (see
/// [`has_leading_zero`]).
#[derive(Debug, Default)]
pub(super) struct TextInference {
    seen: bool,
    not_int: bool,
    not_float: bool,
    /// Whether some value was a number with digits (a column of only `NaN` stays STRING).
    digits: bool,
    not_bool: bool,
    not_timestamp: bool,
    not_date: bool,
}

impl TextInference {
    pub(super) fn observe(&mut self, text: &str) {
        self.seen = true;
        let zero = has_leading_zero(text);
        if !self.not_int && (zero || parse_int(text).is_none()) {
            self.not_int = true;
        }
        if !self.not_float {
            match parse_float(text) {
                Some(f) if !zero => self.digits |= f.is_finite(),
                _ => self.not_float = true,
            }
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
    pub(super) fn temporal_type(&self) -> Option<ColumnType> {
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

    pub(super) fn column_type(&self) -> ColumnType {
        if !self.seen {
            ColumnType::String
        } else if !self.not_int {
            ColumnType::Int64
        } else if !self.not_float && self.digits {
            ColumnType::Float64
        } else if !self.not_bool {
            ColumnType::Bool
        } else {
            self.temporal_type().unwrap_or(ColumnType::String)
        }
    }
}

/// A JSON string column: TIMESTAMP or DATE when every value is one, else STRING (JSON infers
/// numbers and booleans from its own types, not from strings).
impl conveyor_core::ndjson::TextTypes for TextInference {
    fn observe(&mut self, text: &str) {
        TextInference::observe(self, text);
    }

    fn string_type(&self) -> ColumnType {
        self.temporal_type().unwrap_or(ColumnType::String)
    }
}

/// How one output column is read from a file whose fields have natural types (Avro, Parquet,
/// a sampled NDJSON key): the field it comes from and that field's own type.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The output column.
    pub(super) column: Column,
    /// The index of the file's field.
    pub(super) index: usize,
    /// The type the field maps to on its own.
    pub(super) natural: ColumnType,
}

/// The output columns of a file whose fields are `fields` (name, natural type, nullable):
/// every field when `declared` is `None` (autodetect), else exactly the declared columns,
/// each found by name (exactly, else the one case-insensitive match: BigQuery column names
/// are case-insensitive). `Err` names a declared column the file lacks.
pub(super) fn plan(fields: &[Column], declared: Option<&[Column]>) -> Result<Vec<Plan>, String> {
    match declared {
        None => Ok(fields
            .iter()
            .enumerate()
            .map(|(index, field)| Plan {
                column: field.clone(),
                index,
                natural: field.ty,
            })
            .collect()),
        Some(declared) => declared
            .iter()
            .map(|column| {
                let index = find_column(fields.iter().map(|c| c.name.as_str()), &column.name)
                    .ok_or_else(|| {
                        format!("declared column `{}` is not in the file", column.name)
                    })?;
                let natural = fields.get(index).map_or(column.ty, |f| f.ty);
                Ok(Plan {
                    column: column.clone(),
                    index,
                    natural,
                })
            })
            .collect(),
    }
}

/// The last step of every cell: a value of the field's natural type becomes a value of the
/// output column's type ([`coerce`]), and a NULL in a REQUIRED column is refused.
pub(super) fn finish(plan: &Plan, natural: Value) -> Result<Value, String> {
    let value = if plan.natural == plan.column.ty {
        natural
    } else {
        let shown = describe(&natural);
        coerce(natural, plan.natural, plan.column.ty)
            .ok_or_else(|| conversion_error(&plan.column, &shown))?
    };
    check_null(&plan.column, value)
}

/// The end of one field of a nested format (Avro, Parquet): its error names the column, a
/// repeated field's NULL is the empty array `[]`, then [`finish`].
pub(super) fn finish_field(
    plan: &Plan,
    natural: Result<Value, String>,
    repeated: bool,
) -> Result<Value, String> {
    natural
        .map_err(|why| format!("column `{}`: {why}", plan.column.name))
        .map(|v| match v {
            Value::Null if repeated => Value::Text("[]".to_owned()),
            v => v,
        })
        .and_then(|natural| finish(plan, natural))
}

/// Adds a finished cell to `row`; a refused one empties the row and is row `number`'s bad
/// result, which the reader returns.
pub(super) fn push_cell(
    row: &mut Vec<Value>,
    number: u64,
    cell: Result<Value, String>,
) -> Option<super::Next> {
    match cell {
        Ok(cell) => {
            row.push(cell);
            None
        }
        Err(reason) => {
            row.clear();
            Some(super::Next::Bad(bad(number, reason)))
        }
    }
}

/// A bad row as the error lists it.
pub(super) fn bad(row: u64, reason: impl Into<String>) -> BadRow {
    BadRow {
        row,
        reason: reason.into(),
    }
}
