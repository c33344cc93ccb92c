//! Google's discovery documents: read from the `google-api-python-client` wheel that
//! `scripts/emulators.sh discovery` installs (pinned), and the method a request calls.
//!
//! A method's URL is `rootUrl + servicePath + path`, where `path` is an RFC 6570 template:
//! `{name}` is one segment, `{+name}` (reserved expansion) may hold `/` (Pub/Sub's
//! `v1/{+topic}:publish`, Dataproc's `v1/{+name}`); such a parameter's `pattern` says what it
//! may be. A method with `mediaUpload` is also reached at its upload paths
//! (`/upload/storage/v1/b/{bucket}/o`), with `uploadType`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// The APIs Conveyor's adapters call, by short name and discovery document.
pub(crate) const APIS: &[(&str, &str)] = &[
    ("bigquery", "bigquery.v2"),
    ("storage", "storage.v1"),
    ("pubsub", "pubsub.v1"),
    ("dataproc", "dataproc.v1"),
    ("dataflow", "dataflow.v1b3"),
    ("secretmanager", "secretmanager.v1"),
    ("cloudscheduler", "cloudscheduler.v1"),
    ("datalineage", "datalineage.v1"),
    ("run", "run.v2"),
    ("cloudidentity", "cloudidentity.v1"),
];

/// One method, ready to match a request's path.
#[derive(Debug)]
struct Method {
    api: usize,
    id: String,
    verb: String,
    /// The path template as a regex, one group per parameter, in `params` order.
    regex: Regex,
    params: Vec<String>,
    /// The template's text before its first parameter: a path not starting with it is
    /// skipped without running the regex.
    prefix: String,
    /// Each parameter's `pattern`, compiled once.
    patterns: Vec<Option<(String, Regex)>>,
    /// Characters of the template outside parameters: the more, the more specific.
    literal: usize,
    /// Reached through a media upload path.
    upload: bool,
    /// The method's description in the document.
    json: Value,
}

/// One discovery document.
#[derive(Debug)]
struct Api {
    name: String,
    doc: Value,
}

/// The discovery documents of the APIs Conveyor calls.
#[derive(Debug)]
pub struct Documents {
    apis: Vec<Api>,
    methods: Vec<Method>,
    /// The wheel's version and each document's revision, for reports.
    pub versions: String,
}

/// The method a request calls.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    /// The API's short name (`bigquery`).
    pub api: &'a str,
    /// The method's id (`bigquery.jobs.insert`).
    pub id: &'a str,
    /// Path parameters, decoded.
    pub path_params: Vec<(String, String)>,
    /// Reached through a media upload path.
    pub upload: bool,
    pub(crate) method: &'a Value,
    pub(crate) doc: &'a Value,
}

impl Matched<'_> {
    /// The method's parameter `name` (method-level first, then the API's common ones).
    pub(crate) fn parameter(&self, name: &str) -> Option<&Value> {
        self.method
            .get("parameters")
            .and_then(|p| p.get(name))
            .or_else(|| self.doc.get("parameters").and_then(|p| p.get(name)))
    }

    /// Whether `alt=media` downloads what the method describes.
    pub(crate) fn supports_media_download(&self) -> bool {
        self.method
            .get("supportsMediaDownload")
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// The request's schema, when the method takes a body: `{"$ref": name}`, or a schema
    /// written in place (datalineage's `processOpenLineageRunEvent` takes any object).
    pub(crate) fn request(&self) -> Option<&Value> {
        self.method.get("request").filter(|r| r.is_object())
    }

    /// The response schema's name, when the method answers a body.
    pub(crate) fn response(&self) -> Option<&str> {
        self.method
            .pointer("/response/$ref")
            .and_then(Value::as_str)
    }

    /// Every query parameter the method declares (its own and the API's common ones).
    pub(crate) fn query_parameters(&self) -> impl Iterator<Item = (&String, &Value)> {
        let own = self
            .method
            .get("parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, p)| p.get("location").and_then(Value::as_str) == Some("query"));
        let common = self
            .doc
            .get("parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        own.chain(common)
    }
}

/// `{name}` / `{+name}` templates as anchored regexes.
fn compile(template: &str) -> Option<(Regex, Vec<String>, usize)> {
    let mut pattern = String::from("^");
    let mut params = Vec::new();
    let mut literal = 0;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (lit, tail) = rest.split_at(open);
        pattern.push_str(&regex::escape(lit));
        literal += lit.len();
        let close = tail.find('}')?;
        let name = &tail[1..close];
        match name.strip_prefix('+') {
            Some(n) => {
                pattern.push_str("(.+)");
                params.push(n.to_owned());
            }
            None => {
                pattern.push_str("([^/]+)");
                params.push(name.to_owned());
            }
        }
        rest = &tail[close + 1..];
    }
    pattern.push_str(&regex::escape(rest));
    literal += rest.len();
    pattern.push('$');
    Regex::new(&pattern).ok().map(|r| (r, params, literal))
}

fn walk<'a>(resources: &'a Value, out: &mut Vec<&'a Value>) {
    for resource in resources.as_object().into_iter().flatten().map(|(_, r)| r) {
        for method in resource
            .get("methods")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            out.push(method.1);
        }
        if let Some(inner) = resource.get("resources") {
            walk(inner, out);
        }
    }
}

