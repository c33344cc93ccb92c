//! Links from a task or a run to where it lives in Google Cloud: a job's console page (a
//! Dataproc batch or job, a Dataflow job, a BigQuery job, a Data Fusion pipeline's runs), a
//! Logs Explorer query for its lines, and a run's trace in Cloud Trace. Built from the
//! pipeline file's job spec (project, region, instance) and the ids the run log records; a
//! local, SSH job has none (its log is kept in the run log instead). The console and `status`
//! render them; nothing here calls Google.

use crate::config::BatchSpec;

/// One link: what it opens, and its URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Link {
    /// What it opens (`Dataproc batch`, `Cloud Logging`).
    pub label: String,
    /// The URL.
    pub url: String,
}

impl Link {
    fn new(label: &str, url: String) -> Self {
        Self {
            label: label.to_owned(),
            url,
        }
    }
}

/// Where the deployment's own BigQuery jobs run (`sql` jobs, loads): the project and the
/// location, which the pipeline file does not name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryPlace {
    /// The project the jobs run in (the deployment's).
    pub project: String,
    /// The jobs' location (`US`, `europe-west1`).
    pub location: String,
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `query` as a Logs Explorer URL in `project`.
pub fn logging(project: &str, query: &str) -> Link {
    Link::new(
        "Cloud Logging",
        format!(
            "https://console.cloud.google.com/logs/query;query={}?project={}",
            encode(query),
            encode(project)
        ),
    )
}

/// A BigQuery job's page (the console's job view) and its audit-log lines.
pub fn bigquery_job(place: &BigQueryPlace, job_id: &str) -> Vec<Link> {
    vec![
        Link::new(
            "BigQuery job",
            format!(
                "https://console.cloud.google.com/bigquery?project={}&j=bq:{}:{}&page=queryresults",
                encode(&place.project),
                encode(&place.location),
                encode(job_id)
            ),
        ),
        logging(
            &place.project,
            &format!(
                "resource.type=\"bigquery_project\"\nprotoPayload.metadata.jobChange.job.jobName=\"projects/{}/jobs/{job_id}\"",
                place.project
            ),
        ),
    ]
}

/// The run `trace_id` (32 hex digits, as a `traceparent` carries it) in Cloud Trace.
pub fn trace(project: &str, trace_id: &str) -> Option<Link> {
    let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| {
        Link::new(
            "Cloud Trace",
            format!(
                "https://console.cloud.google.com/traces/list?project={}&tid={}",
                encode(project),
                trace_id.to_ascii_lowercase()
            ),
        )
    })
}

