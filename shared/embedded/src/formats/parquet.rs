//! Parquet decoding, with the row API of the `parquet` crate (no Arrow), one row at a time.
//!
//! Columns are the file schema's top-level fields. Row numbers are 1-based across row groups.
//! Types follow BigQuery's Parquet conversions
//! (<https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet#parquet_conversions>):
//! a group is a RECORD and a LIST a REPEATED column (as with `enableListInference`), kept here
//! as JSON text (a null list is `[]`); a MAP is a REPEATED RECORD of `key` and `value`;
//! DECIMAL is kept as exact text; a timestamp not adjusted to UTC is zone-less text.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ::parquet::basic::{
    ConvertedType, LogicalType, Repetition, TimeUnit as ParquetTimeUnit, Type as Physical,
};
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::Field;
use ::parquet::record::reader::RowIter;
use ::parquet::schema::types::{SchemaDescriptor, Type as SchemaType};
use base64::Engine as _;
use serde_json::Value as Json;

use super::convert::{
    Plan, TimeUnit, decimal_text, describe, duplicate_name, epoch_date_text, epoch_timestamp_text,
    finish_field, fits, local_timestamp_text, plan, push_cell, time_of_day_text,
};
use super::{
    Column, ColumnType, DecodeOptions, Format, FormatError, Input, Next, RowReader, Value, read_all,
};

/// The message of a panic in the `parquet` crate's record reader, which asserts on some
/// malformed files instead of returning errors.
const PANICKED: &str =
    "the Parquet reader failed on this file (it is corrupt or uses an unsupported layout)";

struct ParquetRows {
    rows: RowIter<'static>,
    plans: Vec<Plan>,
    readings: Vec<Reading>,
    /// Per plan: whether the field is a list (REPEATED: NULL becomes `[]`).
    repeated: Vec<bool>,
    number: u64,
}

/// Opens a Parquet file.
pub(super) fn open(
    input: Input,
    options: &DecodeOptions,
) -> Result<(Vec<Column>, Box<dyn RowReader>), FormatError> {
    catch_unwind(AssertUnwindSafe(|| open_file(input, options)))
        .unwrap_or_else(|_| Err(unreadable(PANICKED.to_owned())))
}

fn open_file(
    input: Input,
    options: &DecodeOptions,
) -> Result<(Vec<Column>, Box<dyn RowReader>), FormatError> {
    let not_parquet =
        |e: ::parquet::errors::ParquetError| unreadable(format!("not a Parquet file: {e}"));
    let reader: Box<dyn FileReader> = match input {
        Input::File(file) => Box::new(SerializedFileReader::new(file).map_err(not_parquet)?),
        Input::Bytes(bytes) => Box::new(
            SerializedFileReader::new(axum::body::Bytes::from(bytes)).map_err(not_parquet)?,
        ),
        Input::Stream(stream) => {
            let bytes = read_all(stream).map_err(|e| unreadable(format!("read error: {e}")))?;
            Box::new(
                SerializedFileReader::new(axum::body::Bytes::from(bytes)).map_err(not_parquet)?,
            )
        }
    };
    let descriptor = reader.metadata().file_metadata().schema_descr_ptr();
    check_supported(&descriptor)?;
    let fields: Vec<(Column, Reading, bool)> = descriptor
        .root_schema()
        .get_fields()
        .iter()
        .map(|field| column_of(field))
        .collect();
    if let Some(name) = duplicate_name(fields.iter().map(|(c, _, _)| c.name.as_str())) {
        return Err(unreadable(format!(
            "the schema has two columns named `{name}`"
        )));
    }
    let columns: Vec<Column> = fields.iter().map(|(c, _, _)| c.clone()).collect();
    let plans = plan(&columns, options.schema.as_deref()).map_err(unreadable)?;
    let readings = plans
        .iter()
        .map(|p| fields.get(p.index).map_or(Reading::Plain, |f| f.1))
        .collect();
    let repeated = plans
        .iter()
        .map(|p| p.column.ty == ColumnType::Json && fields.get(p.index).is_some_and(|f| f.2))
        .collect();
    let out = plans.iter().map(|p| p.column.clone()).collect();
    let rows = ParquetRows {
        rows: RowIter::from_file_into(reader),
        plans,
        readings,
        repeated,
        number: 0,
    };
    Ok((out, Box::new(rows)))
}

