//! CSV decoding: RFC 4180, UTF-8, optional header line(s), read as a stream.
//!
//! Row numbers are physical line numbers (a record's first line), so a header counts as line 1
//! and a quoted field spanning lines pushes later rows' numbers down accordingly.
//!
//! BigQuery's CSV rules (<https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-csv>):
//! an empty field is NULL (the default `nullMarker`); a row with fewer or more fields than
//! columns is bad (no `allowJaggedRows`, no `ignoreUnknownValues`); a quoted field with a
//! newline is bad unless `allowQuotedNewlines`; with `skipLeadingRows` N the N-th line is the
//! header that autodetect names the columns from.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ::csv::{ByteRecord, Reader, ReaderBuilder};

use super::convert::{
    SAMPLE_ROWS, TextInference, bad, check_null, conversion_error, duplicate_name, from_text_into,
    quote,
};
use super::{
    Column, DecodeOptions, Format, FormatError, MAX_COLUMNS, Next, RowReader, SAMPLE_BYTES, Value,
    record_too_long, too_many_columns,
};
use conveyor_core::config::CsvEncoding;
use conveyor_core::format::ColumnType;

fn unreadable(reason: String) -> FormatError {
    FormatError::Unreadable {
        format: Format::Csv,
        reason,
    }
}

/// The input of the CSV parser, refusing to read on once the record being parsed is longer
/// than the limit (plus the parser's buffer): a record over `load.max_record_bytes` is never
/// held whole, whatever its shape (one line, or many in quotes).
struct Limited {
    inner: Box<dyn BufRead + Send>,
    /// Bytes handed to the parser.
    read: u64,
    /// Where the record being parsed starts (updated after each record).
    start: Arc<AtomicU64>,
    limit: u64,
}

/// What the parser may read beyond a record's limit before it is stopped (its own buffer).
const PARSER_SLACK: u64 = 64 << 10;

impl Read for Limited {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = self.start.load(Ordering::Relaxed);
        if self.read.saturating_sub(start) > self.limit.saturating_add(PARSER_SLACK) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RecordTooLong,
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// The error [`Limited`] stops the parser with.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record too long")
    }
}

impl std::error::Error for RecordTooLong {}

type CsvReader = Reader<Limited>;

struct CsvRows {
    reader: CsvReader,
    /// Where the record being parsed starts, for [`Limited`].
    start: Arc<AtomicU64>,
    limit: u64,
    /// Records read ahead (the autodetect sample), served before the rest of the file.
    sample: VecDeque<ByteRecord>,
    record: ByteRecord,
    columns: Vec<Column>,
    /// The number of fields a record must have.
    width: usize,
    allow_quoted_newlines: bool,
    /// Whether a record may lack trailing fields (read as NULL).
    allow_jagged_rows: bool,
    /// The text that stands for NULL; `None`: an empty field is NULL.
    null_marker: Option<String>,
}

/// An opened CSV file: its columns, its rows, and whether a header was detected.
type Opened = (Vec<Column>, Box<dyn RowReader>, bool);

