//! Avro object container file decoding, read as a stream.
//!
//! Columns are the writer schema's top-level record fields. Row numbers are 1-based record
//! indexes. Types follow BigQuery's Avro conversions
//! (<https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-avro#avro_conversions>):
//! a union with `null` is NULLABLE; a record is a RECORD and an array a REPEATED column, kept
//! here as JSON text (a null array is `[]`); a map is a REPEATED RECORD of `key` and `value`
//! (`[{"key": …, "value": …}]`); enum is STRING; decimal is kept as exact text; bytes inside
//! nested data are base64.

use std::io::BufRead;

use apache_avro::schema::{Name, RecordSchema};
use apache_avro::types::Value as Avro;
use apache_avro::{Reader, Schema};
use base64::Engine as _;
use serde_json::Value as Json;

use super::convert::{
    Plan, TimeUnit, decimal_text, epoch_date_text, epoch_timestamp_text, finish_field,
    local_timestamp_text, plan, push_cell, time_of_day_text,
};
use super::{Column, ColumnType, DecodeOptions, Format, FormatError, Next, RowReader, Value};

struct AvroRows {
    reader: Reader<'static, Box<dyn BufRead + Send>>,
    record: RecordSchema,
    names: NamedTypes,
    plans: Vec<Plan>,
    /// Per plan: whether the field is an array (REPEATED: NULL becomes `[]`).
    repeated: Vec<bool>,
    number: u64,
}

/// Opens an Avro object container stream.
pub(super) fn open(
    input: Box<dyn BufRead + Send>,
    options: &DecodeOptions,
) -> Result<(Vec<Column>, Box<dyn RowReader>), FormatError> {
    let reader = Reader::new(input)
        .map_err(|e| unreadable(format!("not an Avro object container file: {e}")))?;
    let schema = reader.writer_schema().clone();
    let names = NamedTypes::of(&schema);
    let Schema::Record(record) = names.resolve(&schema).clone() else {
        return Err(unreadable(format!(
            "the writer schema must be a record, not {:?}",
            apache_avro::schema::SchemaKind::from(&schema)
        )));
    };
    let fields: Vec<Column> = record
        .fields
        .iter()
        .map(|field| {
            let (ty, nullable) = column_type(&field.schema, &names);
            Column {
                name: field.name.clone(),
                ty,
                nullable,
            }
        })
        .collect();
    let plans = plan(&fields, options.schema.as_deref()).map_err(unreadable)?;
    let repeated = plans
        .iter()
        .map(|p| {
            p.column.ty == ColumnType::Json
                && record
                    .fields
                    .get(p.index)
                    .is_some_and(|f| is_array(&f.schema, &names))
        })
        .collect();
    let columns = plans.iter().map(|p| p.column.clone()).collect();
    let rows = AvroRows {
        reader,
        record,
        names,
        plans,
        repeated,
        number: 0,
    };
    Ok((columns, Box::new(rows)))
}

/// Whether a field is an array, or a union of null and an array.
fn is_array(schema: &Schema, names: &NamedTypes) -> bool {
    match names.resolve(schema) {
        Schema::Array(_) => true,
        Schema::Union(union) => {
            let non_null: Vec<&Schema> = union
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            matches!(non_null.as_slice(), [only] if matches!(names.resolve(only), Schema::Array(_)))
        }
        _ => false,
    }
}

impl RowReader for AvroRows {
    fn next_row(&mut self, row: &mut Vec<Value>) -> Result<Next, FormatError> {
        let Some(item) = self.reader.next() else {
            return Ok(Next::End);
        };
        self.number += 1;
        let number = self.number;
        let value = item.map_err(|e| unreadable(format!("cannot read row {number}: {e}")))?;
        let Avro::Record(values) = value else {
            return Err(unreadable(format!("row {number} is not a record")));
        };
        for (plan, repeated) in self.plans.iter().zip(&self.repeated) {
            let schema = self
                .record
                .fields
                .get(plan.index)
                .map_or(&Schema::Null, |f| &f.schema);
            let value =
                field_value(&values, plan.index, &self.record.fields).unwrap_or(&Avro::Null);
            let natural = to_natural(value, schema, plan.natural, &self.names);
            if let Some(bad) = push_cell(row, number, finish_field(plan, natural, *repeated)) {
                return Ok(bad);
            }
        }
        Ok(Next::Row(number))
    }
}