fn unreadable(reason: String) -> FormatError {
    FormatError::Unreadable {
        format: Format::Parquet,
        reason,
    }
}

impl RowReader for ParquetRows {
    fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
        let next = catch_unwind(AssertUnwindSafe(|| self.rows.next()))
            .map_err(|_| unreadable(PANICKED.to_owned()))?;
        let Some(item) = next else {
            return Ok(Next::End);
        };
        self.number += 1;
        let number = self.number;
        let item = item.map_err(|e| unreadable(format!("cannot read row {number}: {e}")))?;
        let values = item.into_columns();
        for ((plan, reading), repeated) in self.plans.iter().zip(&self.readings).zip(&self.repeated)
        {
            let field = values.get(plan.index).map_or(&Field::Null, |(_, f)| f);
            let natural = to_natural(field, plan.natural, *reading).and_then(|natural| {
                if fits(&natural, plan.natural) {
                    Ok(natural)
                } else {
                    Err(format!("unexpected value {}", describe(&natural)))
                }
            });
            if let Some(bad) = push_cell(row, number, finish_field(plan, natural, *repeated)) {
                return Ok(bad);
            }
        }
        Ok(Next::Row(number))
    }
}

/// How to read a top-level field's values, beyond what the row API's [`Field`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Plain,
    /// An integer timestamp (or one the row API already decoded) in `unit`; `local` when not
    /// adjusted to UTC.
    Timestamp {
        unit: TimeUnit,
        local: bool,
    },
    /// INT64 nanoseconds since midnight.
    TimeNanos,
    /// A 16-byte UUID, shown as text.
    Uuid,
}

/// Rejects leaf columns the row API cannot convert (it would panic on them).
fn check_supported(descriptor: &SchemaDescriptor) -> Result<(), FormatError> {
    use ConvertedType as C;
    for column in descriptor.columns() {
        let converted = column.converted_type();
        let supported = match column.physical_type() {
            Physical::BOOLEAN | Physical::INT96 | Physical::FLOAT | Physical::DOUBLE => true,
            Physical::INT32 => matches!(
                converted,
                C::NONE
                    | C::INT_8
                    | C::INT_16
                    | C::INT_32
                    | C::UINT_8
                    | C::UINT_16
                    | C::UINT_32
                    | C::DATE
                    | C::TIME_MILLIS
                    | C::DECIMAL
            ),
            Physical::INT64 => matches!(
                converted,
                C::NONE
                    | C::INT_64
                    | C::UINT_64
                    | C::TIME_MICROS
                    | C::TIMESTAMP_MILLIS
                    | C::TIMESTAMP_MICROS
                    | C::DECIMAL
            ),
            Physical::BYTE_ARRAY => {
                matches!(
                    converted,
                    C::NONE | C::UTF8 | C::ENUM | C::JSON | C::BSON | C::DECIMAL
                )
            }
            Physical::FIXED_LEN_BYTE_ARRAY => matches!(converted, C::NONE | C::DECIMAL),
        };
        if !supported {
            return Err(unreadable(format!(
                "column `{}` has an unsupported type: {} {}",
                column.path().string(),
                column.physical_type(),
                converted
            )));
        }
    }
    Ok(())
}

