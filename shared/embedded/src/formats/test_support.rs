//! What the decoders' tests share: decoding bytes with a schema, building columns and values,
//! and reading the error a case expects.

use crate::formats::{
    BadRow, Column, ColumnType, DecodeOptions, Format, FormatError, Rows, Value, decode,
};

/// Decodes `bytes` as `format`, skipping `skip_leading_rows`, with `schema` (autodetect when
/// `None`).
pub(super) fn decode_with(
    format: Format,
    bytes: &[u8],
    skip_leading_rows: u64,
    schema: Option<Vec<Column>>,
) -> Result<Rows, FormatError> {
    decode(
        format,
        bytes,
        &DecodeOptions {
            schema,
            skip_leading_rows,
            ..Default::default()
        },
    )
}

pub(super) fn column(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        nullable,
    }
}

pub(super) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// The bad rows of a result that must have them.
pub(super) fn bad_rows(result: Result<Rows, FormatError>) -> Vec<BadRow> {
    match result {
        Err(FormatError::BadRows(rows)) => rows,
        other => panic!("expected bad rows, got {other:?}"),
    }
}

/// The reason of a result that must be an unreadable `format` file.
pub(super) fn unreadable(format: Format, result: Result<Rows, FormatError>) -> String {
    match result {
        Err(FormatError::Unreadable { format: f, reason }) if f == format => reason,
        other => panic!("expected an unreadable {format:?} file, got {other:?}"),
    }
}
