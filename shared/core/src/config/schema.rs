//! The pipeline file's JSON Schema, derived from the configuration types with `schemars`.
//!
//! `conveyor schema` prints it; `examples/conveyor.schema.json` is its committed copy (a test
//! keeps the two equal). An editor that reads the `# yaml-language-server: $schema=…` line of a
//! pipeline file (VS Code's YAML extension, JetBrains IDEs, Helix, Neovim with yaml-ls) then
//! completes keys, shows each field's documentation on hover and marks mistakes as they are
//! typed. The schema says what a field may hold; `conveyor validate` checks the rest (time
//! zones, cron dialect, placeholders, `after` cycles).
//!
//! Types whose text is parsed (names, patterns, durations) or that the file writes in more
//! than one form (a stage source as a string or a mapping, a job as `engine:` plus the
//! engine's fields) have their schema written here by hand; everything else is derived.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Map, Value};

use super::{BatchSpec, Config, ForEach, Job, PathPattern, PollPolicy, SecretRef, StageSource};
use crate::names::JobName;

/// The JSON Schema (draft 2020-12) of the pipeline file, as `conveyor schema` prints it.
pub(crate) fn json_schema() -> Value {
    let settings = SchemaSettings::draft2020_12();
    let generator = settings.into_generator();
    let schema = generator.into_root_schema_for::<Config>();
    let mut value = schema.to_value();
    if let Some(root) = value.as_object_mut() {
        root.insert(
            "title".into(),
            Value::String("Conveyor pipeline file".into()),
        );
    }
    value
}

/// `30s`, `5m`, `1h 30m`: a duration as humantime reads it.
pub(crate) fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+\\s*)+$",
        "description": "A duration such as 30s, 5m, 1h 30m or 2days.",
        "examples": ["30s", "5m", "1h"],
    })
}

/// `true`/`false`, also written as a string (`"true"`).
pub(crate) fn flag(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "boolean" },
            { "type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$" },
        ],
    })
}

/// A whole number, also written as a string (`"10"`).
pub(crate) fn count(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "integer", "minimum": 0, "maximum": 4_294_967_295_u64 },
            { "type": "string", "pattern": "^\\s*[0-9]+\\s*$" },
        ],
    })
}

/// A TCP port, also written as a string (`"2222"`).
pub(crate) fn port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "integer", "minimum": 0, "maximum": 65535 },
            { "type": "string", "pattern": "^\\s*[0-9]{1,5}\\s*$" },
        ],
        "default": 22,
    })
}

/// A Cloud Scheduler cron expression: five fields, no `L`, `W`, `#`, `?` (checked in full by
/// `conveyor validate`).
pub(crate) fn cron(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^\\s*[0-9*,/-]+\\s+[0-9*,/-]+\\s+[0-9*,/-]+\\s+[0-9A-Za-z*,/-]+\\s+[0-9A-Za-z*,/-]+\\s*$",
        "examples": ["0 2 * * *", "*/15 * * * *", "0 7 * * MON-FRI"],
    })
}

/// An IANA time zone name, listed for completion.
pub(crate) fn time_zone(_: &mut SchemaGenerator) -> Schema {
    let mut names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
    names.sort_unstable();
    json_schema!({
        "type": "string",
        "enum": names,
        "default": "Etc/UTC",
    })
}

/// The word `autodetect` of `load.schema`.
pub(crate) fn autodetect(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["autodetect", "AUTODETECT"],
        "description": "Detect the columns from the file.",
    })
}

impl JsonSchema for PathPattern {
    fn schema_name() -> Cow<'static, str> {
        "PathPattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "An object name pattern: `{name}` captures one path segment, `*` matches within a segment, `**` across segments (`sales/{date}/*.csv`).",
            "examples": ["sales/{date}/*.csv"],
        })
    }
}

impl JsonSchema for super::PgTable {
    fn schema_name() -> Cow<'static, str> {
        "PgTable".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([A-Za-z_][A-Za-z0-9_]{0,62}\\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$",
            "description": "A PostgreSQL table: `schema.table` or `table` (schema `public`).",
        })
    }
}