/// The output column for a top-level field, how to read it, and whether it is a list.
fn column_of(field: &SchemaType) -> (Column, Reading, bool) {
    let info = field.get_basic_info();
    let repetition = info.has_repetition().then(|| info.repetition());
    let name = field.name().to_owned();
    let list = repetition == Some(Repetition::REPEATED)
        || matches!(info.logical_type_ref(), Some(LogicalType::List))
        || info.converted_type() == ConvertedType::LIST;
    if field.is_group() || repetition == Some(Repetition::REPEATED) {
        // A REPEATED column has no NULL (an empty list instead).
        let nullable = repetition == Some(Repetition::OPTIONAL) && !list;
        return (
            Column {
                name,
                ty: ColumnType::Json,
                nullable,
            },
            Reading::Plain,
            list,
        );
    }
    let nullable = repetition != Some(Repetition::REQUIRED);
    let (ty, reading) = primitive_type(field);
    (Column { name, ty, nullable }, reading, false)
}

fn primitive_type(field: &SchemaType) -> (ColumnType, Reading) {
    use ConvertedType as C;
    let info = field.get_basic_info();
    let physical = field.get_physical_type();
    let converted = info.converted_type();
    let plain = |ty| (ty, Reading::Plain);
    match (info.logical_type_ref(), converted) {
        // No NUMERIC, TIME or DATETIME here: exact decimal text, `HH:MM:SS[.f]` and zone-less
        // `YYYY-MM-DDTHH:MM:SS[.f]` text.
        (Some(LogicalType::Decimal { .. }), _) | (_, C::DECIMAL) => plain(ColumnType::String),
        (Some(LogicalType::Date), _) | (_, C::DATE) => plain(ColumnType::Date),
        (Some(LogicalType::Time(time)), _) if time.unit == ParquetTimeUnit::NANOS => {
            (ColumnType::String, Reading::TimeNanos)
        }
        (Some(LogicalType::Time(_)), _) | (_, C::TIME_MILLIS | C::TIME_MICROS) => {
            plain(ColumnType::String)
        }
        (Some(LogicalType::Timestamp(ts)), _) => {
            let unit = match ts.unit {
                ParquetTimeUnit::MILLIS => TimeUnit::Millis,
                ParquetTimeUnit::MICROS => TimeUnit::Micros,
                ParquetTimeUnit::NANOS => TimeUnit::Nanos,
            };
            let local = !ts.is_adjusted_to_u_t_c;
            let ty = if local {
                ColumnType::String
            } else {
                ColumnType::Timestamp
            };
            (ty, Reading::Timestamp { unit, local })
        }
        (_, C::TIMESTAMP_MILLIS | C::TIMESTAMP_MICROS) => plain(ColumnType::Timestamp),
        (Some(LogicalType::String | LogicalType::Enum), _) | (_, C::UTF8 | C::ENUM) => {
            plain(ColumnType::String)
        }
        (Some(LogicalType::Json), _) | (_, C::JSON) => plain(ColumnType::Json),
        (Some(LogicalType::Uuid), _) => (ColumnType::String, Reading::Uuid),
        (Some(LogicalType::Float16), _) => plain(ColumnType::Float64),
        _ => plain(match physical {
            Physical::BOOLEAN => ColumnType::Bool,
            Physical::INT32 | Physical::INT64 => ColumnType::Int64,
            Physical::INT96 => ColumnType::Timestamp,
            Physical::FLOAT | Physical::DOUBLE => ColumnType::Float64,
            Physical::BYTE_ARRAY | Physical::FIXED_LEN_BYTE_ARRAY => ColumnType::Bytes,
        }),
    }
}

