//! Newline-delimited JSON decoding: one JSON object per line, blank lines skipped, read as a
//! stream.
//!
//! Row numbers are 1-based physical line numbers (blank lines count).
//!
//! BigQuery's JSON rules (<https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-json>):
//! a key the schema does not have makes the row bad (no `ignoreUnknownValues`); a missing key
//! is NULL; nested objects are RECORD and arrays REPEATED columns, kept here as JSON text (an
//! object, an array; a missing or null array is `[]`, as a REPEATED column has no NULL).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Read as _};

use conveyor_core::ndjson::{JsonKeys, Line};
use serde_json::Value as Json;

use super::convert::{
    SAMPLE_ROWS, TextInference, bad, check_null, conversion_error, float_to_int, from_text, quote,
};
use super::{Column, ColumnType, DecodeOptions, Format, FormatError, Next, RowReader, Value};

fn unreadable(reason: String) -> FormatError {
    FormatError::Unreadable {
        format: Format::Ndjson,
        reason,
    }
}

/// A line read: its number, and its object's members or why it is bad.
type ReadLine = (u64, Result<Vec<(String, Json)>, String>);

struct NdjsonRows {
    input: Box<dyn BufRead + Send>,
    line: Vec<u8>,
    number: u64,
    /// Lines read ahead (the autodetect sample): objects, or the reason a line is bad.
    sample: VecDeque<ReadLine>,
    columns: Vec<Column>,
    /// Columns holding arrays (REPEATED): NULL becomes `[]`.
    repeated: Vec<bool>,
    exact: HashMap<String, usize>,
    folded: HashMap<String, Option<usize>>,
    /// The longest line read, in bytes.
    limit: u64,
}

/// Opens an NDJSON stream (with autodetect, reads the sample).
pub(super) fn open(
    input: Box<dyn BufRead + Send>,
    options: &DecodeOptions,
) -> Result<(Vec<Column>, Box<dyn RowReader>), FormatError> {
    let mut rows = NdjsonRows {
        input,
        line: Vec::new(),
        number: 0,
        sample: VecDeque::new(),
        columns: Vec::new(),
        repeated: Vec::new(),
        exact: HashMap::new(),
        folded: HashMap::new(),
        limit: options.record_limit(),
    };
    let columns = match &options.schema {
        Some(columns) => {
            rows.repeated = vec![false; columns.len()];
            columns.clone()
        }
        None => {
            let mut objects = 0;
            let mut bytes = 0u64;
            // At most SAMPLE_ROWS objects, and no more than SAMPLE_BYTES of them (or one
            // record): memory stays bounded by the record limit.
            while objects < SAMPLE_ROWS && bytes < super::SAMPLE_BYTES {
                let Some(line) = rows.read_line()? else { break };
                bytes += rows.line.len() as u64;
                objects += usize::from(line.1.is_ok());
                rows.sample.push_back(line);
            }
            let (columns, repeated) = detect(&rows.sample);
            if columns.len() > super::MAX_COLUMNS {
                return Err(super::too_many_columns(Format::Ndjson, columns.len()));
            }
            rows.repeated = repeated;
            columns
        }
    };
    for (i, column) in columns.iter().enumerate() {
        rows.exact.entry(column.name.clone()).or_insert(i);
        rows.folded
            .entry(column.name.to_ascii_lowercase())
            .and_modify(|slot| *slot = None)
            .or_insert(Some(i));
    }
    rows.columns = columns.clone();
    Ok((columns, Box::new(rows)))
}