impl JsonSchema for super::TopicName {
    fn schema_name() -> Cow<'static, str> {
        "TopicName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(projects/[^/]+/topics/)?[A-Za-z][A-Za-z0-9._~+%-]{2,254}$",
            // Pub/Sub refuses names starting with "goog" (a look-ahead in the pattern would
            // say it too, but not every validator's regex engine has look-around).
            "not": { "pattern": "^(projects/[^/]+/topics/)?[Gg][Oo][Oo][Gg]" },
            "description": "A Pub/Sub topic: `NAME` (this project's) or `projects/PROJECT/topics/NAME`.",
        })
    }
}

impl JsonSchema for SecretRef {
    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^projects/[A-Za-z0-9_-]+/secrets/[A-Za-z0-9_-]+(/versions/[A-Za-z0-9_-]+)?$",
            "description": "A Secret Manager secret: projects/PROJECT/secrets/NAME, optionally /versions/V (default latest).",
        })
    }
}

impl JsonSchema for StageSource {
    fn schema_name() -> Cow<'static, str> {
        "StageSource".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = |key: &str, schema: Schema, description: &str| {
            json_schema!({
                "type": "object",
                "description": description,
                "properties": { key: schema },
                "required": [key],
                "additionalProperties": false,
            })
        };
        let s3 = generator.subschema_for::<super::S3Source>();
        let gcs = generator.subschema_for::<super::GcsSource>();
        let https = generator.subschema_for::<super::HttpsSource>();
        json_schema!({
            "description": "The source: a local path (relative to the pipeline file) or an s3://, gs://, http(s):// URL as one string, or a mapping with exactly one of `path`, `s3`, `gcs`, `https`.",
            "oneOf": [
                { "type": "string", "minLength": 1, "examples": ["data/", "s3://bucket/folder", "gs://bucket/folder", "https://example.com/file.csv"] },
                one("path", json_schema!({ "type": "string", "minLength": 1 }), "A local file or directory."),
                one("s3", s3, "A folder of an S3 bucket."),
                one("gcs", gcs, "A folder of another Cloud Storage bucket."),
                one("https", https, "Files on web servers."),
            ],
        })
    }
}

/// A job is `name`, `for_each` and `poll` beside `engine:` and that engine's fields: one
/// closed object per engine, so an editor completes the fields of the engine written and
/// refuses the others.
impl JsonSchema for Job {
    fn schema_name() -> Cow<'static, str> {
        "Job".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let name = generator.subschema_for::<JobName>();
        let for_each = generator.subschema_for::<ForEach>();
        let poll = generator.subschema_for::<PollPolicy>();
        let needs = generator.subschema_for::<Vec<JobName>>();
        let run_if = generator.subschema_for::<super::RunIf>();
        let when = generator.subschema_for::<super::When>();
        let checks = generator.subschema_for::<Vec<super::Check>>();
        let run_log = generator.subschema_for::<Vec<super::RunLogDestination>>();
        let text = generator.subschema_for::<String>();
        let mut engines = BatchSpec::json_schema(generator).to_value();
        let mut variants = match engines.get_mut("oneOf").map(Value::take) {
            Some(Value::Array(v)) => v,
            _ => Vec::new(),
        };
        for variant in &mut variants {
            let Some(obj) = variant.as_object_mut() else {
                continue;
            };
            let props = obj
                .entry("properties")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(props) = props.as_object_mut() {
                props.insert(
                    "name".into(),
                    with_description(
                        name.clone(),
                        "Unique within the pipeline; part of the job's ids and run-log rows.",
                    ),
                );
                props.insert(
                    "for_each".into(),
                    with_description(
                        for_each.clone(),
                        "Run the job once per row (inline `rows`, or a `table` read when the job starts).",
                    ),
                );
                props.insert(
                    "poll".into(),
                    with_description(
                        poll.clone(),
                        "This job's own poll policy; default: the pipeline's `poll`.",
                    ),
                );
                props.insert(
                    "needs".into(),
                    with_description(
                        needs.clone(),
                        "The jobs this one waits for. Without `needs` anywhere the jobs run in list order; with it they form a graph and a job without `needs` starts with the run.",
                    ),
                );
                props.insert(
                    "run_log".into(),
                    with_description(
                        run_log.clone(),
                        "Where the job's run-log rows go besides the run-log table: [bigquery] the table only, [postgres] or [both] the pipeline's run_log.postgres table too (default: every destination configured).",
                    ),
                );
                props.insert(
                    "db".into(),
                    with_description(
                        text.clone(),
                        "The database the job is about, written to its run-log rows' db_name (a template of the run's values).",
                    ),
                );
                props.insert(
                    "table".into(),
                    with_description(
                        text.clone(),
                        "The table the job is about, written to its run-log rows' table_name (a template of the run's values).",
                    ),
                );
                props.insert(
                    "run_if".into(),
                    with_description(
                        run_if.clone(),
                        "When the job runs, once every job it needs has ended (default all_succeeded); otherwise it is SKIPPED.",
                    ),
                );
                props.insert(
                    "when".into(),
                    with_description(
                        when.clone(),
                        "A condition read when the job would start (`table_exists` or `query`); false: the job is SKIPPED.",
                    ),
                );
                props.insert(
                    "checks".into(),
                    with_description(
                        checks.clone(),
                        "Data-quality checks run after the job SUCCEEDED (`sql`, `row_count`, `not_null`, `unique`, `fresh`; `severity: error|warn`).",
                    ),
                );
            }
            let required = obj
                .entry("required")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(r) = required.as_array_mut() {
                r.insert(0, Value::String("name".into()));
            }
        }
        let mut out = Map::new();
        out.insert(
            "description".into(),
            Value::String("One job: its `name`, `engine:` and the engine's fields, and optionally `for_each`, `poll`, `needs`, `run_if`, `when` and `checks`.".into()),
        );
        out.insert("type".into(), Value::String("object".into()));
        out.insert("oneOf".into(), Value::Array(variants));
        Schema::from(out)
    }
}