/// A field value as the column type `ty` its schema maps to. The error says what is wrong with
/// the value.
fn to_natural(field: &Field, ty: ColumnType, reading: Reading) -> Result<Value, String> {
    let out_of_range = |what: &str, v: i64| format!("{what} {v} is out of range");
    let timestamp = |value: i64, unit: TimeUnit| -> Result<Value, String> {
        let local = matches!(reading, Reading::Timestamp { local: true, .. });
        let text = if local {
            local_timestamp_text(value, unit)
        } else {
            epoch_timestamp_text(value, unit)
        };
        text.map(Value::Text)
            .ok_or_else(|| out_of_range("timestamp", value))
    };
    Ok(match field {
        Field::Null => Value::Null,
        Field::Str(s) if ty == ColumnType::Json => Value::Text(s.clone()),
        _ if ty == ColumnType::Json => Value::Text(to_json(field).to_string()),
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(i) => Value::Int(i64::from(*i)),
        Field::Short(i) => Value::Int(i64::from(*i)),
        Field::Int(i) => Value::Int(i64::from(*i)),
        Field::UByte(i) => Value::Int(i64::from(*i)),
        Field::UShort(i) => Value::Int(i64::from(*i)),
        Field::UInt(i) => Value::Int(i64::from(*i)),
        Field::ULong(i) => Value::Int(
            i64::try_from(*i).map_err(|_| format!("UINT64 value {i} does not fit INT64"))?,
        ),
        Field::Long(i) => match reading {
            Reading::Timestamp { unit, .. } => timestamp(*i, unit)?,
            Reading::TimeNanos => Value::Text(
                time_of_day_text(*i, TimeUnit::Nanos).ok_or_else(|| out_of_range("time", *i))?,
            ),
            _ => Value::Int(*i),
        },
        Field::Float16(f) => Value::Float(f64::from(*f)),
        Field::Float(f) => Value::Float(f64::from(*f)),
        Field::Double(f) => Value::Float(*f),
        Field::Decimal(d) => Value::Text(decimal_text(d.data(), i64::from(d.scale()))),
        Field::Str(s) => Value::Text(s.clone()),
        Field::Bytes(b) => match (reading, b.data()) {
            (Reading::Uuid, data) if data.len() == 16 => Value::Text(uuid_text(data)),
            (_, data) => Value::Bytes(data.to_vec()),
        },
        Field::Date(d) => {
            Value::Text(epoch_date_text(*d).ok_or_else(|| out_of_range("date", i64::from(*d)))?)
        }
        Field::TimeMillis(t) => Value::Text(
            time_of_day_text(i64::from(*t), TimeUnit::Millis)
                .ok_or_else(|| out_of_range("time", i64::from(*t)))?,
        ),
        Field::TimeMicros(t) => Value::Text(
            time_of_day_text(*t, TimeUnit::Micros).ok_or_else(|| out_of_range("time", *t))?,
        ),
        Field::TimestampMillis(t) => timestamp(*t, TimeUnit::Millis)?,
        Field::TimestampMicros(t) => timestamp(*t, TimeUnit::Micros)?,
        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => {
            Value::Text(to_json(field).to_string())
        }
    })
}

fn uuid_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// Nested data as JSON: bytes as base64, dates and timestamps as their text forms.
fn to_json(field: &Field) -> Json {
    let float = |f: f64| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number);
    let text_or = |text: Option<String>, raw: i64| text.map_or(Json::from(raw), Json::String);
    match field {
        Field::Null => Json::Null,
        Field::Bool(b) => Json::Bool(*b),
        Field::Byte(i) => Json::from(*i),
        Field::Short(i) => Json::from(*i),
        Field::Int(i) => Json::from(*i),
        Field::Long(i) => Json::from(*i),
        Field::UByte(i) => Json::from(*i),
        Field::UShort(i) => Json::from(*i),
        Field::UInt(i) => Json::from(*i),
        Field::ULong(i) => Json::from(*i),
        Field::Float16(f) => float(f64::from(*f)),
        Field::Float(f) => float(f64::from(*f)),
        Field::Double(f) => float(*f),
        Field::Decimal(d) => Json::String(decimal_text(d.data(), i64::from(d.scale()))),
        Field::Str(s) => Json::String(s.clone()),
        Field::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b.data())),
        Field::Date(d) => text_or(epoch_date_text(*d), i64::from(*d)),
        Field::TimeMillis(t) => text_or(
            time_of_day_text(i64::from(*t), TimeUnit::Millis),
            i64::from(*t),
        ),
        Field::TimeMicros(t) => text_or(time_of_day_text(*t, TimeUnit::Micros), *t),
        Field::TimestampMillis(t) => text_or(epoch_timestamp_text(*t, TimeUnit::Millis), *t),
        Field::TimestampMicros(t) => text_or(epoch_timestamp_text(*t, TimeUnit::Micros), *t),
        Field::Group(row) => Json::Object(
            row.get_column_iter()
                .map(|(name, value)| (name.clone(), to_json(value)))
                .collect(),
        ),
        Field::ListInternal(list) => Json::Array(list.elements().iter().map(to_json).collect()),
        // BigQuery loads a Parquet MAP as a REPEATED RECORD of `key` and `value`.
        Field::MapInternal(map) => Json::Array(
            map.entries()
                .iter()
                .map(|(key, value)| serde_json::json!({"key": to_json(key), "value": to_json(value)}))
                .collect(),
        ),
    }
}