/// The links of job `job_id` run by `spec`: its console page and its logs. `bigquery` is
/// where the deployment's BigQuery jobs run (for a `sql` job; `None`: no link for it). None
/// for an engine without a Google console (local, SSH).
pub fn job_links(spec: &BatchSpec, job_id: &str, bigquery: Option<&BigQueryPlace>) -> Vec<Link> {
    match spec {
        BatchSpec::DataprocServerless(s) => vec![
            Link::new(
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
            Link::new(
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
            Link::new(
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
        BatchSpec::DataFusion(f) => data_fusion(f),
        BatchSpec::Sql(_) => bigquery.map_or_else(Vec::new, |p| bigquery_job(p, job_id)),
        _ => Vec::new(),
    }
}

/// A Data Fusion pipeline's page in its instance's UI (its runs, with each run's logs) and a
/// Logs Explorer query for the pipeline's lines. The instance's UI is the host of its
/// `instance_url` (`https://INSTANCE-PROJECT-dot-REGION.datafusion.googleusercontent.com/api`).
fn data_fusion(f: &crate::config::DataFusion) -> Vec<Link> {
    let Some(host) = f
        .instance_url
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .filter(|h| !h.is_empty())
    else {
        return Vec::new();
    };
    let mut links = vec![Link::new(
        "Data Fusion pipeline",
        format!(
            "https://{host}/pipelines/ns/{}/view/{}",
            encode(&f.namespace),
            encode(&f.pipeline)
        ),
    )];
    // The host names the instance, project and region in one part, not apart: the query
    // names the pipeline only, and the Logs Explorer opens in the project it is signed in to.
    let q = format!(
        "resource.type=\"datafusion.googleapis.com/Pipeline\"\nresource.labels.pipeline_id=\"{}\"",
        f.pipeline
    );
    links.push(Link::new(
        "Cloud Logging",
        format!(
            "https://console.cloud.google.com/logs/query;query={}",
            encode(&q)
        ),
    ));
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(batch: &str) -> BatchSpec {
        let yaml = format!(
            "pipelines:\n  - name: p\n    trigger: {{ manual: true }}\n    batch: {batch}\n"
        );
        let config = crate::config::parse_str(&yaml, "t.yaml").expect("config");
        config.pipelines[0]
            .job("batch")
            .expect("job")
            .1
            .spec
            .clone()
    }

    #[test]
    fn a_dataproc_batch_links_to_its_page_and_a_logging_query_for_it() {
        let links = job_links(
            &spec(
                "{ engine: dataproc_serverless, project: my-project, region: europe-west1, runtime_version: \"2.1\", pyspark: { main_python_file_uri: gs://code/job.py } }",
            ),
            "cv-batch-p-1-a1",
            None,
        );
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(
            links[0].url,
            "https://console.cloud.google.com/dataproc/batches/europe-west1/cv-batch-p-1-a1?project=my-project"
        );
        assert_eq!(
            links[1].url,
            "https://console.cloud.google.com/logs/query;query=resource.type%3D%22cloud_dataproc_batch%22%0Aresource.labels.batch_id%3D%22cv-batch-p-1-a1%22?project=my-project"
        );
    }

    #[test]
    fn a_sql_job_links_to_its_bigquery_job_and_its_audit_log_lines() {
        let place = BigQueryPlace {
            project: "acme-prod".to_owned(),
            location: "EU".to_owned(),
        };
        let sql = spec("{ engine: sql, query: \"SELECT 1\" }");
        assert!(
            job_links(&sql, "cv-sql-p-1-a1", None).is_empty(),
            "no place, no link"
        );
        let links = job_links(&sql, "cv-sql-p-1-a1", Some(&place));
        assert_eq!(
            links[0].url,
            "https://console.cloud.google.com/bigquery?project=acme-prod&j=bq:EU:cv-sql-p-1-a1&page=queryresults"
        );
        assert_eq!(links[1].label, "Cloud Logging");
        assert!(
            links[1].url.contains(
                "protoPayload.metadata.jobChange.job.jobName%3D%22projects%2Facme-prod%2Fjobs%2Fcv-sql-p-1-a1%22"
            ) && links[1].url.ends_with("?project=acme-prod"),
            "{}",
            links[1].url
        );
    }

    #[test]
    fn a_data_fusion_job_links_to_its_pipeline_in_the_instance_ui_and_its_logs() {
        let links = job_links(
            &spec(
                "{ engine: data_fusion, instance_url: \"https://cdf-acme-prod-dot-euw1.datafusion.googleusercontent.com/api\", namespace: default, pipeline: ingest_users }",
            ),
            "cv-batch-p-1-a1",
            None,
        );
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(
            links[0].url,
            "https://cdf-acme-prod-dot-euw1.datafusion.googleusercontent.com/pipelines/ns/default/view/ingest_users"
        );
        assert!(
            links[1]
                .url
                .contains("resource.labels.pipeline_id%3D%22ingest_users%22"),
            "{}",
            links[1].url
        );
        // A local job has none.
        assert!(job_links(&spec("{ engine: local, command: \"true\" }"), "x", None).is_empty());
    }

    #[test]
    fn a_trace_id_links_to_cloud_trace_and_anything_else_to_nothing() {
        let link = trace("acme-prod", "4BF92F3577B34DA6A3CE929D0E0E4736").expect("a trace");
        assert_eq!(
            link.url,
            "https://console.cloud.google.com/traces/list?project=acme-prod&tid=4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace("acme-prod", "not-a-trace"), None);
        assert_eq!(trace("acme-prod", "00f067aa0ba902b7"), None, "a span id");
    }
}
