//! Links from a task to where its Google job lives: the job's Cloud console page and a Cloud
//! Logging query for its lines. Built from the pipeline file's job spec (project, region) and
//! the job id the run log records; a local, SSH or SQL job has none (its log is kept in the
//! run log instead).

use conveyor_core::config::BatchSpec;

/// One link: what it opens, and its URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Link {
    /// What it opens (`Dataproc batch`, `Cloud Logging`).
    pub label: String,
    /// The URL.
    pub url: String,
}

/// `query` as a Logs Explorer URL in `project`.
fn logging(project: &str, query: &str) -> Link {
    let q: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
    Link {
        label: "Cloud Logging".to_owned(),
        url: format!("https://console.cloud.google.com/logs/query;query={q}?project={project}"),
    }
}

/// The links of job `job_id` run by `spec`: its console page and its logs (none for an
/// engine without a Google console).
pub fn job_links(spec: &BatchSpec, job_id: &str) -> Vec<Link> {
    let link = |label: &str, url: String| Link {
        label: label.to_owned(),
        url,
    };
    match spec {
        BatchSpec::DataprocServerless(s) => vec![
            link(
                "Dataproc batch",
                format!(
                    "https://console.cloud.google.com/dataproc/batches/{}/{job_id}?project={}",
                    s.region, s.project
                ),
            ),
            logging(
                &s.project,
                &format!(
                    "resource.type=\"cloud_dataproc_batch\"\nresource.labels.batch_id=\"{job_id}\""
                ),
            ),
        ],
        BatchSpec::DataprocCluster(s) => vec![
            link(
                "Dataproc job",
                format!(
                    "https://console.cloud.google.com/dataproc/jobs/{job_id}?region={}&project={}",
                    s.region, s.project
                ),
            ),
            logging(
                &s.project,
                &format!(
                    "resource.type=\"cloud_dataproc_job\"\nresource.labels.job_id=\"{job_id}\""
                ),
            ),
        ],
        BatchSpec::DataflowFlex(s) => vec![
            link(
                "Dataflow jobs",
                format!(
                    "https://console.cloud.google.com/dataflow/jobs/{}?project={}",
                    s.region, s.project
                ),
            ),
            logging(
                &s.project,
                &format!("resource.type=\"dataflow_step\"\nresource.labels.job_name=\"{job_id}\""),
            ),
        ],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataproc_batch_links_to_its_page_and_a_logging_query_for_it() {
        let yaml = r#"
pipelines:
  - name: p
    trigger: { manual: true }
    batch:
      engine: dataproc_serverless
      project: my-project
      region: europe-west1
      runtime_version: "2.1"
      pyspark: { main_python_file_uri: gs://code/job.py }
"#;
        let config = conveyor_core::config::parse_str(yaml, "t.yaml").expect("config");
        let (_, job) = config.pipelines[0].job("batch").expect("job");
        let links = job_links(&job.spec, "cv-batch-p-1-a1");
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(
            links[0].url,
            "https://console.cloud.google.com/dataproc/batches/europe-west1/cv-batch-p-1-a1?project=my-project"
        );
        assert!(
            links[1]
                .url
                .contains("resource.labels.batch_id%3D%22cv-batch-p-1-a1%22")
                && links[1].url.ends_with("?project=my-project"),
            "{}",
            links[1].url
        );
    }
}
