//! Reading one section of the file with every mistake in it: after each error the offending
//! key is taken out of a copy of the section (or renamed to what it was probably meant to be)
//! and the section is read again; serde's messages are put in plain words.

use std::collections::BTreeSet;

use marked_yaml::Node;
use serde::de::DeserializeOwned;

use super::{Pos, Validator, get, pos};

impl Validator {
    /// Deserializes `node` as `T`, recording every mistake in it under `path`: after each
    /// error the offending key is taken out of a copy of the node and the node is read again.
    /// `None` when there was any mistake.
    pub(super) fn section<T: DeserializeOwned>(&mut self, path: &str, node: &Node) -> Option<T> {
        let mut node = node.clone();
        // Keys taken out, and keys an unknown key was probably meant to be: a `missing
        // field` error about one of them is a consequence of an error already reported.
        let mut explained: BTreeSet<(Vec<Seg>, String)> = BTreeSet::new();
        let mut failed = false;
        for _ in 0..=MAX_ISSUES_PER_SECTION {
            let e = match marked_yaml::from_node::<T>(&node) {
                Ok(v) => return (!failed).then_some(v),
                Err(e) => e,
            };
            failed = true;
            let segs = e.path().map(parse_path).unwrap_or_default();
            let at = pos(e.start_mark().as_ref());
            let full = |segs: &[Seg]| join_path(path, segs);
            let value_text = node_at(&node, &segs)
                .and_then(Node::as_scalar)
                .map(|s| s.as_str().to_owned());
            match e.into_inner() {
                marked_yaml::Error::UnknownFieldError(field, expected, _) => {
                    let parent = segs
                        .strip_suffix(&[Seg::Key(field.clone())])
                        .unwrap_or(&segs)
                        .to_vec();
                    let message = unknown_field(&field, expected);
                    let mut key_path = parent.clone();
                    key_path.push(Seg::Key(field.clone()));
                    self.issue(full(&key_path), at, message);
                    // A misspelt key is read on under the name it was probably meant to
                    // have, so its value and the mapping's other fields are still checked.
                    let meant = closest(&field, expected.iter().copied());
                    if let Some(meant) = meant {
                        explained.insert((parent.clone(), meant.to_owned()));
                    }
                    if !rename(&mut node, &key_path, meant) {
                        return None;
                    }
                }
                inner => {
                    let message = inner.to_string();
                    if let Some(missing) = missing_field(&message) {
                        let consequence = explained.contains(&(segs.clone(), missing.clone()));
                        if !consequence {
                            let mut key_path = segs.clone();
                            key_path.push(Seg::Key(missing.clone()));
                            self.issue(full(&key_path), at, format!("missing field `{missing}`"));
                        }
                    } else {
                        // `engine: locall` fails the whole job mapping: point at the value.
                        let (tag_segs, tag_at) = tag_value(&node, segs.clone(), at, &message);
                        self.issue(
                            full(&tag_segs),
                            tag_at,
                            plain(&inner, &message, value_text.as_deref()),
                        );
                    }
                    // Take the key out; a refused value inside a list takes its list out.
                    let mut key_path = segs.clone();
                    while matches!(key_path.last(), Some(Seg::Index(_))) {
                        key_path.pop();
                    }
                    if let Some(Seg::Key(k)) = key_path.last() {
                        explained.insert((key_path[..key_path.len() - 1].to_vec(), k.clone()));
                    }
                    if !remove(&mut node, &key_path) {
                        return None;
                    }
                }
            }
        }
        None
    }

    pub(super) fn known_keys(&mut self, path: &str, node: &Node, allowed: &[&str]) {
        let Some(map) = node.as_mapping() else { return };
        for (key, _) in map.iter() {
            if !allowed.contains(&key.as_str()) {
                let full = if path.is_empty() {
                    key.as_str().to_owned()
                } else {
                    format!("{path}.{}", key.as_str())
                };
                self.issue(
                    full,
                    pos(key.span().start()),
                    unknown_field(key.as_str(), allowed),
                );
            }
        }
    }
}