/// Opens a CSV stream: reads the leading rows (and, with autodetect, the sample). The third
/// value says whether the first line was found to be a header
/// ([`DecodeOptions::detect_header`]).
pub(super) fn open(
    input: Box<dyn BufRead + Send>,
    options: &DecodeOptions,
) -> Result<Opened, FormatError> {
    let start = Arc::new(AtomicU64::new(0));
    let limit = options.record_limit();
    let csv = &options.csv;
    let delimiter = csv
        .delimiter_byte()
        .ok_or_else(|| unreadable("field_delimiter is not one ISO-8859-1 character".into()))?;
    let quote = csv
        .quote_byte()
        .ok_or_else(|| unreadable("quote is not one ISO-8859-1 character".into()))?;
    let input: Box<dyn BufRead + Send> = match csv.encoding {
        Some(CsvEncoding::Iso88591) => Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            Latin1 {
                inner: input,
                pending: Vec::new(),
            },
        )),
        _ => input,
    };
    let mut builder = ReaderBuilder::new();
    builder
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter);
    match quote {
        Some(q) => builder.quote(q),
        None => builder.quoting(false),
    };
    let mut reader = builder.from_reader(Limited {
        inner: input,
        read: 0,
        start: start.clone(),
        limit,
    });
    let mut header: Option<ByteRecord> = None;
    for _ in 0..options.skip_leading_rows {
        let mut record = ByteRecord::new();
        if !read(&mut reader, &mut record, &start, limit)? {
            break;
        }
        header = Some(record);
    }
    if let Some(h) = &header
        && h.len() > MAX_COLUMNS
    {
        return Err(too_many_columns(Format::Csv, h.len()));
    }
    if let Some(declared) = &options.schema
        && declared.len() > MAX_COLUMNS
    {
        return Err(too_many_columns(Format::Csv, declared.len()));
    }
    let names = |h: &ByteRecord| -> Result<(u64, Vec<String>), FormatError> {
        let line = line_of(h);
        let names = h
            .iter()
            .map(|f| text(f, line).map(|t| t.trim().to_owned()))
            .collect::<Result<_, _>>()?;
        Ok((line, names))
    };
    let mut header_detected = false;
    let mut sample = VecDeque::new();
    let (columns, width) = match &options.schema {
        // Declared columns take the fields by position, as BigQuery does: a header line is
        // only skipped.
        Some(columns) => {
            // The table's own schema (no header skipped by the setting): a first line that
            // names the columns is the header.
            if header.is_none() && options.detect_header {
                let mut record = ByteRecord::new();
                if read(&mut reader, &mut record, &start, limit)? {
                    let names_them = record.len() == columns.len()
                        && record.iter().zip(columns).all(|(f, c)| {
                            std::str::from_utf8(f)
                                .is_ok_and(|f| f.trim().eq_ignore_ascii_case(&c.name))
                        });
                    if names_them {
                        header_detected = true;
                    } else {
                        sample.push_back(record);
                    }
                }
            }
            (columns.clone(), columns.len())
        }
        None => {
            // At most SAMPLE_ROWS records, and no more than SAMPLE_BYTES of them (or one).
            let mut bytes = 0u64;
            while sample.len() < SAMPLE_ROWS && bytes < SAMPLE_BYTES {
                let mut record = ByteRecord::new();
                if !read(&mut reader, &mut record, &start, limit)? {
                    break;
                }
                if sample.is_empty() && header.is_none() && record.len() > MAX_COLUMNS {
                    return Err(too_many_columns(Format::Csv, record.len()));
                }
                bytes += record.as_slice().len() as u64;
                sample.push_back(record);
            }
            if header.is_none() && options.detect_header && looks_like_header(&sample) {
                header = sample.pop_front();
                header_detected = true;
            }
            let header = header.as_ref().map(names).transpose()?;
            let columns = detect(header.as_ref(), &sample, csv.null_marker.as_deref())?;
            let width = columns.len();
            (columns, width)
        }
    };
    let rows = CsvRows {
        reader,
        start,
        limit,
        sample,
        record: ByteRecord::new(),
        columns: columns.clone(),
        width,
        allow_quoted_newlines: options.allow_quoted_newlines,
        allow_jagged_rows: csv.allow_jagged_rows,
        null_marker: csv.null_marker.clone(),
    };
    Ok((columns, Box::new(rows), header_detected))
}