impl NdjsonRows {
    /// The next non-blank line, parsed: `None` at the end.
    fn read_line(&mut self) -> Result<Option<ReadLine>, FormatError> {
        loop {
            self.line.clear();
            // At most one byte over the limit is read: a longer line is never held whole.
            let n = (&mut self.input)
                .take(self.limit.saturating_add(1))
                .read_until(b'\n', &mut self.line)
                .map_err(|e| unreadable(format!("read error after line {}: {e}", self.number)))?;
            if n == 0 {
                return Ok(None);
            }
            self.number += 1;
            let content = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            if content.len() as u64 > self.limit {
                return Err(unreadable(super::record_too_long(self.limit, self.number)));
            }
            let mut bytes = self.line.as_slice();
            if self.number == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            let text = std::str::from_utf8(bytes)
                .map_err(|_| unreadable(format!("not valid UTF-8 (line {})", self.number)))?;
            if text.trim().is_empty() {
                continue;
            }
            let parsed = match serde_json::from_str::<Line>(text) {
                Ok(Line::Object(members)) => Ok(members),
                Ok(Line::Other(kind)) => Err(format!("expected a JSON object, found {kind}")),
                Err(e) => Err(format!("not valid JSON: {e}")),
            };
            return Ok(Some((self.number, parsed)));
        }
    }

    fn lookup(&self, key: &str) -> Option<usize> {
        self.exact.get(key).copied().or_else(|| {
            self.folded
                .get(&key.to_ascii_lowercase())
                .copied()
                .flatten()
        })
    }

    fn convert(&self, members: Vec<(String, Json)>, row: &mut Vec<Value>) -> Result<(), String> {
        let mut cells: Vec<Option<Json>> = vec![None; self.columns.len()];
        for (key, value) in members {
            let slot = self
                .lookup(&key)
                .and_then(|i| cells.get_mut(i))
                .ok_or_else(|| format!("no such field `{key}`"))?;
            *slot = Some(value);
        }
        for ((column, cell), repeated) in self.columns.iter().zip(cells).zip(&self.repeated) {
            let value = match cell {
                None | Some(Json::Null) if *repeated => Value::Text("[]".to_owned()),
                None => Value::Null,
                Some(json) => from_json(&json, column.ty)
                    .ok_or_else(|| conversion_error(column, &describe_json(&json)))?,
            };
            row.push(check_null(column, value)?);
        }
        Ok(())
    }
}

impl RowReader for NdjsonRows {
    fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
        let next = match self.sample.pop_front() {
            Some(line) => Some(line),
            None => self.read_line()?,
        };
        let Some((number, parsed)) = next else {
            return Ok(Next::End);
        };
        match parsed.and_then(|members| self.convert(members, row)) {
            Ok(()) => Ok(Next::Row(number)),
            Err(reason) => {
                row.clear();
                Ok(Next::Bad(bad(number, reason)))
            }
        }
    }
}

/// Columns are the union of the sampled objects' keys in first-seen order, typed from their
/// values; and which of them hold arrays.
fn detect(sample: &VecDeque<ReadLine>) -> (Vec<Column>, Vec<bool>) {
    let mut keys = JsonKeys::<TextInference>::default();
    for members in sample.iter().filter_map(|(_, m)| m.as_ref().ok()) {
        keys.observe(members);
    }
    keys.into_keys()
        .map(|(name, types)| {
            let column = Column {
                name,
                ty: types.column_type(ColumnType::Json),
                nullable: true,
            };
            (column, types.arrays && !types.objects)
        })
        .unzip()
}

/// Converts a JSON value to `ty`. Strings are read like CSV text; numbers convert to INT64 (when
/// integral), FLOAT64 or STRING; booleans to BOOL or STRING; anything to JSON (as JSON text).
fn from_json(value: &Json, ty: ColumnType) -> Option<Value> {
    match (value, ty) {
        (Json::Null, _) => Some(Value::Null),
        (_, ColumnType::Json) => Some(Value::Text(value.to_string())),
        (Json::String(s), ty) => from_text(s, ty),
        (Json::Number(n), ColumnType::Int64) => n
            .as_i64()
            .or_else(|| n.as_f64().and_then(float_to_int))
            .map(Value::Int),
        (Json::Number(n), ColumnType::Float64) => n.as_f64().map(Value::Float),
        (Json::Number(n), ColumnType::String) => Some(Value::Text(n.to_string())),
        (Json::Bool(b), ColumnType::Bool) => Some(Value::Bool(*b)),
        (Json::Bool(b), ColumnType::String) => Some(Value::Text(b.to_string())),
        _ => None,
    }
}

