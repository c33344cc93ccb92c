//! The batch engines a function on Google Cloud hands batches to: one definition for the
//! submit and poll functions.

use std::sync::Arc;

use conveyor_core::engines::Engines;
use conveyor_core::ports::{PortError, Ports};
use conveyor_gcp::Gcp;

/// Every Google Cloud engine and, with the `ssh` feature (the submit and poll functions),
/// `engine: ssh` with its keys from Secret Manager.
///
/// # Errors
/// When the HTTP client cannot be built.
pub fn engines(gcp: &Gcp) -> Result<Engines, PortError> {
    let engines = gcp.engines()?;
    #[cfg(feature = "ssh")]
    let engines = {
        let ssh = conveyor_ssh::SshEngine::new(Arc::new(gcp.secrets()));
        engines.with("ssh", Arc::new(ssh))
    };
    Ok(engines)
}

/// The ports the submit and poll functions share: [`engines()`], BigQuery as the warehouse and
/// the run log, Pub/Sub and Secret Manager. The poll function adds Cloud Storage (load windows) to them.
///
/// # Errors
/// When a client cannot be built.
pub async fn batch_ports(gcp: &Gcp) -> Result<Ports, PortError> {
    let bigquery = Arc::new(gcp.bigquery());
    Ok(Ports {
        batch: Arc::new(engines(gcp)?),
        warehouse: bigquery.clone(),
        run_log: bigquery,
        // The claims in the state bucket (`CONVEYOR_STATE_BUCKET`): `max_active_runs` slots,
        // submit claims.
        store: Arc::new(gcp.store()),
        bus: Arc::new(gcp.bus().await?),
        // `{secret:…}` placeholders, read when a job is submitted (by submit, or by poll
        // starting the next job of a graph).
        secrets: Arc::new(gcp.secrets()),
        ..Ports::unwired()
    })
}