impl Documents {
    /// Reads the documents of [`APIS`] from `dir` (the wheel's
    /// `googleapiclient/discovery_cache/documents`).
    ///
    /// # Errors
    /// When a document is missing or is not JSON.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let mut apis = Vec::new();
        let mut methods = Vec::new();
        let mut versions = Vec::new();
        let wheel = std::fs::read_to_string(dir.join("../../version.py"))
            .ok()
            .and_then(|v| {
                let line = v.lines().find(|l| l.starts_with("__version__"))?;
                line.split('"').nth(1).map(str::to_owned)
            })
            .unwrap_or_else(|| "unknown".to_owned());
        versions.push(format!("google-api-python-client {wheel}"));
        for (index, (name, file)) in APIS.iter().enumerate() {
            let path = dir.join(format!("{file}.json"));
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
            versions.push(format!(
                "{file} (revision {})",
                doc["revision"].as_str().unwrap_or("?")
            ));
            let service = doc["servicePath"].as_str().unwrap_or_default().to_owned();
            let mut found = Vec::new();
            walk(&doc["resources"], &mut found);
            for m in found {
                let (Some(id), Some(verb), Some(path)) = (
                    m["id"].as_str(),
                    m["httpMethod"].as_str(),
                    m["path"].as_str(),
                ) else {
                    continue;
                };
                let mut templates = vec![(format!("/{service}{path}"), false)];
                for protocol in ["simple", "resumable"] {
                    if let Some(p) = m
                        .pointer(&format!("/mediaUpload/protocols/{protocol}/path"))
                        .and_then(Value::as_str)
                    {
                        templates.push((p.to_owned(), true));
                    }
                }
                for (template, upload) in templates {
                    let Some((regex, params, literal)) = compile(&template) else {
                        return Err(format!("{id}: cannot read its path template {template}"));
                    };
                    let patterns = params
                        .iter()
                        .map(|name| {
                            let p = m
                                .pointer(&format!("/parameters/{name}/pattern"))?
                                .as_str()?;
                            Regex::new(p).ok().map(|r| (p.to_owned(), r))
                        })
                        .collect();
                    let prefix = template.split('{').next().unwrap_or_default().to_owned();
                    methods.push(Method {
                        prefix,
                        api: index,
                        id: id.to_owned(),
                        verb: verb.to_owned(),
                        regex,
                        params,
                        patterns,
                        literal,
                        upload,
                        json: m.clone(),
                    });
                }
            }
            apis.push(Api {
                name: (*name).to_owned(),
                doc,
            });
        }
        // The most specific template first: `v1/{+name}:cancel` before `v1/{+name}`.
        methods.sort_by_key(|m| std::cmp::Reverse(m.literal));
        Ok(Self {
            apis,
            methods,
            versions: versions.join(", "),
        })
    }

    /// The documents of this machine, read once: from `CONVEYOR_DISCOVERY_DIR`, else from the
    /// folder `scripts/emulators.sh discovery` installs (pinned) and names.
    ///
    /// # Errors
    /// When they cannot be installed or read (the reason).
    pub fn shared() -> Result<&'static Self, String> {
        static DOCS: OnceLock<Result<Documents, String>> = OnceLock::new();
        DOCS.get_or_init(|| Self::load(&documents_dir()?))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A schema of `api` by name.
    pub(crate) fn schema(&self, api: &str, name: &str) -> Option<&Value> {
        self.apis
            .iter()
            .find(|a| a.name == api)?
            .doc
            .get("schemas")?
            .get(name)
    }

    /// Every method id of the documents.
    pub fn method_ids(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().map(|m| m.id.as_str())
    }

    /// The values of the enum at `pointer` in `schema` of `api` (`/properties/state`).
    pub fn enum_values(&self, api: &str, schema: &str, pointer: &str) -> Vec<String> {
        self.schema(api, schema)
            .and_then(|s| s.pointer(&format!("{pointer}/enum")))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The description at `pointer` in `schema` of `api`.
    pub fn description(&self, api: &str, schema: &str, pointer: &str) -> Option<&str> {
        self.schema(api, schema)?
            .pointer(&format!("{pointer}/description"))?
            .as_str()
    }

    /// The response schema of method `id`.
    pub fn response_schema(&self, id: &str) -> Option<(&str, &str)> {
        let m = self.methods.iter().find(|m| m.id == id)?;
        let name = m.json.pointer("/response/$ref")?.as_str()?;
        Some((self.apis[m.api].name.as_str(), name))
    }

    /// The method of one of `apis` that `verb path` calls.
    ///
    /// # Errors
    /// What is wrong: no method has this path, or none for this verb, or a path parameter does
    /// not have the form its pattern says.
    pub fn find(&self, apis: &[String], verb: &str, path: &str) -> Result<Matched<'_>, String> {
        let mut other_verbs = Vec::new();
        let mut bad_param = None;
        for m in &self.methods {
            let api = &self.apis[m.api];
            if !apis.is_empty() && !apis.contains(&api.name) {
                continue;
            }
            if !path.starts_with(&m.prefix) {
                continue;
            }
            let Some(caps) = m.regex.captures(path) else {
                continue;
            };
            if !m.verb.eq_ignore_ascii_case(verb) {
                other_verbs.push(format!("{} {}", m.verb, m.id));
                continue;
            }
            let mut params = Vec::new();
            let mut ok = true;
            for (i, name) in m.params.iter().enumerate() {
                let raw = caps.get(i + 1).map_or("", |c| c.as_str());
                let value = percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned();
                if let Some(Some((p, r))) = m.patterns.get(i)
                    && !r.is_match(&value)
                {
                    bad_param.get_or_insert(format!(
                        "path parameter {name}={value:?} of {} does not match {p}",
                        m.id
                    ));
                    ok = false;
                    break;
                }
                if value.is_empty() {
                    ok = false;
                    break;
                }
                params.push((name.clone(), value));
            }
            if ok {
                return Ok(Matched {
                    api: &api.name,
                    id: &m.id,
                    path_params: params,
                    upload: m.upload,
                    method: &m.json,
                    doc: &api.doc,
                });
            }
        }
        if let Some(b) = bad_param {
            return Err(b);
        }
        if !other_verbs.is_empty() {
            other_verbs.dedup();
            return Err(format!(
                "no {verb} method on this path (Google has {})",
                other_verbs.join(", ")
            ));
        }
        Err(format!(
            "no method of {} has this path",
            if apis.is_empty() {
                "any API".to_owned()
            } else {
                apis.join(", ")
            }
        ))
    }
}

/// The repository root (this crate is `shared/contract`).
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `CONVEYOR_DISCOVERY_DIR`, else what `scripts/emulators.sh discovery` installs and prints.
fn documents_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CONVEYOR_DISCOVERY_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = repo().join("scripts/emulators.sh");
    let out = std::process::Command::new(&script)
        .arg("discovery")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`scripts/emulators.sh discovery` failed ({}): the discovery documents cannot be installed",
            out.status
        ));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_keep_one_segment_or_reserved_expansions() {
        let (r, params, literal) = compile("/v1/{+topic}:publish").unwrap();
        assert_eq!(params, ["topic"]);
        assert_eq!(literal, "/v1/:publish".len());
        let c = r.captures("/v1/projects/p/topics/t:publish").unwrap();
        assert_eq!(&c[1], "projects/p/topics/t");
        let (r, _, _) = compile("/storage/v1/b/{bucket}/o/{object}").unwrap();
        assert!(r.is_match("/storage/v1/b/landing/o/a%2Fb.csv"));
        assert!(!r.is_match("/storage/v1/b/landing/o/a/b.csv"));
    }
}