fn describe_json(value: &Json) -> String {
    match value {
        Json::String(s) => quote(s),
        other => {
            let text = other.to_string();
            if text.chars().count() > 60 {
                format!("{}...", text.chars().take(60).collect::<String>())
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::formats::test_support::{bad_rows, column, decode_with, text};
    use crate::formats::{BadRow, Column, ColumnType, Format, FormatError, Rows, Value};

    fn ndjson(text: &[u8], schema: Option<Vec<Column>>) -> Result<Rows, FormatError> {
        decode_with(Format::Ndjson, text, 0, schema)
    }

    fn types(rows: &Rows) -> Vec<ColumnType> {
        rows.columns.iter().map(|c| c.ty).collect()
    }

    #[test]
    fn ndjson_columns_are_the_union_of_keys_in_first_seen_order() {
        let rows =
            ndjson(b"{\"z\": 1, \"a\": \"x\"}\n{\"m\": true, \"z\": 2}\n", None).expect("decodes");
        assert_eq!(
            rows.columns,
            vec![
                column("z", ColumnType::Int64, true),
                column("a", ColumnType::String, true),
                column("m", ColumnType::Bool, true)
            ]
        );
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::Int(1), text("x"), Value::Null],
                vec![Value::Int(2), Value::Null, Value::Bool(true)]
            ]
        );
    }

    #[test]
    fn ndjson_infers_float_when_any_number_is_fractional() {
        let rows = ndjson(b"{\"n\": 1}\n{\"n\": 2.5}\n{\"n\": null}\n", None).expect("decodes");
        assert_eq!(types(&rows), [ColumnType::Float64]);
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::Float(1.0)],
                vec![Value::Float(2.5)],
                vec![Value::Null]
            ]
        );
    }

    #[test]
    fn ndjson_nested_objects_and_arrays_are_json_columns() {
        let rows = ndjson(b"{\"o\": {\"k\": [1, 2]}, \"a\": [\"x\"]}\n", None).expect("decodes");
        assert_eq!(types(&rows), [ColumnType::Json, ColumnType::Json]);
        assert_eq!(
            rows.rows,
            vec![vec![text("{\"k\":[1,2]}"), text("[\"x\"]")]]
        );
    }

    #[test]
    fn ndjson_strings_that_all_parse_as_timestamps_or_dates_are_typed() {
        let rows = ndjson(
            b"{\"t\": \"2026-11-20T08:30:00.250+01:00\", \"d\": \"2026-11-20\", \"s\": \"2026-11-20\"}\n{\"t\": \"2026-11-21 00:00:00\", \"d\": \"2026-11-21\", \"s\": \"soon\"}\n",
            None,
        )
        .expect("decodes");
        assert_eq!(
            types(&rows),
            [ColumnType::Timestamp, ColumnType::Date, ColumnType::String]
        );
        assert_eq!(rows.rows[0][0], text("2026-11-20T07:30:00.250Z"));
        assert_eq!(rows.rows[1][0], text("2026-11-21T00:00:00Z"));
    }

    #[test]
    fn ndjson_mixed_scalar_types_fall_back_to_string() {
        let rows = ndjson(b"{\"v\": 1}\n{\"v\": \"one\"}\n{\"v\": true}\n", None).expect("decodes");
        assert_eq!(types(&rows), [ColumnType::String]);
        assert_eq!(
            rows.rows,
            vec![vec![text("1")], vec![text("one")], vec![text("true")]]
        );
    }

    #[test]
    fn ndjson_reports_every_bad_line_with_its_line_number() {
        let data =
            b"{\"a\": 1}\n\n{\"a\": \n[1, 2]\n\r\n\"text\"\n{\"a\": 2}\n{\"a\": 3} trailing\n";
        let bad = bad_rows(ndjson(data, None));
        assert_eq!(bad.iter().map(|b| b.row).collect::<Vec<_>>(), [3, 4, 6, 8]);
        assert!(
            bad[0].reason.starts_with("not valid JSON"),
            "{}",
            bad[0].reason
        );
        assert_eq!(bad[1].reason, "expected a JSON object, found an array");
        assert_eq!(bad[2].reason, "expected a JSON object, found a string");
    }

    #[test]
    fn ndjson_blank_lines_are_skipped_but_counted() {
        let rows = ndjson(b"\n{\"a\": 1}\r\n   \n{\"a\": 2}", None).expect("decodes");
        assert_eq!(rows.rows, vec![vec![Value::Int(1)], vec![Value::Int(2)]]);
        let bad = bad_rows(ndjson(b"\n\n{\"a\": 1}\nnope\n", None));
        assert_eq!(bad[0].row, 4);
    }

    #[test]
    fn declared_schema_converts_json_values_and_nulls_missing_keys() {
        let schema = vec![
            column("ID", ColumnType::Int64, false),
            column("amount", ColumnType::Float64, true),
            column("label", ColumnType::String, true),
            column("at", ColumnType::Timestamp, true),
            column("extra", ColumnType::Json, true),
        ];
        let data = b"{\"id\": \"7\", \"amount\": 3, \"label\": 12, \"at\": \"2026-11-20 10:00:00 UTC\", \"extra\": \"s\"}\n{\"id\": 8.0}\n";
        let rows = ndjson(data, Some(schema.clone())).expect("decodes");
        assert_eq!(rows.columns, schema);
        assert_eq!(
            rows.rows,
            vec![
                vec![
                    Value::Int(7),
                    Value::Float(3.0),
                    text("12"),
                    text("2026-11-20T10:00:00Z"),
                    text("\"s\"")
                ],
                vec![
                    Value::Int(8),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null
                ],
            ]
        );
    }

    #[test]
    fn declared_required_column_rejects_missing_key_with_line_number() {
        let schema = vec![column("id", ColumnType::Int64, false)];
        let bad = bad_rows(ndjson(b"{\"id\": 1}\n{}\n{\"id\": null}\n", Some(schema)));
        assert_eq!(bad.iter().map(|b| b.row).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(
            bad[0].reason,
            "column `id` is REQUIRED but the value is NULL"
        );
    }

    #[test]
    fn declared_schema_rejects_unknown_fields() {
        let schema = vec![column("id", ColumnType::Int64, true)];
        let bad = bad_rows(ndjson(b"{\"id\": 1, \"surprise\": 2}\n", Some(schema)));
        assert_eq!(
            bad,
            vec![BadRow {
                row: 1,
                reason: "no such field `surprise`".to_owned()
            }]
        );
    }

    #[test]
    fn declared_column_rejects_wrong_json_type_naming_column_and_value() {
        let schema = vec![
            column("n", ColumnType::Int64, true),
            column("s", ColumnType::String, true),
        ];
        let bad = bad_rows(ndjson(
            b"{\"n\": 1.5}\n{\"s\": {\"a\": 1}}\n{\"n\": \"x\"}\n",
            Some(schema),
        ));
        let reasons: Vec<&str> = bad.iter().map(|b| b.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "column `n`: cannot convert 1.5 to INT64",
                "column `s`: cannot convert {\"a\":1} to STRING",
                "column `n`: cannot convert \"x\" to INT64"
            ]
        );
    }

    #[test]
    fn invalid_utf8_ndjson_is_unreadable() {
        let result = ndjson(b"{\"a\": 1}\n{\"a\": \"\xc3\x28\"}\n", None);
        assert!(
            matches!(&result, Err(FormatError::Unreadable { format: Format::Ndjson, reason }) if reason.contains("line 2")),
            "{result:?}"
        );
    }

    #[test]
    fn empty_ndjson_has_no_columns_and_no_rows() {
        assert_eq!(ndjson(b"\n\n", None).expect("decodes"), Rows::default());
    }
}