/// Values of one column to write in a test file.
#[cfg(test)]
pub(super) enum TestValues {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Bytes(Vec<&'static [u8]>),
    Fixed(Vec<&'static [u8]>),
}

/// One leaf column to write: values plus optional definition and repetition levels.
#[cfg(test)]
pub(super) type TestColumn = (TestValues, Option<Vec<i16>>, Option<Vec<i16>>);

/// Writes a Parquet file with the given schema (parquet message syntax), one row group per
/// element of `groups`, each listing its leaf columns in schema order.
#[cfg(test)]
pub(super) fn write_test_file(schema: &str, groups: Vec<Vec<TestColumn>>) -> Vec<u8> {
    use std::sync::Arc;

    use ::parquet::data_type::{
        BoolType, ByteArray, ByteArrayType, DoubleType, FixedLenByteArray, FixedLenByteArrayType,
        Int32Type, Int64Type,
    };
    use ::parquet::file::writer::SerializedFileWriter;
    use ::parquet::schema::parser::parse_message_type;

    let schema = Arc::new(parse_message_type(schema).expect("test schema parses"));
    let mut out = Vec::new();
    let mut writer =
        SerializedFileWriter::new(&mut out, schema, Default::default()).expect("writer starts");
    for columns in groups {
        let mut group = writer.next_row_group().expect("row group starts");
        for (values, def, rep) in columns {
            let mut column = group
                .next_column()
                .expect("column starts")
                .expect("schema has this column");
            let (def, rep) = (def.as_deref(), rep.as_deref());
            match values {
                TestValues::Bool(v) => column.typed::<BoolType>().write_batch(&v, def, rep),
                TestValues::I32(v) => column.typed::<Int32Type>().write_batch(&v, def, rep),
                TestValues::I64(v) => column.typed::<Int64Type>().write_batch(&v, def, rep),
                TestValues::F64(v) => column.typed::<DoubleType>().write_batch(&v, def, rep),
                TestValues::Bytes(v) => {
                    let v: Vec<ByteArray> = v.into_iter().map(ByteArray::from).collect();
                    column.typed::<ByteArrayType>().write_batch(&v, def, rep)
                }
                TestValues::Fixed(v) => {
                    let v: Vec<FixedLenByteArray> = v
                        .into_iter()
                        .map(|b| FixedLenByteArray::from(ByteArray::from(b)))
                        .collect();
                    column
                        .typed::<FixedLenByteArrayType>()
                        .write_batch(&v, def, rep)
                }
            }
            .expect("values match column");
            column.close().expect("column closes");
        }
        group.close().expect("row group closes");
    }
    writer.close().expect("file closes");
    out
}

#[cfg(test)]
mod tests {
    use super::{TestValues as V, write_test_file};
    use crate::formats::test_support::{column, decode_with, text, unreadable};
    use crate::formats::{BadRow, Column, ColumnType, Format, FormatError, Rows, Value};

    fn parquet(bytes: &[u8], schema: Option<Vec<Column>>) -> Result<Rows, FormatError> {
        decode_with(Format::Parquet, bytes, 0, schema)
    }

    fn unreadable_reason(result: Result<Rows, FormatError>) -> String {
        unreadable(Format::Parquet, result)
    }

    const ORDERS: &str = "message orders {
        REQUIRED INT64 id;
        OPTIONAL BYTE_ARRAY note (STRING);
        REQUIRED DOUBLE amount;
    }";

    /// Orders 1..=n; every third note is NULL.
    fn orders(first: i64, n: usize) -> Vec<super::TestColumn> {
        let ids: Vec<i64> = (first..first + n as i64).collect();
        let defs: Vec<i16> = ids.iter().map(|id| i16::from(id % 3 != 0)).collect();
        let notes: Vec<&'static [u8]> = ids
            .iter()
            .filter(|id| *id % 3 != 0)
            .map(|_| &b"ok"[..])
            .collect();
        let amounts: Vec<f64> = ids.iter().map(|id| *id as f64 * 1.5).collect();
        vec![
            (V::I64(ids), None, None),
            (V::Bytes(notes), Some(defs), None),
            (V::F64(amounts), None, None),
        ]
    }

    #[test]
    fn parquet_columns_come_from_the_file_schema_with_bigquery_types() {
        let schema = "message all {
            REQUIRED INT32 small;
            REQUIRED BOOLEAN flag;
            REQUIRED BYTE_ARRAY blob;
            REQUIRED INT64 at (TIMESTAMP(MICROS,true));
            REQUIRED INT64 at_ns (TIMESTAMP(NANOS,true));
            REQUIRED INT64 wall (TIMESTAMP(MILLIS,false));
            REQUIRED INT32 day (DATE);
            REQUIRED INT32 price (DECIMAL(9,2));
            OPTIONAL group tags (LIST) {
                REPEATED group list {
                    OPTIONAL BYTE_ARRAY element (UTF8);
                }
            }
        }";
        let bytes = write_test_file(
            schema,
            vec![vec![
                (V::I32(vec![-7, 8]), None, None),
                (V::Bool(vec![true, false]), None, None),
                (V::Bytes(vec![b"\x00\x01", b""]), None, None),
                (V::I64(vec![1_763_627_400_123_456, 0]), None, None),
                (V::I64(vec![1_763_627_400_000_000_001, 0]), None, None),
                (V::I64(vec![1_763_627_400_000, 0]), None, None),
                (V::I32(vec![20_412, 0]), None, None),
                (V::I32(vec![-123, 5]), None, None),
                (
                    V::Bytes(vec![b"a", b"b"]),
                    Some(vec![3, 3, 0]),
                    Some(vec![0, 1, 0]),
                ),
            ]],
        );
        let rows = parquet(&bytes, None).expect("decodes");
        use ColumnType::*;
        assert_eq!(
            rows.columns,
            vec![
                column("small", Int64, false),
                column("flag", Bool, false),
                column("blob", Bytes, false),
                column("at", Timestamp, false),
                column("at_ns", Timestamp, false),
                column("wall", String, false),
                column("day", Date, false),
                column("price", String, false),
                column("tags", Json, false),
            ]
        );
        assert_eq!(
            rows.rows[0],
            vec![
                Value::Int(-7),
                Value::Bool(true),
                Value::Bytes(vec![0, 1]),
                text("2025-11-20T08:30:00.123456Z"),
                text("2025-11-20T08:30:00.000000001Z"),
                text("2025-11-20T08:30:00"),
                text("2025-11-20"),
                text("-1.23"),
                text("[\"a\",\"b\"]"),
            ]
        );
        // A null list is an empty REPEATED value, as in BigQuery.
        assert_eq!(rows.rows[1][8], text("[]"));
        assert_eq!(rows.rows[1][7], text("0.05"));
    }