/// Whether the first record of `sample` is a header, by BigQuery's autodetect rule: every
/// field of it is non-empty text that is not a number, boolean, date or timestamp, and
/// some column of the records below it holds a type other than STRING (a file whose
/// columns are all text cannot tell its header from a row, and BigQuery reads it as a row).
fn looks_like_header(sample: &VecDeque<ByteRecord>) -> bool {
    let Some(first) = sample.front() else {
        return false;
    };
    let all_text = first.iter().all(|field| {
        let Ok(field) = std::str::from_utf8(field) else {
            return false;
        };
        let mut one = TextInference::default();
        !field.trim().is_empty() && {
            one.observe(field);
            one.column_type() == ColumnType::String
        }
    });
    if !all_text || sample.len() < 2 {
        return false;
    }
    let mut below: Vec<TextInference> =
        (0..first.len()).map(|_| TextInference::default()).collect();
    for record in sample.iter().skip(1).filter(|r| r.len() == first.len()) {
        for (column, field) in below.iter_mut().zip(record.iter()) {
            if let Ok(field) = std::str::from_utf8(field)
                && !field.is_empty()
            {
                column.observe(field);
            }
        }
    }
    below.iter().any(|c| c.column_type() != ColumnType::String)
}

/// ISO-8859-1 bytes as UTF-8: each byte is the character of the same number.
struct Latin1 {
    inner: Box<dyn BufRead + Send>,
    /// Encoded bytes not yet handed out.
    pending: Vec<u8>,
}

impl Read for Latin1 {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                return Ok(0);
            }
            let n = chunk.len().min(buf.len().max(2) / 2 + 1);
            for &b in &chunk[..n] {
                if b < 0x80 {
                    self.pending.push(b);
                } else {
                    self.pending.push(0xC0 | (b >> 6));
                    self.pending.push(0x80 | (b & 0x3F));
                }
            }
            self.inner.consume(n);
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// Reads the next record; `false` at the end. A record longer than `limit` bytes makes the
/// file unreadable (found while it is read, or once it is whole).
fn read(
    reader: &mut CsvReader,
    record: &mut ByteRecord,
    start: &AtomicU64,
    limit: u64,
) -> Result<bool, FormatError> {
    let from = reader.position().clone();
    let more = reader.read_byte_record(record).map_err(|e| {
        let too_long = matches!(e.kind(), ::csv::ErrorKind::Io(io)
            if io.get_ref().is_some_and(|inner| inner.is::<RecordTooLong>()));
        if too_long {
            unreadable(record_too_long(limit, from.line()))
        } else {
            unreadable(e.to_string())
        }
    })?;
    let end = reader.position().byte();
    start.store(end, Ordering::Relaxed);
    // The record's bytes, without its line ending.
    if end.saturating_sub(from.byte()).saturating_sub(1) > limit {
        return Err(unreadable(record_too_long(limit, from.line())));
    }
    Ok(more)
}

fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, ::csv::Position::line)
}

/// A field as text; a file that is not UTF-8 is unreadable.
fn text(field: &[u8], line: u64) -> Result<&str, FormatError> {
    std::str::from_utf8(field).map_err(|_| unreadable(format!("not valid UTF-8 (line {line})")))
}

/// Columns named by the header (or `string_field_N`), typed from the sample.
fn detect(
    header: Option<&(u64, Vec<String>)>,
    sample: &VecDeque<ByteRecord>,
    null_marker: Option<&str>,
) -> Result<Vec<Column>, FormatError> {
    let names: Vec<String> = match (header, sample.front()) {
        (Some((line, header)), _) => {
            let names: Vec<String> = header
                .iter()
                .enumerate()
                .map(|(i, name)| match name.as_str() {
                    "" => format!("string_field_{i}"),
                    name => name.to_owned(),
                })
                .collect();
            if let Some(name) = duplicate_name(names.iter().map(String::as_str)) {
                return Err(unreadable(format!(
                    "the header (line {line}) names column `{name}` twice"
                )));
            }
            names
        }
        (None, Some(first)) => (0..first.len())
            .map(|i| format!("string_field_{i}"))
            .collect(),
        // An empty file has no columns: the load adds no rows (and creates no table).
        (None, None) => return Ok(Vec::new()),
    };
    let mut inference: Vec<TextInference> =
        names.iter().map(|_| TextInference::default()).collect();
    for record in sample.iter().filter(|r| r.len() == names.len()) {
        let line = line_of(record);
        for (column, field) in inference.iter_mut().zip(record.iter()) {
            if !field.is_empty() && Some(field) != null_marker.map(str::as_bytes) {
                column.observe(text(field, line)?);
            }
        }
    }
    Ok(names
        .into_iter()
        .zip(&inference)
        .map(|(name, inference)| Column {
            name,
            ty: inference.column_type(),
            nullable: true,
        })
        .collect())
}

