//! `lineage:`: where OpenLineage run events go.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `lineage:` — an OpenLineage run event (START, COMPLETE, FAIL) for every load and job, its
/// job namespace the file's `environment`. On Google Cloud they go to Dataplex's Data Lineage
/// API (in `CONVEYOR_LINEAGE_LOCATION`, default `us`); in the embedded mode to
/// `lineage.jsonl` in the state directory, or to `url`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineageConfig {
    /// Embedded mode: an OpenLineage HTTP endpoint each event is POSTed to (e.g. Marquez's
    /// `http://localhost:5000/api/v1/lineage`) instead of the JSON-lines file. Ignored on
    /// Google Cloud, where the events go to Dataplex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl LineageConfig {
    /// What is wrong with it, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(url) = &self.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            out.push(("url", format!("{url:?} is not an http:// or https:// URL")));
        }
        out
    }
}