    #[test]
    fn parquet_optional_columns_are_nullable_and_null_values_are_null() {
        let rows = parquet(&write_test_file(ORDERS, vec![orders(1, 3)]), None).expect("decodes");
        assert_eq!(
            rows.columns,
            vec![
                column("id", ColumnType::Int64, false),
                column("note", ColumnType::String, true),
                column("amount", ColumnType::Float64, false)
            ]
        );
        assert_eq!(
            rows.rows[2],
            vec![Value::Int(3), Value::Null, Value::Float(4.5)]
        );
        assert_eq!(rows.rows[0][1], text("ok"));
    }

    #[test]
    fn declared_parquet_schema_selects_columns_by_name_and_converts_types() {
        let bytes = write_test_file(ORDERS, vec![orders(1, 2)]);
        let schema = vec![
            column("Amount", ColumnType::String, false),
            column("id", ColumnType::Float64, true),
        ];
        let rows = parquet(&bytes, Some(schema.clone())).expect("decodes");
        assert_eq!(rows.columns, schema);
        assert_eq!(
            rows.rows,
            vec![
                vec![text("1.5"), Value::Float(1.0)],
                vec![text("3"), Value::Float(2.0)]
            ]
        );
    }

    #[test]
    fn declared_required_column_rejects_null_with_row_number_across_row_groups() {
        let bytes = write_test_file(ORDERS, vec![orders(1, 4), orders(5, 4)]);
        let result = parquet(
            &bytes,
            Some(vec![column("note", ColumnType::String, false)]),
        );
        let rows: Vec<u64> = match &result {
            Err(FormatError::BadRows(bad)) => bad.iter().map(|b| b.row).collect(),
            other => panic!("expected bad rows, got {other:?}"),
        };
        assert_eq!(rows, [3, 6]);
    }

