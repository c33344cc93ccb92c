//! `load.csv`: how a CSV file is read, as BigQuery's CSV load options.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CSV options of a load (BigQuery's `fieldDelimiter`, `quote`, `nullMarker`, `encoding`,
/// `allowJaggedRows`, `skipLeadingRows`). Every default is BigQuery's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The character between fields (BigQuery's `fieldDelimiter`): one character such as
    /// `"|"` or `";"`, or `"\t"` (also written `tab`). Default `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_delimiter: Option<String>,
    /// The character that quotes a field (BigQuery's `quote`). Default `"`; `""` means fields
    /// are never quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// The text that stands for NULL (BigQuery's `nullMarker`), such as `\N`. Default: an
    /// empty field is NULL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_marker: Option<String>,
    /// The files' character encoding (BigQuery's `encoding`). Default `UTF-8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<CsvEncoding>,
    /// Whether a row may lack trailing fields, read as NULL (BigQuery's `allowJaggedRows`).
    /// Default `false`: such a row is bad.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_jagged_rows: bool,
    /// Leading lines to skip (BigQuery's `skipLeadingRows`). Unset (the default): with
    /// `schema: autodetect` the first line is read as a header when it looks like one (all
    /// text above a typed row), as BigQuery's autodetect does; with declared columns nothing
    /// is skipped. `N`: N lines are skipped; with autodetect the N-th names the columns. With
    /// declared columns, fields are matched to columns by position, as BigQuery does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_leading_rows: Option<u64>,
}

/// A CSV file's character encoding (BigQuery's `encoding` of a CSV load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum CsvEncoding {
    /// UTF-8 (the default).
    #[default]
    #[serde(rename = "UTF-8", alias = "UTF8", alias = "utf-8")]
    Utf8,
    /// ISO-8859-1 (Latin-1): each byte is one character.
    #[serde(rename = "ISO-8859-1", alias = "LATIN1", alias = "latin1")]
    Iso88591,
}

impl CsvEncoding {
    /// The name BigQuery's `encoding` takes.
    pub fn bigquery_name(self) -> &'static str {
        match self {
            Self::Utf8 => "UTF-8",
            Self::Iso88591 => "ISO-8859-1",
        }
    }
}

impl CsvOptions {
    /// The delimiter as the one byte it stands for: `None` when it is not one character of
    /// ISO-8859-1 (what BigQuery takes), with `tab` and `\t` read as a tab.
    pub fn delimiter_byte(&self) -> Option<u8> {
        match self.field_delimiter.as_deref() {
            None => Some(b','),
            Some("tab" | "\\t") => Some(b'\t'),
            Some(d) => single_byte(d),
        }
    }

    /// The delimiter as BigQuery's `fieldDelimiter` takes it (`\t` for a tab).
    pub fn delimiter_for_bigquery(&self) -> Option<String> {
        self.field_delimiter.as_ref().map(|d| match d.as_str() {
            "tab" | "\t" => "\\t".to_owned(),
            d => d.to_owned(),
        })
    }

    /// The quote as one byte; `Some(None)` when quoting is off (`quote: ""`), `None` when it
    /// is not one ISO-8859-1 character.
    pub fn quote_byte(&self) -> Option<Option<u8>> {
        match self.quote.as_deref() {
            None => Some(Some(b'"')),
            Some("") => Some(None),
            Some(q) => single_byte(q).map(Some),
        }
    }
}

/// `text` as one byte, when it is one character below U+0100 (ISO-8859-1's range).
fn single_byte(text: &str) -> Option<u8> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => u8::try_from(u32::from(c)).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tab_may_be_written_as_tab_or_backslash_t() {
        for d in ["tab", "\\t", "\t"] {
            let o = CsvOptions {
                field_delimiter: Some(d.to_owned()),
                ..CsvOptions::default()
            };
            assert_eq!(o.delimiter_byte(), Some(b'\t'), "{d:?}");
            assert_eq!(o.delimiter_for_bigquery().as_deref(), Some("\\t"), "{d:?}");
        }
    }

    #[test]
    fn a_delimiter_or_quote_of_two_characters_is_refused() {
        let o = CsvOptions {
            field_delimiter: Some("||".to_owned()),
            quote: Some("ab".to_owned()),
            ..CsvOptions::default()
        };
        assert_eq!(o.delimiter_byte(), None);
        assert_eq!(o.quote_byte(), None);
        let off = CsvOptions {
            quote: Some(String::new()),
            ..CsvOptions::default()
        };
        assert_eq!(off.quote_byte(), Some(None));
    }
}
