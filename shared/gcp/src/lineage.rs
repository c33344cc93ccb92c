//! Dataplex's Data Lineage API: where OpenLineage run events go on Google Cloud
//! (`projects.locations:processOpenLineageRunEvent`, datalineage.v1).

use async_trait::async_trait;

use conveyor_core::ports::{Lineage, PortError, RunEvent, TableNaming};

use crate::GcpAuth;

/// Dataplex's Data Lineage API, recording each event in `projects/P/locations/L`.
#[derive(Clone)]
pub struct DataLineage {
    http: crate::rest::Client,
    url: String,
    project: String,
    auth: GcpAuth,
}

impl DataLineage {
    /// The API at `base` (`https://datalineage.googleapis.com`), recording in `project`'s
    /// `location` (a region, or `us` / `eu`).
    pub fn new(base: &str, project: &str, location: &str, auth: GcpAuth) -> Self {
        Self {
            http: crate::http_client(),
            url: format!(
                "{}/v1/projects/{project}/locations/{location}:processOpenLineageRunEvent",
                base.trim_end_matches('/')
            ),
            project: project.to_owned(),
            auth,
        }
    }
}

#[async_trait]
impl Lineage for DataLineage {
    async fn emit(&self, event: &RunEvent) -> Result<(), PortError> {
        let what = format!(
            "record the OpenLineage {} of run {}",
            event.event_type(),
            event.run_id()
        );
        // The API is idempotent on a request id: the same one for the same run's same event,
        // so a redelivered event is recorded once.
        let url = format!(
            "{}?requestId={}",
            self.url,
            conveyor_core::steps::run_uuid(&[event.run_id(), event.event_type()])
        );
        self.auth
            .send(&what, || self.http.post(url.as_str()).json(event.json()))
            .await
            .map(|_| ())
    }

    fn tables(&self) -> TableNaming {
        TableNaming {
            namespace: "bigquery".to_owned(),
            project: Some(self.project.clone()),
        }
    }
}
