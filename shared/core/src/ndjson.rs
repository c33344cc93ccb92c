//! What reading NDJSON for its schema means, in one place: a line's members in the order they
//! are written, the keys of many lines in first-seen order, and the JSON types seen in each
//! key's values. The load step's union schema of a batch (`steps::load`) and the embedded
//! warehouse's autodetect (`conveyor-embedded`) both build on it; each says how its strings
//! are typed ([`TextTypes`]).

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use crate::format::ColumnType;

/// One NDJSON line: an object with its members in the order they are written
/// (`serde_json::Map` sorts them), or what else it is (`"an array"`, `"a number"`, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// An object's members; a key written twice keeps its first position and its last value.
    Object(Vec<(String, Json)>),
    /// Not an object: what it is, for an error message.
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LineVisitor)
    }
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        let mut positions: HashMap<String, usize> = HashMap::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            match positions.get(&key).and_then(|i| members.get_mut(*i)) {
                Some(member) => member.1 = value,
                None => {
                    positions.insert(key.clone(), members.len());
                    members.push((key, value));
                }
            }
        }
        Ok(Line::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Line, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Line::Other("an array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Line, E> {
        Ok(Line::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Line, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Line, E> {
        Ok(Line::Other("a string"))
    }

    fn visit_unit<E>(self) -> Result<Line, E> {
        Ok(Line::Other("null"))
    }
}

/// How the strings of a column are typed: what each detection adds to the JSON types (dates,
/// timestamps, ...).
pub trait TextTypes: Default {
    /// Takes one string value into account.
    fn observe(&mut self, text: &str);
    /// The type of a column all of whose non-null values were the strings observed.
    fn string_type(&self) -> ColumnType;
}

/// The JSON types seen in one key's values.
#[derive(Debug, Default)]
pub struct JsonTypes<T> {
    /// An integer (one that fits INT64).
    pub ints: bool,
    /// Another number.
    pub floats: bool,
    /// A boolean.
    pub bools: bool,
    /// A string.
    pub strings: bool,
    /// An array.
    pub arrays: bool,
    /// An object.
    pub objects: bool,
    /// What the strings were.
    pub text: T,
}

impl<T: TextTypes> JsonTypes<T> {
    /// Takes one value into account (null says nothing).
    pub fn observe(&mut self, value: &Json) {
        match value {
            Json::Null => {}
            Json::Bool(_) => self.bools = true,
            Json::Number(n) if n.is_i64() => self.ints = true,
            Json::Number(_) => self.floats = true,
            Json::String(s) => {
                self.strings = true;
                self.text.observe(s);
            }
            Json::Array(_) => self.arrays = true,
            Json::Object(_) => self.objects = true,
        }
    }

    /// Whether an array or an object was seen (BigQuery: a REPEATED or RECORD column).
    pub fn nested(&self) -> bool {
        self.arrays || self.objects
    }

    /// The column type of the values seen: `nested` when an array or object was seen; for one
    /// scalar kind its type (integers and other numbers together: FLOAT64; strings:
    /// [`TextTypes::string_type`]); STRING for mixed kinds or only nulls.
    pub fn column_type(&self, nested: ColumnType) -> ColumnType {
        let numbers = self.ints || self.floats;
        let kinds = [numbers, self.bools, self.strings]
            .iter()
            .filter(|k| **k)
            .count();
        if self.nested() {
            nested
        } else if kinds != 1 {
            ColumnType::String
        } else if self.floats {
            ColumnType::Float64
        } else if self.ints {
            ColumnType::Int64
        } else if self.bools {
            ColumnType::Bool
        } else {
            self.text.string_type()
        }
    }
}

/// The keys of many objects in first-seen order, with the types of each one's values.
#[derive(Debug)]
pub struct JsonKeys<T> {
    index: HashMap<String, usize>,
    names: Vec<String>,
    types: Vec<JsonTypes<T>>,
}

impl<T> Default for JsonKeys<T> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            names: Vec::new(),
            types: Vec::new(),
        }
    }
}

impl<T: TextTypes> JsonKeys<T> {
    /// Takes one object's members into account.
    pub fn observe(&mut self, members: &[(String, Json)]) {
        for (key, value) in members {
            let i = *self.index.entry(key.clone()).or_insert_with(|| {
                self.names.push(key.clone());
                self.types.push(JsonTypes::default());
                self.names.len() - 1
            });
            if let Some(types) = self.types.get_mut(i) {
                types.observe(value);
            }
        }
    }

    /// How many keys were seen.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no key was seen.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The types of each key's values, in first-seen order.
    pub fn types(&self) -> &[JsonTypes<T>] {
        &self.types
    }

    /// Each key with the types of its values, in first-seen order.
    pub fn into_keys(self) -> impl Iterator<Item = (String, JsonTypes<T>)> {
        self.names.into_iter().zip(self.types)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings typed as dates when every one is `YYYY-MM-DD`.
    #[derive(Default)]
    struct Dates(bool);

    impl TextTypes for Dates {
        fn observe(&mut self, text: &str) {
            self.0 |= chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err();
        }
        fn string_type(&self) -> ColumnType {
            if self.0 {
                ColumnType::String
            } else {
                ColumnType::Date
            }
        }
    }

    fn keys(lines: &[&str]) -> Vec<(String, ColumnType)> {
        let mut keys = JsonKeys::<Dates>::default();
        for line in lines {
            if let Ok(Line::Object(members)) = serde_json::from_str::<Line>(line) {
                keys.observe(&members);
            }
        }
        keys.into_keys()
            .map(|(k, t)| (k, t.column_type(ColumnType::Json)))
            .collect()
    }

    #[test]
    fn keys_come_in_first_seen_order_typed_from_all_their_values() {
        let got = keys(&[
            r#"{"z": 1, "a": "2026-01-02", "n": null}"#,
            r#"[1, 2]"#,
            r#"{"m": true, "z": 2.5, "a": "2026-01-03", "o": {"x": 1}}"#,
            r#"{"s": 1, "s": "one", "u": 18446744073709551615}"#,
        ]);
        let want = [
            ("z", ColumnType::Float64),
            ("a", ColumnType::Date),
            ("n", ColumnType::String),
            ("m", ColumnType::Bool),
            ("o", ColumnType::Json),
            ("s", ColumnType::String),
            // Beyond INT64: a float, as BigQuery cannot hold it in an INT64 column.
            ("u", ColumnType::Float64),
        ];
        let want: Vec<_> = want.iter().map(|(k, t)| (k.to_string(), *t)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_that_is_not_an_object_says_what_it_is() {
        for (line, what) in [("[1]", "an array"), ("7", "a number"), ("null", "null")] {
            assert_eq!(
                serde_json::from_str::<Line>(line).ok(),
                Some(Line::Other(what))
            );
        }
    }
}
