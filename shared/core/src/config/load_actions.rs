//! `load.order`, `load.start_after` and `load.on_success`: a table's loads applied one at a
//! time in name order behind a start gate (GEBI's `ORDERME` and `_HISTORYDONE`), and what
//! becomes of a source once its load job is DONE (bqtail's `onSuccess`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the loads of one table are sequenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadOrder {
    /// One load at a time per table, in object name order (GEBI's `ORDERME`): an arrival
    /// joins the table's queue, and the first name of the queue loads once the load before
    /// it is DONE. With `batch.marker` the queue holds the folders' markers. A load that
    /// fails stops the queue (later incrementals must not be applied over a hole) until the
    /// failed source is replaced by a new generation or removed.
    ByName,
}

/// `load.start_after: { marker: _HISTORYDONE }`: nothing of an ordered table loads until
/// the marker exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartAfter {
    /// The marker's file name (`_HISTORYDONE`), looked for in the folder of each queued
    /// source and every folder above it (GEBI writes it at the table's prefix). When it
    /// arrives, the queue's backlog loads in name order.
    pub marker: String,
}

impl StartAfter {
    /// The names the marker may have for a source named `name`: in its folder and every
    /// folder above it, nearest first.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut folder = name.rsplit_once('/').map(|(f, _)| f);
        while let Some(f) = folder {
            out.push(format!("{f}/{}", self.marker));
            folder = f.rsplit_once('/').map(|(up, _)| up);
        }
        out.push(self.marker.clone());
        out
    }
}

/// `load.on_success`: what becomes of each source object once its load job is DONE. Done
/// exactly once per loaded generation: a second DONE of the same run finds the source gone
/// (or already copied) and does nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnSuccess {
    /// Delete the source (the loaded generation only: a newer one written meanwhile stays).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_source: bool,
    /// Move the source to this name in its bucket: a template of `{path}` (the source's
    /// whole name), `{name}` (its file name), `{folder}` (its folder) and the trigger
    /// pattern's captures, e.g. `done/{path}`. The copy is made first, then the loaded
    /// generation is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to: Option<String>,
}

impl OnSuccess {
    /// The placeholders `move_to` takes besides the captures.
    pub const NAMES: [&'static str; 3] = ["path", "name", "folder"];

    /// The values of [`Self::NAMES`] for a source named `name`, with `captures`.
    pub fn vars(name: &str, captures: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut vars = captures.clone();
        let (folder, file) = name.rsplit_once('/').unwrap_or(("", name));
        vars.insert("path".to_owned(), name.to_owned());
        vars.insert("name".to_owned(), file.to_owned());
        vars.insert("folder".to_owned(), folder.to_owned());
        vars
    }
}

/// One `on_failure` action of a pipeline: `{ publish: TOPIC }` or
/// `{ webhook: { url_secret: projects/P/secrets/NAME } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OnFailure {
    /// Publish the failing event (the run-log event, JSON) to this Pub/Sub topic (a topic id
    /// of the deployment's project; embedded: a line in `.conveyor/topics/TOPIC.ndjson`).
    Publish(super::TopicName),
    /// POST a JSON message with the error (`{"text": …}`, as Slack and Google Chat incoming
    /// webhooks take, and the fields) to a URL read from a secret, never logged.
    Webhook(Webhook),
}

/// `on_failure: [{ webhook: { url_secret } }]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The Secret Manager secret holding the URL (`projects/P/secrets/NAME[/versions/V]`):
    /// a webhook URL is a credential.
    pub url_secret: super::SecretRef,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_marker_is_looked_for_in_each_folder_above_a_source() {
        let s = StartAfter {
            marker: "_HISTORYDONE".into(),
        };
        assert_eq!(
            s.candidates("ds/t/2026/a.csv"),
            [
                "ds/t/2026/_HISTORYDONE",
                "ds/t/_HISTORYDONE",
                "ds/_HISTORYDONE",
                "_HISTORYDONE"
            ]
        );
        assert_eq!(s.candidates("a.csv"), ["_HISTORYDONE"]);
    }

    #[test]
    fn move_to_names_the_source_its_file_and_its_folder() {
        let v = OnSuccess::vars("in/2026/a.csv", &BTreeMap::new());
        assert_eq!(v["path"], "in/2026/a.csv");
        assert_eq!(v["name"], "a.csv");
        assert_eq!(v["folder"], "in/2026");
    }
}