    #[test]
    fn declared_parquet_column_rejects_unconvertible_value_naming_column_and_value() {
        let bytes = write_test_file(ORDERS, vec![orders(1, 2)]);
        let result = parquet(
            &bytes,
            Some(vec![column("amount", ColumnType::Int64, true)]),
        );
        let expected = vec![BadRow {
            row: 1,
            reason: "column `amount`: cannot convert 1.5 to INT64".to_owned(),
        }];
        assert!(
            matches!(&result, Err(FormatError::BadRows(bad)) if *bad == expected),
            "{result:?}"
        );
    }

    #[test]
    fn declared_column_missing_from_parquet_file_is_unreadable() {
        let bytes = write_test_file(ORDERS, vec![orders(1, 2)]);
        let reason = unreadable_reason(parquet(
            &bytes,
            Some(vec![column("paid", ColumnType::Bool, true)]),
        ));
        assert!(reason.contains("`paid`"), "{reason}");
    }

    #[test]
    fn garbage_bytes_are_unreadable_parquet() {
        for bytes in [
            &b""[..],
            b"PAR1",
            b"PAR1 this is not parquet PAR1",
            &[0xff; 64],
        ] {
            let reason = unreadable_reason(parquet(bytes, None));
            assert!(!reason.is_empty());
        }
    }

    #[test]
    fn truncated_parquet_file_is_unreadable() {
        let bytes = write_test_file(ORDERS, vec![orders(1, 10)]);
        for cut in [bytes.len() - 1, bytes.len() / 2, 4] {
            unreadable_reason(parquet(&bytes[..cut], None));
        }
    }

    #[test]
    fn parquet_column_of_unsupported_type_is_unreadable_not_a_panic() {
        let bytes = write_test_file(
            "message m { REQUIRED FIXED_LEN_BYTE_ARRAY (12) odd (INTERVAL); }",
            vec![vec![(V::Fixed(vec![&[0; 12]]), None, None)]],
        );
        let reason = unreadable_reason(parquet(&bytes, None));
        assert!(reason.contains("`odd`"), "{reason}");
    }

    #[test]
    fn corrupted_parquet_bytes_never_panic_the_caller() {
        let bytes = write_test_file(ORDERS, vec![orders(1, 5)]);
        for i in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[i] ^= 0x5a;
            // Any result is fine; reaching the next iteration means no panic escaped.
            let _ = parquet(&copy, None);
        }
    }
}
