//! What a valid pipeline file still needs to run on Google Cloud (`conveyor validate --for
//! gcp`): the embedded mode accepts local batches and local stage sources, which the deployed
//! functions cannot run, and the deployment notifies `load` of one bucket's arrivals only.

use super::{BatchSpec, Config, ConfigIssue, StageSource};
use crate::names::BucketName;

/// Where a pipeline file is deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployTarget {
    /// The landing bucket the deployment notifies `load` of (Terraform's `landing_bucket`);
    /// `None`: not checked.
    pub landing_bucket: Option<BucketName>,
}

fn issue(path: String, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue {
        path,
        line: None,
        column: None,
        message: message.into(),
    }
}

/// Every reason `config` cannot run as deployed to Google Cloud at `target`, inactive
/// pipelines included (activating one must not be what breaks a deployment).
pub fn deployment_issues(config: &Config, target: &DeployTarget) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        let at = |rest: &str| format!("pipelines[{i}] ({}).{rest}", p.name);
        for (j, job) in p.jobs.iter().enumerate() {
            if matches!(job.spec, BatchSpec::Local(_)) {
                issues.push(issue(
                    at(&format!("jobs[{j}] ({}).engine", job.name)),
                    "`engine: local` runs `sh` on the machine that submitted the job: the \
                     embedded mode's engine, which the deployed functions do not have (the \
                     image has no shell, and submit and poll are separate services); use \
                     dataproc_serverless, dataproc_cluster, dataflow_flex, data_fusion, cloud_run_job, http, sql or ssh",
                ));
            }
        }
        if let Some(stage) = &p.stage {
            if let StageSource::Path(path) = &stage.source {
                issues.push(issue(
                    at("stage.source"),
                    format!(
                        "{path:?} is a local path: deployed, it would resolve inside the \
                         container, which holds no data; stage from gs://, s3:// or https://"
                    ),
                ));
            }
            if let Some(landing) = &target.landing_bucket
                && &stage.bucket != landing
            {
                issues.push(issue(
                    at("stage.bucket"),
                    format!(
                        "stages into {}, but the deployment's landing bucket is {landing}: \
                         only its arrivals start a load",
                        stage.bucket
                    ),
                ));
            }
        }
        if let (Some(object), Some(landing)) = (&p.trigger.object, &target.landing_bucket)
            && &object.bucket != landing
        {
            issues.push(issue(
                at("trigger.object.bucket"),
                format!(
                    "waits for objects in {}, but the deployment notifies load of its landing \
                     bucket {landing} only",
                    object.bucket
                ),
            ));
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        crate::config::parse_str(yaml, "t.yaml").expect("valid")
    }

    #[test]
    fn local_batches_and_local_stage_sources_cannot_be_deployed() {
        let config = parse(
            "pipelines:\n  - name: a\n    trigger: { manual: true }\n    stage: { source: ./exports, bucket: landing }\n  - name: b\n    trigger: { manual: true }\n    jobs: [{ name: report, engine: local, command: \"true\" }]\n",
        );
        let issues = deployment_issues(&config, &DeployTarget::default());
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pipelines[0] (a).stage.source",
                "pipelines[1] (b).jobs[0] (report).engine"
            ]
        );
        assert!(issues[1].message.contains("engine: local"), "{}", issues[1]);
    }

    #[test]
    fn buckets_other_than_the_landing_bucket_are_named() {
        let config = parse(
            "pipelines:\n  - name: a\n    trigger: { object: { bucket: other, pattern: \"x/*.csv\" }, manual: true }\n    stage: { source: \"https://example.com/x.csv\", bucket: other }\n    load: { table: ds.t, format: CSV }\n",
        );
        let landing = DeployTarget {
            landing_bucket: Some(BucketName::parse("landing").expect("name")),
        };
        let issues = deployment_issues(&config, &landing);
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues.iter().all(|i| i.message.contains("landing")));
        let ok = DeployTarget {
            landing_bucket: Some(BucketName::parse("other").expect("name")),
        };
        assert!(deployment_issues(&config, &ok).is_empty());
    }
}