fn with_description(schema: Schema, description: &str) -> Value {
    let mut v = schema.to_value();
    if let Some(obj) = v.as_object_mut() {
        if obj.contains_key("$ref") {
            // A `$ref` beside other keywords is fine in 2020-12.
            obj.insert("description".into(), Value::String(description.into()));
        } else {
            obj.entry("description")
                .or_insert_with(|| Value::String(description.into()));
        }
    }
    v
}

/// The committed copy's text: the schema, pretty-printed, with a final newline.
pub fn json_schema_text() -> String {
    // A `serde_json::Value` always serializes.
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use marked_yaml::Node;
    use serde_json::{Value, json};

    use super::*;

    const HEADER: &str = "# yaml-language-server: $schema=./conveyor.schema.json";

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    /// YAML as an editor's language server reads it (YAML 1.2 core schema): unquoted
    /// `true`, `12`, `1.5`, `null` are typed; quoted scalars are strings.
    fn to_json(node: &Node) -> Value {
        match node {
            Node::Scalar(s) => {
                let text = s.as_str();
                if !s.may_coerce() {
                    return Value::String(text.to_owned());
                }
                match text {
                    "null" | "Null" | "NULL" | "~" | "" => Value::Null,
                    "true" | "True" | "TRUE" => Value::Bool(true),
                    "false" | "False" | "FALSE" => Value::Bool(false),
                    _ => {
                        if let Ok(i) = text.parse::<i64>() {
                            json!(i)
                        } else if let Some(f) = text
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite() && text.contains(['.', 'e', 'E']))
                        {
                            json!(f)
                        } else {
                            Value::String(text.to_owned())
                        }
                    }
                }
            }
            Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
            Node::Mapping(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                    .collect(),
            ),
        }
    }

    fn yaml(text: &str) -> Value {
        let options = marked_yaml::LoaderOptions::default().prevent_coercion(true);
        to_json(&marked_yaml::parse_yaml_with_options(0, text, options).unwrap())
    }

    /// The schema, compiled (which checks it against draft 2020-12's metaschema).
    fn compiled() -> Result<(boon::Schemas, boon::SchemaIndex), String> {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource("urn:conveyor:schema", json_schema())
            .map_err(|e| format!("{e:#}"))?;
        let index = compiler
            .compile("urn:conveyor:schema", &mut schemas)
            .map_err(|e| format!("{e:#}"))?;
        Ok((schemas, index))
    }

    /// Every innermost error, as `instance path: message`.
    fn errors(instance: &Value) -> Vec<String> {
        fn leaves(e: &boon::ValidationError, out: &mut Vec<String>) {
            if e.causes.is_empty() {
                out.push(format!("{}: {}", e.instance_location, e.kind));
            }
            for cause in &e.causes {
                leaves(cause, out);
            }
        }
        let (schemas, index) = compiled().unwrap();
        let mut out = Vec::new();
        if let Err(e) = schemas.validate(instance, index) {
            leaves(&e, &mut out);
        }
        out
    }

    #[test]
    fn the_committed_schema_is_what_conveyor_schema_prints() {
        let path = examples().join("conveyor.schema.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != json_schema_text() && std::env::var_os("CONVEYOR_BLESS").is_some() {
            std::fs::write(&path, json_schema_text()).unwrap();
            return;
        }
        assert!(
            committed == json_schema_text(),
            "{} is stale: run `conveyor schema > examples/conveyor.schema.json` \
             (or this test with CONVEYOR_BLESS=1)",
            path.display()
        );
    }

    #[test]
    fn the_schema_is_a_valid_draft_2020_12_schema() {
        let schema = json_schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        if let Err(e) = compiled() {
            panic!("not a valid draft 2020-12 schema: {e}");
        }
        // Field documentation becomes hover text; enums are listed; unknown keys are refused.
        let defs = &schema["$defs"];
        assert!(
            defs["LoadSpec"]["properties"]["format"]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{}",
            defs["LoadSpec"]
        );
        assert_eq!(
            defs["WriteDisposition"]["oneOf"]
                .as_array()
                .map(|v| v.iter().map(|e| e["const"].clone()).collect::<Vec<_>>()),
            Some(vec![
                json!("WRITE_APPEND"),
                json!("WRITE_TRUNCATE"),
                json!("WRITE_EMPTY")
            ]),
            "{}",
            defs["WriteDisposition"]
        );
        assert_eq!(schema["additionalProperties"], json!(false));
    }

    #[test]
    fn every_example_names_the_schema_and_validates_against_it() {
        let mut checked = 0;
        for entry in std::fs::read_dir(examples()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                text.lines().next(),
                Some(HEADER),
                "{} must start with the schema line",
                path.display()
            );
            let found = errors(&yaml(&text));
            assert!(found.is_empty(), "{}: {found:#?}", path.display());
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} examples found");
    }

    const SMALL: &str = r#"
