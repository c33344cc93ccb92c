//! The documentation cannot drift from the code: every pipeline file (or part of one) shown in
//! the README and `docs/` passes `conveyor validate`, and every key of the pipeline file's JSON
//! Schema is named in the configuration reference.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::common::{conveyor, repo_file};

/// The README and every page under `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo_file("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo_file("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The ```yaml blocks of `text`: (line of the fence, content).
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.trim_start()) {
            (None, l) if l.starts_with("```yaml") => open = Some((i + 1, Vec::new())),
            (Some(_), l) if l.starts_with("```") => {
                if let Some((at, lines)) = open.take() {
                    blocks.push((at, lines.join("\n") + "\n"));
                }
            }
            (Some((_, lines)), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// A whole pipeline file for `block`: a file as it is; pipelines (`  - name: …`) under
/// `pipelines:`; a `batch:` in a manual pipeline; top-level settings with one pipeline.
fn as_file(block: &str) -> String {
    const ONE: &str = "pipelines:\n  - name: docs_example\n    trigger: { manual: true }\n";
    let first = block
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or_default();
    if block.lines().any(|l| l.starts_with("pipelines:")) {
        block.to_owned()
    } else if first.starts_with("  - name:") {
        format!("pipelines:\n{block}")
    } else if first.starts_with("batch:") {
        let indented: String = block.lines().map(|l| format!("    {l}\n")).collect();
        format!("{ONE}{indented}")
    } else {
        format!("{block}{ONE}    jobs: [{{ name: job, engine: local, command: \"true\" }}]\n")
    }
}

#[test]
fn every_pipeline_file_in_the_documentation_passes_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    let mut failures = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        for (line, block) in yaml_blocks(&text) {
            let file = dir.path().join(format!("block-{checked}.yaml"));
            let whole = as_file(&block);
            std::fs::write(&file, &whole).expect("write");
            checked += 1;
            let out = conveyor(&["validate", file.to_str().expect("utf-8")]);
            if !out.status.success() {
                failures.push(format!(
                    "{}:{line}:\n{}\n--- as validated:\n{whole}",
                    page.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(checked >= 10, "only {checked} yaml blocks found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every property name of the JSON Schema `schema` and of the schemas inside it (properties,
/// `$defs`, items, `anyOf`/`oneOf`/`allOf`, map values).
fn properties(schema: &serde_json::Value, into: &mut BTreeSet<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
        for (name, sub) in props {
            into.insert(name.clone());
            properties(sub, into);
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(defs) = map.get(key).and_then(|d| d.as_object()) {
            defs.values().for_each(|d| properties(d, into));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get(key) {
            properties(sub, into);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(subs) = map.get(key).and_then(|s| s.as_array()) {
            subs.iter().for_each(|s| properties(s, into));
        }
    }
}

/// Whether `word` stands in `text` as a whole word (letters, digits and `_` around it end it).
fn names(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after = text[at + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !is_word(c));
        before && after
    })
}

#[test]
fn every_key_of_the_json_schema_is_named_in_the_configuration_reference() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("examples/conveyor.schema.json")).expect("schema"),
    )
    .expect("json");
    let mut keys = BTreeSet::new();
    properties(&schema, &mut keys);
    assert!(keys.len() > 50, "the schema's keys: {keys:?}");
    let reference = std::fs::read_to_string(repo_file("docs/configuration.md")).expect("reference");
    let missing: Vec<&String> = keys.iter().filter(|k| !names(&reference, k)).collect();
    assert!(
        missing.is_empty(),
        "keys of the pipeline file that docs/configuration.md does not name: {missing:?}"
    );
}