fn unreadable(reason: String) -> FormatError {
    FormatError::Unreadable {
        format: Format::Avro,
        reason,
    }
}

/// The value of record field `index` (values come in schema order; fall back to the name).
fn field_value<'v>(
    values: &'v [(String, Avro)],
    index: usize,
    fields: &[apache_avro::schema::RecordField],
) -> Option<&'v Avro> {
    let name = &fields.get(index)?.name;
    match values.get(index) {
        Some((n, v)) if n == name => Some(v),
        _ => values.iter().find(|(n, _)| n == name).map(|(_, v)| v),
    }
}

/// The named types (records, enums, fixed) of a schema, to resolve references.
struct NamedTypes(Vec<(Name, Schema)>);

impl NamedTypes {
    fn of(schema: &Schema) -> Self {
        let mut named = NamedTypes(Vec::new());
        named.collect(schema);
        named
    }

    fn collect(&mut self, schema: &Schema) {
        match schema {
            Schema::Record(record) => {
                self.0.push((record.name.clone(), schema.clone()));
                for field in &record.fields {
                    self.collect(&field.schema);
                }
            }
            Schema::Enum(e) => self.0.push((e.name.clone(), schema.clone())),
            Schema::Fixed(f) => self.0.push((f.name.clone(), schema.clone())),
            Schema::Array(a) => self.collect(&a.items),
            Schema::Map(m) => self.collect(&m.types),
            Schema::Union(u) => u.variants().iter().for_each(|v| self.collect(v)),
            Schema::Decimal(d) => self.collect(&d.inner),
            _ => {}
        }
    }

    /// `schema`, or the named type it refers to.
    fn resolve<'a>(&'a self, schema: &'a Schema) -> &'a Schema {
        let Schema::Ref { name } = schema else {
            return schema;
        };
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .or_else(|| self.0.iter().find(|(n, _)| n.name == name.name))
            .map_or(schema, |(_, s)| s)
    }
}

/// The column type of a field and whether it is nullable (a union with `null`).
fn column_type(schema: &Schema, names: &NamedTypes) -> (ColumnType, bool) {
    match names.resolve(schema) {
        Schema::Union(union) => {
            let variants = union.variants();
            let non_null: Vec<&Schema> = variants
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            let ty = match non_null.as_slice() {
                [] => ColumnType::String,
                [only] => value_type(only, names),
                _ => ColumnType::Json,
            };
            (ty, non_null.len() < variants.len())
        }
        Schema::Null => (ColumnType::String, true),
        other => (value_type(other, names), false),
    }
}

/// The column type of a non-union schema.
fn value_type(schema: &Schema, names: &NamedTypes) -> ColumnType {
    match names.resolve(schema) {
        Schema::Boolean => ColumnType::Bool,
        Schema::Int | Schema::Long => ColumnType::Int64,
        Schema::Float | Schema::Double => ColumnType::Float64,
        Schema::Bytes | Schema::Fixed(_) => ColumnType::Bytes,
        Schema::String | Schema::Enum(_) | Schema::Uuid | Schema::Null => ColumnType::String,
        // No NUMERIC, TIME or DATETIME here: exact decimal text, `HH:MM:SS[.f]` and zone-less
        // `YYYY-MM-DDTHH:MM:SS[.f]` text.
        Schema::Decimal(_) | Schema::BigDecimal => ColumnType::String,
        Schema::TimeMillis | Schema::TimeMicros => ColumnType::String,
        Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => ColumnType::String,
        Schema::Date => ColumnType::Date,
        Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos => {
            ColumnType::Timestamp
        }
        Schema::Duration
        | Schema::Array(_)
        | Schema::Map(_)
        | Schema::Record(_)
        | Schema::Union(_)
        | Schema::Ref { .. } => ColumnType::Json,
    }
}