pipelines:
  - name: sales
    trigger:
      object: { bucket: landing, pattern: "sales/{date}/*.csv" }
      schedule: { cron: "0 2 * * *", time_zone: Asia/Tokyo }
    load: { table: "ds.sales_{date}", format: CSV, write_disposition: WRITE_APPEND }
    jobs:
      - name: report
        engine: local
        command: "echo {date}"
        poll: { timeout: 5m, max_attempts: 2 }
"#;

    #[test]
    fn a_small_file_validates() {
        let found = errors(&yaml(SMALL));
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn a_typo_is_refused_by_the_schema() {
        for (from, to, at) in [
            ("format: CSV", "fromat: CSV", "/pipelines/0/load"),
            ("      schedule:", "      shedule:", "/pipelines/0/trigger"),
            ("WRITE_APPEND", "WRITE_APEND", "/pipelines/0/load"),
            ("command:", "comand:", "/pipelines/0/jobs/0"),
            (
                "max_attempts: 2",
                "max_attempts: two",
                "/pipelines/0/jobs/0",
            ),
            ("engine: local", "engine: locall", "/pipelines/0/jobs/0"),
            ("name: report", "name: load", "/pipelines/0/jobs/0/name"),
        ] {
            let text = SMALL.replace(from, to);
            assert_ne!(text, SMALL);
            let found = errors(&yaml(&text));
            assert!(found.iter().any(|e| e.starts_with(at)), "{to}: {found:#?}");
        }
    }
}