impl CsvRows {
    fn convert(&self, record: &ByteRecord, row: &mut Vec<Value>) -> Result<(), String> {
        if record.len() != self.width && !(self.allow_jagged_rows && record.len() < self.width) {
            return Err(format!(
                "expected {} fields but found {}",
                self.width,
                record.len()
            ));
        }
        if !self.allow_quoted_newlines
            && record
                .iter()
                .any(|f| f.contains(&b'\n') || f.contains(&b'\r'))
        {
            return Err(
                "a quoted field contains a newline (allow_quoted_newlines is false, as in BigQuery)"
                    .to_owned(),
            );
        }
        // `row` holds the previous row (or nothing): its cells are overwritten in place, so a
        // text cell's buffer serves the next row's text.
        row.resize(self.columns.len(), Value::Null);
        for (index, (column, slot)) in self.columns.iter().zip(row.iter_mut()).enumerate() {
            let Some(field) = record.get(index) else {
                // A jagged row's missing trailing field.
                *slot = check_null(column, Value::Null)?;
                continue;
            };
            let is_null = match &self.null_marker {
                None => field.is_empty(),
                // With a marker, an empty field is an empty STRING or BYTES value (and a bad
                // value of any other type), as in BigQuery.
                Some(marker) => field == marker.as_bytes(),
            };
            if is_null {
                *slot = check_null(column, Value::Null)?;
            } else {
                let field = std::str::from_utf8(field).map_err(|_| "not valid UTF-8".to_owned())?;
                if !from_text_into(field, column.ty, slot) {
                    return Err(conversion_error(column, &quote(field)));
                }
            }
        }
        Ok(())
    }
}

impl RowReader for CsvRows {
    fn reuses_row(&self) -> bool {
        true
    }

    fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
        let record = match self.sample.pop_front() {
            Some(record) => record,
            None => {
                let mut record = std::mem::take(&mut self.record);
                let more = read(&mut self.reader, &mut record, &self.start, self.limit);
                self.record = record;
                if !more? {
                    return Ok(Next::End);
                }
                std::mem::take(&mut self.record)
            }
        };
        let line = line_of(&record);
        let result = self.convert(&record, row);
        // Keep the record's buffers for the next read.
        self.record = record;
        match result {
            Ok(()) => Ok(Next::Row(line)),
            Err(reason) if reason == "not valid UTF-8" => {
                Err(unreadable(format!("not valid UTF-8 (line {line})")))
            }
            Err(reason) => {
                row.clear();
                Ok(Next::Bad(bad(line, reason)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::formats::test_support::{bad_rows, column, decode_with, text, unreadable};
    use crate::formats::{
        BadRow, Column, ColumnType, CsvOptions, DecodeOptions, Format, FormatError, MAX_BAD_ROWS,
        Rows, Value, decode,
    };
    use conveyor_core::config::CsvEncoding;

    fn csv(
        text: &[u8],
        skip_leading_rows: u64,
        schema: Option<Vec<Column>>,
    ) -> Result<Rows, FormatError> {
        decode_with(Format::Csv, text, skip_leading_rows, schema)
    }

    fn unreadable_reason(result: Result<Rows, FormatError>) -> String {
        unreadable(Format::Csv, result)
    }

    #[test]
    fn csv_with_header_infers_integer_and_string_columns() {
        let rows = csv(b"id,name\n1,ann\n2,bob\n", 1, None).expect("decodes");
        assert_eq!(
            rows.columns,
            vec![
                column("id", ColumnType::Int64, true),
                column("name", ColumnType::String, true)
            ]
        );
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::Int(1), text("ann")],
                vec![Value::Int(2), text("bob")]
            ]
        );
    }

    #[test]
    fn csv_without_header_names_columns_string_field_n() {
        let rows = csv(b"1,ann\n2,bob\n", 0, None).expect("decodes");
        let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["string_field_0", "string_field_1"]);
        assert_eq!(rows.rows.len(), 2);
    }