/// `value` as the column type `ty` its schema maps to. The error says what is wrong with the
/// value (an out-of-range date, say).
fn to_natural(
    value: &Avro,
    schema: &Schema,
    ty: ColumnType,
    names: &NamedTypes,
) -> Result<Value, String> {
    let (value, schema) = unwrap_union(value, names.resolve(schema), names);
    let out_of_range = |what: &str, v: i64| format!("{what} {v} is out of range");
    Ok(match value {
        Avro::Null => Value::Null,
        _ if ty == ColumnType::Json => Value::Text(to_json(value, Some(schema), names).to_string()),
        Avro::Boolean(b) => Value::Bool(*b),
        Avro::Int(i) => Value::Int(i64::from(*i)),
        Avro::Long(i) => Value::Int(*i),
        Avro::Float(f) => Value::Float(f64::from(*f)),
        Avro::Double(f) => Value::Float(*f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => Value::Bytes(b.clone()),
        Avro::String(s) | Avro::Enum(_, s) => Value::Text(s.clone()),
        Avro::Uuid(u) => Value::Text(u.to_string()),
        Avro::Date(d) => {
            Value::Text(epoch_date_text(*d).ok_or_else(|| out_of_range("date", i64::from(*d)))?)
        }
        Avro::TimeMillis(t) => Value::Text(
            time_of_day_text(i64::from(*t), TimeUnit::Millis)
                .ok_or_else(|| out_of_range("time-millis", i64::from(*t)))?,
        ),
        Avro::TimeMicros(t) => Value::Text(
            time_of_day_text(*t, TimeUnit::Micros)
                .ok_or_else(|| out_of_range("time-micros", *t))?,
        ),
        Avro::TimestampMillis(t) | Avro::TimestampMicros(t) | Avro::TimestampNanos(t) => {
            let unit = unit_of(value);
            Value::Text(
                epoch_timestamp_text(*t, unit).ok_or_else(|| out_of_range("timestamp", *t))?,
            )
        }
        Avro::LocalTimestampMillis(t)
        | Avro::LocalTimestampMicros(t)
        | Avro::LocalTimestampNanos(t) => {
            let unit = unit_of(value);
            Value::Text(
                local_timestamp_text(*t, unit)
                    .ok_or_else(|| out_of_range("local-timestamp", *t))?,
            )
        }
        Avro::Decimal(d) => Value::Text(decimal(d, schema)?),
        Avro::BigDecimal(d) => Value::Text(d.to_string()),
        Avro::Duration(_) | Avro::Array(_) | Avro::Map(_) | Avro::Record(_) | Avro::Union(..) => {
            Value::Text(to_json(value, Some(schema), names).to_string())
        }
    })
}

fn unit_of(value: &Avro) -> TimeUnit {
    match value {
        Avro::TimestampMillis(_) | Avro::LocalTimestampMillis(_) => TimeUnit::Millis,
        Avro::TimestampNanos(_) | Avro::LocalTimestampNanos(_) => TimeUnit::Nanos,
        _ => TimeUnit::Micros,
    }
}

/// A union value and the schema of the branch it took.
fn unwrap_union<'v, 's>(
    value: &'v Avro,
    schema: &'s Schema,
    names: &'s NamedTypes,
) -> (&'v Avro, &'s Schema) {
    match (value, schema) {
        (Avro::Union(i, inner), Schema::Union(union)) => {
            let branch = usize::try_from(*i)
                .ok()
                .and_then(|i| union.variants().get(i));
            unwrap_union(inner, names.resolve(branch.unwrap_or(schema)), names)
        }
        (Avro::Union(_, inner), _) => unwrap_union(inner, schema, names),
        _ => (value, schema),
    }
}

/// A decimal as exact text, scaled by its schema.
fn decimal(value: &apache_avro::Decimal, schema: &Schema) -> Result<String, String> {
    let scale = match schema {
        Schema::Decimal(d) => i64::try_from(d.scale).unwrap_or(0),
        _ => 0,
    };
    let bytes = <Vec<u8>>::try_from(value).map_err(|e| format!("bad decimal: {e}"))?;
    Ok(decimal_text(&bytes, scale))
}

/// Nested data as JSON: bytes as base64, logical types as their text forms.
fn to_json(value: &Avro, schema: Option<&Schema>, names: &NamedTypes) -> Json {
    let schema = schema.map(|s| names.resolve(s));
    let float = |f: f64| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number);
    let text_or = |text: Option<String>, raw: i64| text.map_or(Json::from(raw), Json::String);
    match value {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(*b),
        Avro::Int(i) => Json::from(*i),
        Avro::Long(i) => Json::from(*i),
        Avro::Float(f) => float(f64::from(*f)),
        Avro::Double(f) => float(*f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Avro::String(s) | Avro::Enum(_, s) => Json::String(s.clone()),
        Avro::Uuid(u) => Json::String(u.to_string()),
        Avro::Union(i, inner) => {
            let branch = match schema {
                Some(Schema::Union(union)) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| union.variants().get(i)),
                _ => None,
            };
            to_json(inner, branch, names)
        }
        Avro::Array(items) => {
            let item_schema = match schema {
                Some(Schema::Array(a)) => Some(a.items.as_ref()),
                _ => None,
            };
            Json::Array(
                items
                    .iter()
                    .map(|v| to_json(v, item_schema, names))
                    .collect(),
            )
        }
        Avro::Map(entries) => {
            let value_schema = match schema {
                Some(Schema::Map(m)) => Some(m.types.as_ref()),
                _ => None,
            };
            // BigQuery loads an Avro map as a REPEATED RECORD of `key` and `value`.
            Json::Array(
                entries
                    .iter()
                    .map(|(k, v)| serde_json::json!({"key": k, "value": to_json(v, value_schema, names)}))
                    .collect(),
            )
        }
        Avro::Record(fields) => {
            let field_schema = |name: &str| match schema {
                Some(Schema::Record(r)) => r
                    .lookup
                    .get(name)
                    .and_then(|i| r.fields.get(*i))
                    .map(|f| &f.schema),
                _ => None,
            };
            Json::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v, field_schema(k), names)))
                    .collect(),
            )
        }
        Avro::Date(d) => text_or(epoch_date_text(*d), i64::from(*d)),
        Avro::TimeMillis(t) => text_or(
            time_of_day_text(i64::from(*t), TimeUnit::Millis),
            i64::from(*t),
        ),
        Avro::TimeMicros(t) => text_or(time_of_day_text(*t, TimeUnit::Micros), *t),
        Avro::TimestampMillis(t) | Avro::TimestampMicros(t) | Avro::TimestampNanos(t) => {
            text_or(epoch_timestamp_text(*t, unit_of(value)), *t)
        }
        Avro::LocalTimestampMillis(t)
        | Avro::LocalTimestampMicros(t)
        | Avro::LocalTimestampNanos(t) => text_or(local_timestamp_text(*t, unit_of(value)), *t),
        Avro::Decimal(d) => match decimal(d, schema.unwrap_or(&Schema::Null)) {
            Ok(text) => Json::String(text),
            Err(_) => Json::Null,
        },
        Avro::BigDecimal(d) => Json::String(d.to_string()),
        Avro::Duration(d) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "millis": u32::from(d.millis()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::formats::test_support::{column, decode_with, text};
    use apache_avro::types::{Record, Value as Avro};
    use apache_avro::{Schema, Writer};

    use crate::formats::{BadRow, Column, ColumnType, Format, FormatError, Rows, Value};

    fn avro(bytes: &[u8], schema: Option<Vec<Column>>) -> Result<Rows, FormatError> {
        decode_with(Format::Avro, bytes, 0, schema)
    }

    /// An Avro file with `schema` and one record per row of `(field, value)` pairs.
    fn write(schema: &str, rows: Vec<Vec<(&str, Avro)>>) -> Vec<u8> {
        let schema = Schema::parse_str(schema).expect("test schema parses");
        let mut writer = Writer::new(&schema, Vec::new());
        for row in rows {
            let mut record = Record::new(&schema).expect("schema is a record");
            for (field, value) in row {
                record.put(field, value);
            }
            writer.append(record).expect("record matches schema");
        }
        writer.into_inner().expect("writes")
    }

    const ORDERS: &str = r#"{
        "type": "record", "name": "Order",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "note", "type": ["null", "string"]},
            {"name": "amount", "type": "double"}
        ]
    }"#;

    fn order(id: i64, note: Option<&str>, amount: f64) -> Vec<(&'static str, Avro)> {
        let note = match note {
            Some(n) => Avro::Union(1, Box::new(Avro::String(n.to_owned()))),
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        vec![
            ("id", Avro::Long(id)),
            ("note", note),
            ("amount", Avro::Double(amount)),
        ]
    }

    #[test]
    fn avro_union_with_null_is_nullable_and_plain_fields_are_required() {
        let bytes = write(ORDERS, vec![order(1, Some("hi"), 2.5), order(2, None, 3.0)]);
        let rows = avro(&bytes, None).expect("decodes");
        assert_eq!(
            rows.columns,
            vec![
                column("id", ColumnType::Int64, false),
                column("note", ColumnType::String, true),
                column("amount", ColumnType::Float64, false)
            ]
        );
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::Int(1), text("hi"), Value::Float(2.5)],
                vec![Value::Int(2), Value::Null, Value::Float(3.0)]
            ]
        );
    }

    #[test]
    fn avro_maps_logical_and_complex_types_to_bigquery_types() {
        let schema = r#"{
            "type": "record", "name": "All",
            "fields": [
                {"name": "i", "type": "int"},
                {"name": "f", "type": "float"},
                {"name": "b", "type": "boolean"},
                {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
                {"name": "raw", "type": "bytes"},
                {"name": "fx", "type": {"type": "fixed", "name": "Two", "size": 2}},
                {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
                {"name": "tags", "type": {"type": "array", "items": "string"}},
                {"name": "attrs", "type": {"type": "map", "values": "long"}},
                {"name": "addr", "type": {"type": "record", "name": "Addr", "fields": [{"name": "city", "type": "string"}]}},
                {"name": "color2", "type": ["null", "Color"]},
                {"name": "either", "type": ["null", "long", "string"]}
            ]
        }"#;
        let bytes = write(
            schema,
            vec![vec![
                ("i", Avro::Int(-3)),
                ("f", Avro::Float(1.5)),
                ("b", Avro::Boolean(true)),
                ("e", Avro::Enum(1, "GREEN".to_owned())),
                ("raw", Avro::Bytes(vec![0, 255])),
                ("fx", Avro::Fixed(2, vec![1, 2])),
                ("ts_ms", Avro::TimestampMillis(1_763_627_400_000)),
                ("ts_us", Avro::TimestampMicros(1_763_627_400_123_456)),
                ("day", Avro::Date(20_412)),
                (
                    "price",
                    Avro::Decimal(apache_avro::Decimal::from(vec![0xFF, 0x85])),
                ),
                ("tags", Avro::Array(vec![Avro::String("a".to_owned())])),
                (
                    "attrs",
                    Avro::Map([("k".to_owned(), Avro::Long(1))].into_iter().collect()),
                ),
                (
                    "addr",
                    Avro::Record(vec![("city".to_owned(), Avro::String("Oslo".to_owned()))]),
                ),
                (
                    "color2",
                    Avro::Union(1, Box::new(Avro::Enum(0, "RED".to_owned()))),
                ),
                ("either", Avro::Union(1, Box::new(Avro::Long(5)))),
            ]],
        );
        let rows = avro(&bytes, None).expect("decodes");
        let types: Vec<ColumnType> = rows.columns.iter().map(|c| c.ty).collect();
        use ColumnType::*;
        assert_eq!(
            types,
            [
                Int64, Float64, Bool, String, Bytes, Bytes, Timestamp, Timestamp, Date, String,
                Json, Json, Json, String, Json
            ]
        );
        assert_eq!(
            rows.rows,
            vec![vec![
                Value::Int(-3),
                Value::Float(1.5),
                Value::Bool(true),
                text("GREEN"),
                Value::Bytes(vec![0, 255]),
                Value::Bytes(vec![1, 2]),
                text("2025-11-20T08:30:00Z"),
                text("2025-11-20T08:30:00.123456Z"),
                text("2025-11-20"),
                text("-1.23"),
                text("[\"a\"]"),
                text("[{\"key\":\"k\",\"value\":1}]"),
                text("{\"city\":\"Oslo\"}"),
                text("RED"),
                text("5"),
            ]]
        );
    }

    #[test]
    fn declared_avro_schema_selects_columns_by_name_and_converts_types() {
        let bytes = write(ORDERS, vec![order(1, Some("7"), 2.0)]);
        let schema = vec![
            column("AMOUNT", ColumnType::Int64, true),
            column("note", ColumnType::Int64, true),
            column("id", ColumnType::String, false),
        ];
        let rows = avro(&bytes, Some(schema.clone())).expect("decodes");
        assert_eq!(rows.columns, schema);
        assert_eq!(
            rows.rows,
            vec![vec![Value::Int(2), Value::Int(7), text("1")]]
        );
    }

    #[test]
    fn declared_required_column_rejects_null_with_row_number() {
        let bytes = write(
            ORDERS,
            vec![
                order(1, Some("a"), 1.0),
                order(2, None, 1.0),
                order(3, None, 1.0),
            ],
        );
        let schema = vec![column("note", ColumnType::String, false)];
        let result = avro(&bytes, Some(schema));
        let reason = "column `note` is REQUIRED but the value is NULL".to_owned();
        assert!(
            matches!(&result, Err(FormatError::BadRows(bad)) if *bad == vec![
                BadRow { row: 2, reason: reason.clone() },
                BadRow { row: 3, reason: reason.clone() },
            ]),
            "{result:?}"
        );
    }

    #[test]
    fn declared_avro_column_rejects_unconvertible_value_naming_column_and_value() {
        let bytes = write(ORDERS, vec![order(1, Some("x"), 1.5)]);
        let schema = vec![column("amount", ColumnType::Int64, true)];
        let result = avro(&bytes, Some(schema));
        assert!(
            matches!(&result, Err(FormatError::BadRows(bad))
                if bad[0].row == 1 && bad[0].reason == "column `amount`: cannot convert 1.5 to INT64"),
            "{result:?}"
        );
    }

    #[test]
    fn declared_column_missing_from_avro_file_is_unreadable() {
        let bytes = write(ORDERS, vec![order(1, None, 1.0)]);
        let result = avro(
            &bytes,
            Some(vec![column("customer", ColumnType::String, true)]),
        );
        assert!(
            matches!(&result, Err(FormatError::Unreadable { format: Format::Avro, reason }) if reason.contains("`customer`")),
            "{result:?}"
        );
    }

    #[test]
    fn garbage_bytes_are_unreadable_avro() {
        for bytes in [
            &b""[..],
            b"not avro at all",
            b"Obj\x01\xff\xff\xff\xff\xff\xff",
        ] {
            let result = avro(bytes, None);
            assert!(
                matches!(
                    &result,
                    Err(FormatError::Unreadable {
                        format: Format::Avro,
                        ..
                    })
                ),
                "{result:?}"
            );
        }
    }

    #[test]
    fn corrupted_avro_bytes_never_panic() {
        let bytes = write(
            ORDERS,
            (0..5).map(|i| order(i, Some("note"), 1.0)).collect(),
        );
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut copy = bytes.clone();
                copy[i] ^= flip;
                // Any result is fine; reaching the next iteration means no panic.
                let _ = avro(&copy, None);
            }
        }
    }

    #[test]
    fn truncated_avro_file_is_unreadable_and_never_partial() {
        let bytes = write(
            ORDERS,
            (0..50).map(|i| order(i, Some("some text"), 1.0)).collect(),
        );
        for cut in [bytes.len() - 1, bytes.len() - 20, bytes.len() / 2] {
            let result = avro(&bytes[..cut], None);
            assert!(
                matches!(&result, Err(FormatError::Unreadable { .. })),
                "cut at {cut}: {result:?}"
            );
        }
    }
}
