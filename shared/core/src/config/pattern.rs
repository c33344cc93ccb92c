//! Object path patterns with named captures, such as `sales/{date}/*.avro`.

use std::collections::BTreeMap;
use std::fmt;

use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;
use serde::{Deserialize, Serialize};

/// A pattern over object names.
///
/// - `{name}` captures one path segment (no `/`) under `name`;
/// - `*` matches any run of characters inside one segment;
/// - `**` matches any run of characters across segments;
/// - everything else matches itself.
///
/// # Examples
/// ```
/// use conveyor_core::config::PathPattern;
/// let p = PathPattern::parse("sales/{date}/*.avro").unwrap();
/// let caps = p.captures("sales/2026-11-20/orders.avro").unwrap();
/// assert_eq!(caps["date"], "2026-11-20");
/// assert!(p.captures("sales/2026-11-20/orders.csv").is_none());
/// ```
#[derive(Clone)]
pub struct PathPattern {
    source: String,
    regex: Regex,
    names: Vec<String>,
    /// The folder part (before the last `/`), when the file part has no `**`.
    folder: Option<Regex>,
}

/// A pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern text.
    pub pattern: String,
    /// What is wrong.
    pub reason: String,
}

impl PathPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// A [`PatternError`] for an empty pattern, an unclosed `{`, an invalid or repeated capture
    /// name.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let err = |reason: &str| PatternError {
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
        };
        if pattern.is_empty() {
            return Err(err("must not be empty"));
        }
        if pattern.starts_with('/') {
            return Err(err("must be relative to the bucket (no leading '/')"));
        }
        let mut re = String::from("^");
        let mut names: Vec<String> = Vec::new();
        let mut chars = pattern.chars().peekable();
        // The regex of the folder part: everything before the last '/', and whether the file
        // part after it crosses segments.
        let mut folder_re = String::from("^");
        let mut file_crosses = false;
        while let Some(c) = chars.next() {
            if c == '/' {
                folder_re = re.clone();
                file_crosses = false;
            }
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(err("unclosed '{'")),
                        }
                    }
                    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(err(
                            "capture names are letters, digits and '_', starting with a letter",
                        ));
                    }
                    if names.contains(&name) {
                        return Err(err("a capture name is used twice"));
                    }
                    re.push_str(&format!("(?P<{name}>(?-u:[^/])+)"));
                    names.push(name);
                }
                '}' => return Err(err("'}' without '{'")),
                '*' => {
                    if chars.peek() == Some(&'*') {
                        chars.next();
                        file_crosses = true;
                        re.push_str("(?s-u:.)*");
                    } else {
                        re.push_str("(?-u:[^/])*");
                    }
                }
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        let regex = compile(&re).map_err(|e| err(&e))?;
        folder_re.push('$');
        let folder = if file_crosses {
            None
        } else {
            Some(compile(&folder_re).map_err(|e| err(&e))?)
        };
        Ok(Self {
            source: pattern.to_owned(),
            regex,
            names,
            folder,
        })
    }

    /// Whether the pattern splits into a folder part and a file part that stays in its
    /// folder (no `**` after the last `/`): what a marker batch needs.
    pub(crate) fn has_folder(&self) -> bool {
        self.folder.is_some()
    }

    /// The captures of the folder part when `folder` (without a trailing `/`; empty for the
    /// bucket's root) is a folder the pattern's files live in.
    ///
    /// # Examples
    /// ```
    /// use conveyor_core::config::PathPattern;
    /// let p = PathPattern::parse("orders/{date}/*.csv").unwrap();
    /// assert_eq!(p.folder_captures("orders/2026-11-20").unwrap()["date"], "2026-11-20");
    /// assert!(p.folder_captures("orders/2026-11-20/x").is_none());
    /// ```
    pub fn folder_captures(&self, folder: &str) -> Option<BTreeMap<String, String>> {
        captures_of(self.folder.as_ref()?, &self.names, folder)
    }

    /// The captures of `folder` when it is an ancestor of the folders the pattern's files
    /// live in (a marker covering subfolders): the pattern's leading segments match it and
    /// at least one folder level of the pattern lies below it.
    ///
    /// # Examples
    /// ```
    /// use conveyor_core::config::PathPattern;
    /// let p = PathPattern::parse("orders/{date}/{hour}/*.csv").unwrap();
    /// assert_eq!(p.ancestor_captures("orders/2026-11-20").unwrap()["date"], "2026-11-20");
    /// assert!(p.ancestor_captures("orders/2026-11-20/08").is_none());
    /// ```
    pub fn ancestor_captures(&self, folder: &str) -> Option<BTreeMap<String, String>> {
        let segments: Vec<&str> = self.source.split('/').collect();
        let depth = if folder.is_empty() {
            0
        } else {
            folder.split('/').count()
        };
        // The folder, then at least one folder of the pattern's, then the file part.
        if segments.len() < depth + 2 || segments[..depth].iter().any(|s| s.contains("**")) {
            return None;
        }
        if depth == 0 {
            return Some(BTreeMap::new());
        }
        let leading = format!("{}/*", segments[..depth].join("/"));
        PathPattern::parse(&leading).ok()?.folder_captures(folder)
    }

    /// The capture names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The literal folder the pattern's matches start with (`sales/` for
    /// `sales/{date}/*.csv`, nothing for `{date}/x`): where a listing for its matches starts.
    pub fn literal_prefix(&self) -> &str {
        let end = self.source.find(['{', '*']).unwrap_or(self.source.len());
        match self.source[..end].rfind('/') {
            Some(i) => &self.source[..=i],
            None => "",
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The captures when `object` matches, else `None`.
    pub fn captures(&self, object: &str) -> Option<BTreeMap<String, String>> {
        captures_of(&self.regex, &self.names, object)
    }
}

/// Compiles a pattern's regex cheaply: its classes are ASCII-only byte classes
/// (`(?-u:[^/])`), and no full DFA is built. The Unicode class `[^/]` compiles into an
/// automaton of every UTF-8 sequence and the full DFA is determinised up front: together
/// about a millisecond of a function's cold start per pattern (perf). Literal characters stay
/// Unicode and match their UTF-8 bytes, so a capture bounded by `/` or by a literal starts and
/// ends on a character boundary.
fn compile(re: &str) -> Result<Regex, String> {
    Regex::builder()
        .syntax(syntax::Config::new().utf8(false))
        .configure(meta::Config::new().dfa(false).utf8_empty(false))
        .build(re)
        .map_err(|e| e.to_string())
}

/// The named captures of `regex` in `text`, as text.
fn captures_of(regex: &Regex, names: &[String], text: &str) -> Option<BTreeMap<String, String>> {
    let mut caps = regex.create_captures();
    regex.captures(text.as_bytes(), &mut caps);
    if !caps.is_match() {
        return None;
    }
    Some(
        names
            .iter()
            .filter_map(|n| {
                let span = caps.get_group_by_name(n)?;
                Some((n.clone(), text.get(span.range())?.to_owned()))
            })
            .collect(),
    )
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathPattern").field(&self.source).finish()
    }
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for PathPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Replaces `{name}` in `template` by the capture's value; `{name}` with no capture is an
/// error. Used for table names and batch parameters.
///
/// # Errors
/// The name of the first placeholder without a value.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed '{{' in {template:?}"));
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => return Err(format!("{{{name}}} has no value")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The placeholders `{name}` used in `template`.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Makes a capture value fit a BigQuery table name: every character outside `A-Z a-z 0-9 _`
/// becomes `_` (`2026-11-20` → `2026_11_20`).
pub(crate) fn table_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_prefix_stops_at_the_first_placeholder_folder() {
        let prefix = |p: &str| PathPattern::parse(p).unwrap().literal_prefix().to_owned();
        assert_eq!(prefix("sales/{date}/*.csv"), "sales/");
        assert_eq!(prefix("a/b/c{x}.csv"), "a/b/");
        assert_eq!(prefix("{date}/x"), "");
        assert_eq!(prefix("plain/file.csv"), "plain/");
    }

    #[test]
    fn single_star_does_not_cross_segments_but_double_star_does() {
        let p = PathPattern::parse("in/*.csv").unwrap();
        assert!(p.captures("in/a.csv").is_some());
        assert!(p.captures("in/x/a.csv").is_none());
        let p = PathPattern::parse("in/**.csv").unwrap();
        assert!(p.captures("in/x/a.csv").is_some());
    }

    #[test]
    fn non_ascii_names_capture_whole_characters() {
        let p = PathPattern::parse("ventes/{région}é/*.csv");
        assert!(p.is_err(), "capture names stay ASCII");
        let p = PathPattern::parse("ventes/{region}é/*.csv").unwrap();
        let caps = p.captures("ventes/Île-de-Franceé/été.csv").unwrap();
        assert_eq!(caps["region"], "Île-de-France");
        assert!(p.captures("ventes/Île/été.csv").is_none());
        let p = PathPattern::parse("日本/{city}/**").unwrap();
        assert_eq!(p.captures("日本/東京/a/b.json").unwrap()["city"], "東京");
        assert_eq!(
            p.folder_captures("日本/大阪"),
            None,
            "** has no folder part"
        );
        let p = PathPattern::parse("{a}ü{b}/x").unwrap();
        let caps = p.captures("äüöü/x").unwrap();
        assert_eq!((caps["a"].as_str(), caps["b"].as_str()), ("ä", "öü"));
    }

    #[test]
    fn regex_metacharacters_in_patterns_match_literally() {
        let p = PathPattern::parse("a+b/(x).csv").unwrap();
        assert!(p.captures("a+b/(x).csv").is_some());
        assert!(p.captures("aab/x.csv").is_none());
    }

    #[test]
    fn bad_patterns_are_rejected_with_a_reason() {
        assert!(PathPattern::parse("sales/{date/x").is_err());
        assert!(PathPattern::parse("{a}/{a}").is_err());
        assert!(PathPattern::parse("{1x}").is_err());
    }

    #[test]
    fn render_fills_placeholders_and_names_missing_ones() {
        let vars = BTreeMap::from([("date".to_owned(), "2026_11_20".to_owned())]);
        assert_eq!(
            render("ds.sales_{date}", &vars).unwrap(),
            "ds.sales_2026_11_20"
        );
        assert!(
            render("ds.sales_{region}", &vars)
                .unwrap_err()
                .contains("region")
        );
    }
}