    #[test]
    fn csv_infers_float_bool_timestamp_and_date_columns() {
        let data = b"f,b,ts,d,mixed\n1,TRUE,2026-11-20T08:30:00Z,2026-11-20,1\n2.5,false,2026-11-20 09:00:00+01:00,2026-11-21,x\n";
        let rows = csv(data, 1, None).expect("decodes");
        let types: Vec<ColumnType> = rows.columns.iter().map(|c| c.ty).collect();
        assert_eq!(
            types,
            [
                ColumnType::Float64,
                ColumnType::Bool,
                ColumnType::Timestamp,
                ColumnType::Date,
                ColumnType::String
            ]
        );
        assert_eq!(
            rows.rows[1],
            vec![
                Value::Float(2.5),
                Value::Bool(false),
                text("2026-11-20T08:00:00Z"),
                text("2026-11-21"),
                text("x")
            ]
        );
    }

    #[test]
    fn csv_empty_field_is_null_and_does_not_affect_inference() {
        let rows = csv(b"a,b\n1,\n,\n", 1, None).expect("decodes");
        assert_eq!(rows.columns[0].ty, ColumnType::Int64);
        assert_eq!(rows.columns[1].ty, ColumnType::String);
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::Int(1), Value::Null],
                vec![Value::Null, Value::Null]
            ]
        );
    }

    #[test]
    fn csv_reports_every_row_with_wrong_field_count_with_its_line_number() {
        let bad = bad_rows(csv(b"a,b\n1,2\n3\n4,5\n6,7,8\n", 1, None));
        assert_eq!(bad.iter().map(|b| b.row).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(bad[0].reason, "expected 2 fields but found 1");
    }

    #[test]
    fn csv_line_numbers_count_lines_inside_quoted_fields() {
        let schema = vec![
            column("n", ColumnType::Int64, true),
            column("note", ColumnType::String, true),
        ];
        let bad = bad_rows(decode(
            Format::Csv,
            b"n,note\n1,\"two\nlines\"\nx,y\n",
            &DecodeOptions {
                schema: Some(schema),
                skip_leading_rows: 1,
                allow_quoted_newlines: true,
                ..Default::default()
            },
        ));
        assert_eq!(
            bad,
            vec![BadRow {
                row: 4,
                reason: "column `n`: cannot convert \"x\" to INT64".to_owned()
            }]
        );
    }

    #[test]
    fn declared_schema_takes_fields_by_position_not_by_header_name() {
        // BigQuery matches declared columns to fields by position: the header is skipped.
        let schema = vec![
            column("b", ColumnType::Float64, false),
            column("A", ColumnType::String, true),
        ];
        let rows = csv(b"a,b\n1,x\n", 1, Some(schema.clone())).expect("decodes");
        assert_eq!(rows.columns, schema);
        assert_eq!(rows.rows, vec![vec![Value::Float(1.0), text("x")]]);
        let bad = bad_rows(csv(b"a,b,c\n1,x,y\n", 1, Some(schema)));
        assert_eq!(bad[0].reason, "expected 2 fields but found 3");
    }

    #[test]
    fn declared_schema_without_header_maps_fields_by_position() {
        let schema = vec![
            column("when", ColumnType::Timestamp, true),
            column("ok", ColumnType::Bool, true),
            column("raw", ColumnType::Bytes, true),
            column("doc", ColumnType::Json, true),
        ];
        let rows = csv(
            b"2026-11-20,yes,aGk=,\"{\"\"k\"\": [1, 2]}\"\n",
            0,
            Some(schema),
        )
        .expect("decodes");
        assert_eq!(
            rows.rows,
            vec![vec![
                text("2026-11-20T00:00:00Z"),
                Value::Bool(true),
                Value::Bytes(b"hi".to_vec()),
                text("{\"k\":[1,2]}")
            ]]
        );
    }

    #[test]
    fn declared_required_column_rejects_null_with_row_number() {
        let schema = vec![
            column("id", ColumnType::Int64, false),
            column("name", ColumnType::String, true),
        ];
        let bad = bad_rows(csv(b"id,name\n1,a\n,b\n3,c\n", 1, Some(schema)));
        assert_eq!(
            bad,
            vec![BadRow {
                row: 3,
                reason: "column `id` is REQUIRED but the value is NULL".to_owned()
            }]
        );
    }

    #[test]
    fn declared_column_rejects_unconvertible_values_naming_column_and_value() {
        let schema = vec![
            column("amount", ColumnType::Float64, true),
            column("day", ColumnType::Date, true),
        ];
        let bad = bad_rows(csv(
            b"amount,day\nabc,2026-11-20\n1.5,2026-13-01\n2,2026-11-20\n",
            1,
            Some(schema),
        ));
        assert_eq!(bad.len(), 2);
        assert_eq!(
            (bad[0].row, bad[0].reason.as_str()),
            (2, "column `amount`: cannot convert \"abc\" to FLOAT64")
        );
        assert_eq!(
            (bad[1].row, bad[1].reason.as_str()),
            (3, "column `day`: cannot convert \"2026-13-01\" to DATE")
        );
    }

    #[test]
    fn invalid_utf8_csv_is_unreadable() {
        let reason = unreadable_reason(csv(b"a,b\n1,\xff\xfe\n", 1, None));
        assert!(
            reason.contains("UTF-8") && reason.contains("line 2"),
            "{reason}"
        );
    }

    #[test]
    fn duplicate_header_names_are_unreadable() {
        let reason = unreadable_reason(csv(b"a,A\n1,2\n", 1, None));
        assert!(reason.contains("`A` twice"), "{reason}");
    }

    #[test]
    fn csv_bad_row_report_is_capped() {
        let mut data = b"a,b\n".to_vec();
        for _ in 0..(MAX_BAD_ROWS + 50) {
            data.extend_from_slice(b"1\n");
        }
        assert_eq!(bad_rows(csv(&data, 1, None)).len(), MAX_BAD_ROWS);
    }

    #[test]
    fn empty_csv_decodes_to_no_rows() {
        assert_eq!(csv(b"", 1, None).expect("decodes"), Rows::default());
        let schema = vec![column("a", ColumnType::String, false)];
        let rows = csv(b"", 0, Some(schema.clone())).expect("decodes");
        assert_eq!((rows.columns, rows.rows.len()), (schema, 0));
    }

    #[test]
    fn header_only_csv_has_string_columns_and_no_rows() {
        let rows = csv(b"\xEF\xBB\xBFa,b\r\n", 1, None).expect("decodes");
        assert_eq!(
            rows.columns,
            vec![
                column("a", ColumnType::String, true),
                column("b", ColumnType::String, true)
            ]
        );
        assert!(rows.rows.is_empty());
    }

    #[test]
    fn skip_leading_rows_uses_the_last_skipped_row_as_header() {
        let rows = csv(b"exported by x\nid\n7\n", 2, None).expect("decodes");
        assert_eq!(rows.columns, vec![column("id", ColumnType::Int64, true)]);
        assert_eq!(rows.rows, vec![vec![Value::Int(7)]]);
    }

    fn with(text: &[u8], options: DecodeOptions) -> Result<Rows, FormatError> {
        decode(Format::Csv, text, &options)
    }

    #[test]
    fn autodetect_reads_a_first_line_of_text_above_typed_rows_as_the_header() {
        let options = || DecodeOptions {
            detect_header: true,
            ..Default::default()
        };
        let rows = with(b"id,name\n1,ann\n2,bob\n", options()).expect("decodes");
        let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name"]);
        assert_eq!(rows.rows.len(), 2);
        // All text: no telling the header from a row, so it is a row (as in BigQuery).
        let rows = with(b"name,city\nann,paris\n", options()).expect("decodes");
        assert_eq!(rows.columns[0].name, "string_field_0");
        assert_eq!(rows.rows.len(), 2);
        // A first line with a number is data.
        let rows = with(b"1,ann\n2,bob\n", options()).expect("decodes");
        assert_eq!(rows.columns[0].name, "string_field_0");
        assert_eq!(rows.rows.len(), 2);
    }

    #[test]
    fn a_pipe_delimiter_a_single_quote_and_a_null_marker_are_honoured() {
        let options = DecodeOptions {
            skip_leading_rows: 1,
            csv: CsvOptions {
                field_delimiter: Some("|".to_owned()),
                quote: Some("'".to_owned()),
                null_marker: Some("\\N".to_owned()),
                ..CsvOptions::default()
            },
            ..Default::default()
        };
        let rows = with(b"id|name|n\n1|'a|b'|\\N\n2||5\n", options).expect("decodes");
        let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "n"]);
        assert_eq!(rows.columns[2].ty, ColumnType::Int64);
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::Int(1), text("a|b"), Value::Null],
                // With a marker, an empty STRING field is an empty string, not NULL.
                vec![Value::Int(2), text(""), Value::Int(5)],
            ]
        );
    }

    #[test]
    fn a_tab_delimiter_and_no_quoting_read_quotes_as_text() {
        let options = DecodeOptions {
            schema: Some(vec![
                column("a", ColumnType::String, true),
                column("b", ColumnType::String, true),
            ]),
            csv: CsvOptions {
                field_delimiter: Some("tab".to_owned()),
                quote: Some(String::new()),
                ..CsvOptions::default()
            },
            ..Default::default()
        };
        let rows = with(b"\"x\"\ty,z\n", options).expect("decodes");
        assert_eq!(rows.rows, vec![vec![text("\"x\""), text("y,z")]]);
    }

    #[test]
    fn latin1_files_are_read_as_latin1() {
        let options = |encoding| DecodeOptions {
            schema: Some(vec![column("city", ColumnType::String, true)]),
            csv: CsvOptions {
                encoding,
                ..CsvOptions::default()
            },
            ..Default::default()
        };
        let latin1 = b"Bogot\xe1\nS\xe3o Paulo\n";
        let rows = with(latin1, options(Some(CsvEncoding::Iso88591))).expect("decodes");
        assert_eq!(
            rows.rows,
            vec![vec![text("Bogotá")], vec![text("São Paulo")]]
        );
        let reason = unreadable_reason(with(latin1, options(None)));
        assert!(reason.contains("UTF-8"), "{reason}");
    }

    #[test]
    fn jagged_rows_read_missing_trailing_fields_as_null_only_when_allowed() {
        let options = |allow_jagged_rows| DecodeOptions {
            schema: Some(vec![
                column("a", ColumnType::Int64, true),
                column("b", ColumnType::String, true),
            ]),
            csv: CsvOptions {
                allow_jagged_rows,
                ..CsvOptions::default()
            },
            ..Default::default()
        };
        let rows = with(b"1,x\n2\n", options(true)).expect("decodes");
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::Int(1), text("x")],
                vec![Value::Int(2), Value::Null]
            ]
        );
        let bad = bad_rows(with(b"1,x\n2\n", options(false)));
        assert_eq!(bad[0].reason, "expected 2 fields but found 1");
        let bad = bad_rows(with(b"1,x,y\n", options(true)));
        assert_eq!(bad[0].reason, "expected 2 fields but found 3");
    }
}
