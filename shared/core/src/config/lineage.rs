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

#[cfg(test)]
mod tests {
    const PIPELINES: &str = "pipelines:\n  - name: p\n    trigger: { manual: true }\n    batch: { engine: local, command: \"true\" }\n";

    fn issues(top: &str) -> Vec<String> {
        match crate::config::parse_str(&format!("{top}\n{PIPELINES}"), "t.yaml") {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn lineage_is_read_with_or_without_a_url() {
        let c = crate::config::parse_str(&format!("lineage: {{}}\n{PIPELINES}"), "t.yaml")
            .expect("config");
        assert_eq!(c.lineage, Some(super::LineageConfig::default()));
        let c = crate::config::parse_str(
            &format!("lineage: {{ url: \"http://localhost:5000/api/v1/lineage\" }}\n{PIPELINES}"),
            "t.yaml",
        )
        .expect("config");
        assert_eq!(
            c.lineage.and_then(|l| l.url).as_deref(),
            Some("http://localhost:5000/api/v1/lineage")
        );
        let c = crate::config::parse_str(PIPELINES, "t.yaml").expect("config");
        assert_eq!(c.lineage, None);
    }

    #[test]
    fn validate_refuses_a_url_that_is_not_http_and_an_unknown_key() {
        let found = issues("lineage: { url: \"ftp://host/x\" }").join("\n");
        assert!(
            found.contains("lineage.url") && found.contains("not an http:// or https:// URL"),
            "{found}"
        );
        let found = issues("lineage: { namespace: x }").join("\n");
        assert!(found.contains("lineage"), "{found}");
        assert!(!issues("lineage: {}").iter().any(|l| l.contains("lineage")));
    }
}
