//! The load formats and column types: the vocabulary a pipeline file, a load job and a
//! warehouse share. Decoding files is the embedded warehouse's business
//! (`conveyor-embedded`); BigQuery decodes them itself.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A file format a load step can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Format {
    /// Apache Avro object container files.
    Avro,
    /// Apache Parquet files.
    Parquet,
    /// Comma-separated values (RFC 4180), first line optionally a header.
    Csv,
    /// Newline-delimited JSON: one JSON object per line.
    #[serde(alias = "JSON", alias = "NEWLINE_DELIMITED_JSON")]
    Ndjson,
    /// Apache ORC files (BigQuery loads them; the embedded warehouse says whether it can).
    Orc,
}

/// The type of a column, mapped onto BigQuery's standard types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    #[serde(alias = "INTEGER")]
    Int64,
    /// 64-bit float.
    #[serde(alias = "FLOAT")]
    Float64,
    /// Boolean.
    #[serde(alias = "BOOLEAN")]
    Bool,
    /// Raw bytes.
    Bytes,
    /// An instant, kept as RFC 3339 text in UTC.
    Timestamp,
    /// A calendar date, kept as `YYYY-MM-DD` text.
    Date,
    /// Nested or repeated data, kept as JSON text.
    Json,
}

/// One column of a decoded file or of a declared schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// `mode: REQUIRED` columns are not nullable; `NULLABLE` (the default) are.
    #[serde(rename = "mode", default = "nullable_default", with = "mode")]
    #[schemars(schema_with = "mode::schema")]
    pub nullable: bool,
}

fn nullable_default() -> bool {
    true
}

mod mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(nullable: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *nullable { "NULLABLE" } else { "REQUIRED" })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let mode = String::deserialize(d)?;
        match mode.to_ascii_uppercase().as_str() {
            "NULLABLE" => Ok(true),
            "REQUIRED" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "mode must be NULLABLE or REQUIRED, not {other:?}"
            ))),
        }
    }

    /// The JSON Schema of a column's `mode`.
    pub(super) fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["NULLABLE", "REQUIRED", "nullable", "required"],
            "default": "NULLABLE",
        })
    }
}

/// A row that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based number of the data row in the file (for CSV and NDJSON: the line number).
    pub row: u64,
    /// Why it was rejected.
    pub reason: String,
}

impl ColumnType {
    /// The BigQuery name of the type (`INT64`, `STRING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::String => "STRING",
            ColumnType::Int64 => "INT64",
            ColumnType::Float64 => "FLOAT64",
            ColumnType::Bool => "BOOL",
            ColumnType::Bytes => "BYTES",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Date => "DATE",
            ColumnType::Json => "JSON",
        }
    }
}

impl fmt::Display for ColumnType {
    /// Writes the BigQuery name of the type ([`ColumnType::as_str`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_mode_is_read_from_the_mode_key() {
        let c: Column =
            serde_json::from_str(r#"{"name": "id", "type": "INT64", "mode": "REQUIRED"}"#).unwrap();
        assert!(!c.nullable);
        let c: Column = serde_json::from_str(r#"{"name": "id", "type": "INT64"}"#).unwrap();
        assert!(c.nullable);
        assert_eq!(
            serde_json::to_value(&c).unwrap()["mode"],
            serde_json::json!("NULLABLE")
        );
    }
}