/// The candidate closest to `word` (case-insensitive edit distance), when close enough to be
/// what was meant: "did you mean `load`?".
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = (lower.chars().count() / 3).max(1) + usize::from(lower.chars().count() > 8);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= limit && *c != word)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn load_error_pos(e: &marked_yaml::LoadError) -> Pos {
    use marked_yaml::LoadError as L;
    match e {
        L::TopLevelMustBeMapping(m)
        | L::TopLevelMustBeSequence(m)
        | L::UnexpectedAnchor(m)
        | L::MappingKeyMustBeScalar(m)
        | L::UnexpectedTag(m)
        | L::ScanError(m, _) => pos(Some(m)),
        L::DuplicateKey(d) => pos(d.key.span().start()),
    }
}

/// The most mistakes reported in one section (a guard: each round takes a key out).
const MAX_ISSUES_PER_SECTION: usize = 100;

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `load.schema[0].name` (as serde_path_to_error renders it) as steps. Parts serde could not
/// follow (`?`) end the path.
fn parse_path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    if p.is_empty() || p == "." {
        return out;
    }
    for part in p.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if key == "?" {
            break;
        }
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse::<usize>() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

fn join_path(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_owned();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn node_at<'a>(node: &'a Node, segs: &[Seg]) -> Option<&'a Node> {
    let mut n = node;
    for s in segs {
        n = match s {
            Seg::Key(k) => get(n, k)?,
            Seg::Index(i) => n.as_sequence()?.get(*i)?,
        };
    }
    Some(n)
}

/// Takes the key at `segs` out of its mapping; false when there is none (the section root).
fn remove(node: &mut Node, segs: &[Seg]) -> bool {
    rename(node, segs, None)
}

/// Renames the key at `segs` to `to` when its mapping has no such key yet, else takes it out;
/// false when there is no key at `segs`.
fn rename(node: &mut Node, segs: &[Seg], to: Option<&str>) -> bool {
    let Some((Seg::Key(last), parent)) = segs.split_last() else {
        return false;
    };
    let mut n = node;
    for s in parent {
        let next = match s {
            Seg::Key(k) => n.as_mapping_mut().and_then(|m| {
                let key = m.keys().find(|key| key.as_str() == k)?.clone();
                m.get_mut(&key)
            }),
            Seg::Index(i) => n.as_sequence_mut().and_then(|q| q.get_mut(*i)),
        };
        match next {
            Some(next) => n = next,
            None => return false,
        }
    }
    let Some(map) = n.as_mapping_mut() else {
        return false;
    };
    let Some(key) = map.keys().find(|key| key.as_str() == last).cloned() else {
        return false;
    };
    let Some(value) = map.remove(&key) else {
        return false;
    };
    if let Some(to) = to
        && !map.keys().any(|k| k.as_str() == to)
    {
        map.insert(
            marked_yaml::types::MarkedScalarNode::new(*key.span(), to),
            value,
        );
    }
    true
}

/// For `unknown variant `w`` reported at a mapping (an internally tagged enum such as a job's
/// `engine:`), the path and position of the key whose value is `w`.
fn tag_value(node: &Node, segs: Vec<Seg>, at: Pos, message: &str) -> (Vec<Seg>, Pos) {
    let Some(word) = message
        .strip_prefix("unknown variant `")
        .and_then(|r| r.split('`').next())
    else {
        return (segs, at);
    };
    let Some(map) = node_at(node, &segs).and_then(Node::as_mapping) else {
        return (segs, at);
    };
    for (k, v) in map.iter() {
        if let Some(value) = v.as_scalar()
            && value.as_str() == word
        {
            let mut segs = segs.clone();
            segs.push(Seg::Key(k.as_str().to_owned()));
            return (segs, pos(value.span().start()));
        }
    }
    (segs, at)
}

/// `missing field `name`` → `name`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

fn unknown_field(field: &str, expected: &[&str]) -> String {
    match closest(field, expected.iter().copied()) {
        Some(meant) => format!("unknown field `{field}`; did you mean `{meant}`?"),
        None if expected.is_empty() => {
            format!("unknown field `{field}`: this mapping takes no fields")
        }
        None => format!(
            "unknown field `{field}`, expected one of: {}",
            expected.join(", ")
        ),
    }
}

