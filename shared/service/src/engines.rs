//! The batch engines a function on Google Cloud hands batches to: one definition for the
//! submit and poll functions.

use conveyor_core::engines::Engines;
use conveyor_core::ports::PortError;
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
        let ssh = conveyor_ssh::SshEngine::new(std::sync::Arc::new(gcp.secrets()));
        engines.with("ssh", std::sync::Arc::new(ssh))
    };
    Ok(engines)
}
