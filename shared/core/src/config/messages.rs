//! Message triggers: a Pub/Sub topic whose messages become rows of the pipeline's table (seed
//! 003's mobile-app issue events).
//!
//! ```yaml
//!   - name: app_issues
//!     trigger: { topic: mobile-app-issues }
//!     load:
//!       table: ops.machine_issues
//!       format: NDJSON
//!       schema:
//!         - { name: machine, type: STRING, mode: REQUIRED }
//!         - { name: reported_at, type: TIMESTAMP, mode: REQUIRED }
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Pub/Sub topic: `NAME` (in the deployment's project) or `projects/P/topics/NAME`. Names
/// follow Pub/Sub's rules: 3–255 characters, starting with a letter, of letters, digits and
/// `- _ . ~ + %`, not starting with `goog`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicName {
    project: Option<String>,
    name: String,
}

impl TopicName {
    /// Parses a topic name.
    ///
    /// # Errors
    /// When it breaks Pub/Sub's naming rules.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (project, name) = match s.strip_prefix("projects/") {
            Some(rest) => match rest.split_once("/topics/") {
                Some((p, n)) if !p.is_empty() && !p.contains('/') => (Some(p.to_owned()), n),
                _ => return Err(format!("{s:?} is not `projects/PROJECT/topics/NAME`")),
            },
            None => (None, s),
        };
        let valid = (3..=255).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
            && !name.to_ascii_lowercase().starts_with("goog");
        if !valid {
            return Err(format!(
                "{name:?} is not a Pub/Sub topic name: 3-255 characters, starting with a letter, of letters, digits and - _ . ~ + %, not starting with `goog`"
            ));
        }
        Ok(Self {
            project,
            name: name.to_owned(),
        })
    }

    /// The topic's own name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `projects/P/topics/NAME`, with `project` when the file named none.
    pub fn full(&self, project: &str) -> String {
        format!(
            "projects/{}/topics/{}",
            self.project.as_deref().unwrap_or(project),
            self.name
        )
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "projects/{p}/topics/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl Serialize for TopicName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a pipeline with a `trigger.topic` must be, each problem with its field path relative
/// to the pipeline: its messages are appended as rows of a declared schema, and nothing else
/// starts from them.
pub(super) fn problems(p: &super::Pipeline) -> Vec<(String, String)> {
    use super::{CreateDisposition, SchemaSpec, WriteDisposition};
    let mut out = Vec::new();
    if p.trigger.topic.is_none() {
        return out;
    }
    let mut say = |field: &str, message: &str| out.push((field.to_owned(), message.to_owned()));
    if p.trigger.object.is_some() {
        say(
            "trigger.object",
            "a pipeline takes objects or messages, not both: give the messages a pipeline of their own",
        );
    }
    if p.trigger.schedule.is_some() {
        say(
            "trigger.schedule",
            "a message pipeline runs on each message; a schedule has nothing to start",
        );
    }
    if p.stage.is_some() {
        say(
            "stage",
            "a message pipeline stages nothing: its messages are the data",
        );
    }
    if p.batch.is_some() || !p.jobs.is_empty() {
        say(
            if p.batch.is_some() { "batch" } else { "jobs" },
            "a message pipeline starts no job per message: schedule the job in a pipeline of its own",
        );
    }
    if !p.trigger.after.is_empty() {
        say(
            "trigger.after",
            "a message pipeline runs on each message, not after other pipelines",
        );
    }
    let Some(load) = &p.load else {
        say(
            "load",
            "a message pipeline needs `load` with the table and the schema of its rows",
        );
        return out;
    };
    if load.format != crate::format::Format::Ndjson {
        say("load.format", "messages are JSON: the format is NDJSON");
    }
    if matches!(load.schema, SchemaSpec::Autodetect) {
        say(
            "load.schema",
            "declare the columns: each message is checked against them, and a message that does not fit is quarantined",
        );
    }
    if load.write_disposition != WriteDisposition::WriteAppend {
        say(
            "load.write_disposition",
            "messages are appended: WRITE_APPEND",
        );
    }
    if load.create_disposition != CreateDisposition::CreateIfNeeded {
        say(
            "load.create_disposition",
            "the table (and its `_rejected` quarantine) is created when missing: CREATE_IF_NEEDED",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_pubsub_rules() {
        let t = TopicName::parse("mobile-app-issues").unwrap();
        assert_eq!(t.full("p"), "projects/p/topics/mobile-app-issues");
        let t = TopicName::parse("projects/other/topics/sensors.v1").unwrap();
        assert_eq!(t.full("p"), "projects/other/topics/sensors.v1");
        assert_eq!(t.to_string(), "projects/other/topics/sensors.v1");
        for bad in [
            "ab",
            "1abc",
            "google-x",
            "a b c",
            "projects/p/subscriptions/x",
            "projects//topics/abc",
        ] {
            assert!(TopicName::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod pipeline_tests {
    use crate::config::parse_str;

    #[test]
    fn a_message_pipeline_is_checked_with_every_mistake_named() {
        let ok = r#"
pipelines:
  - name: app_issues
    trigger: { topic: mobile-app-issues }
    load:
      table: ops.machine_issues
      format: NDJSON
      schema: [{ name: machine, type: STRING, mode: REQUIRED }]
"#;
        let c = parse_str(ok, "ok.yaml").unwrap();
        assert_eq!(
            c.pipelines[0].trigger.topic.as_ref().unwrap().name(),
            "mobile-app-issues"
        );
        let bad = r#"
pipelines:
  - name: app_issues
    trigger: { topic: mobile-app-issues, object: { bucket: landing, pattern: "*.json" } }
    load: { table: ops.issues, format: CSV, write_disposition: WRITE_TRUNCATE }
    batch: { engine: local, command: "true" }
"#;
        let err = parse_str(bad, "bad.yaml").unwrap_err().to_string();
        for expected in [
            "pipelines[0].trigger.object: a pipeline takes objects or messages",
            "a message pipeline starts no job per message",
            "pipelines[0].load.format: messages are JSON",
            "pipelines[0].load.schema: declare the columns",
            "pipelines[0].load.write_disposition: messages are appended",
        ] {
            assert!(err.contains(expected), "{expected} missing from:\n{err}");
        }
        let bad_topic = "pipelines:\n  - name: x\n    trigger: { topic: goog-x }\n    load: { table: a.b, format: NDJSON, schema: [{name: a, type: STRING}] }\n";
        let err = parse_str(bad_topic, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("pipelines[0].trigger.topic"), "{err}");
    }
}