/// serde's and the parsers' messages in plain words: `expected an integer, got "one"`.
fn plain(error: &marked_yaml::Error, message: &str, value: Option<&str>) -> String {
    use marked_yaml::Error as E;
    let got = value.map_or_else(String::new, |v| format!(", got {v:?}"));
    match error {
        E::IntegerParseFailure(..) => return format!("expected a whole number{got}"),
        E::FloatParseFailure(..) => return format!("expected a number{got}"),
        E::NotBoolean(_) => return format!("expected true or false{got}"),
        _ => {}
    }
    // `unknown variant `APEND`, expected one of `A`, `B``: suggest the closest.
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (word, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        return match closest(word, candidates.iter().copied()) {
            Some(meant) => format!("unknown value `{word}`; did you mean `{meant}`?"),
            None => format!(
                "unknown value `{word}`{}",
                tail.replacen(", expected", "; expected", 1)
            ),
        };
    }
    let lower = message.to_ascii_lowercase();
    let duration = [
        "time unit",
        "duration",
        "expected number",
        "number is too large",
    ];
    if duration.iter().any(|w| lower.contains(w)) && !lower.contains("invalid type") {
        return format!("expected a duration such as 30s or 5m{got}");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((unexpected, expected)) = rest.split_once(", expected ")
    {
        let expected = match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number",
            "f32" | "f64" => "a number",
            "a boolean" => "true or false",
            "a sequence" => "a list",
            "a string" => "a string",
            e if e.starts_with("struct ") || e == "a map" => "a mapping",
            e => e,
        };
        let unexpected = match unexpected {
            "map" => "a mapping".to_owned(),
            "sequence" => "a list".to_owned(),
            "unit value" => "nothing".to_owned(),
            u => u
                .strip_prefix("string ")
                .map_or_else(|| u.to_owned(), str::to_owned),
        };
        return format!("expected {expected}, got {unexpected}");
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GOOD, issues};

    #[test]
    fn a_refused_required_value_is_not_also_reported_missing() {
        let text = GOOD.replace("format: CSV", "fromat: CSV");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            found[0].message,
            "unknown field `fromat`; did you mean `format`?"
        );
        assert_eq!((found[0].line, found[0].column), (Some(10), Some(7)));
        let text = GOOD.replace("format: CSV", "format: XLSX");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].message.contains("unknown value `XLSX`"),
            "{found:#?}"
        );
        let text = GOOD.replace("format: CSV", "format: CVS");
        let found = issues(&text);
        assert_eq!(
            found[0].message, "unknown value `CVS`; did you mean `CSV`?",
            "{found:#?}"
        );
    }

    #[test]
    fn an_unknown_pipeline_key_is_reported_once() {
        let text = GOOD.replace("    poll:", "    colour: blue\n    poll:");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].path, "pipelines[0].colour");
    }

    #[test]
    fn a_misspelt_key_is_read_on_under_the_meant_name() {
        let text = r#"pipelines:
  - name: a
    trigger: { manual: true }
    jobs:
      - name: x
        engine: locall
        command: "true"
      - name: y
        engine: dataproc_serverless
        project: p
        regoin: 42x
        poll: { timeout: 5m, max_atempts: many }
"#;
        let found = issues(text);
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "6:17: pipelines[0].jobs[0].engine: unknown value `locall`; did you mean `local`?",
                // A missing field is reported where its mapping starts.
                "8:13: pipelines[0].jobs[1].runtime_version: missing field `runtime_version`",
                "11:9: pipelines[0].jobs[1].regoin: unknown field `regoin`; did you mean `region`?",
                "12:30: pipelines[0].jobs[1].poll.max_atempts: unknown field `max_atempts`; did you mean `max_attempts`?",
                // The misspelt key's value is still checked, under the meant name.
                "12:43: pipelines[0].jobs[1].poll.max_attempts: expected a whole number, got \"many\"",
            ],
            "{shown:#?}"
        );
    }
}
