//! The embedded runtime as the CLI wires it: local and SSH batches, the PostgreSQL run-log
//! sink (`CONVEYOR_POSTGRES_URL`, or each sink's `url_secret` from the state directory's
//! `secrets/`), on the state directory's adapters.

use std::path::Path;
use std::sync::Arc;

use conveyor_core::config::Config;
use conveyor_core::engines::Engines;
use conveyor_embedded::DirSecrets;
use conveyor_embedded::runtime::Embedded;
use conveyor_postgres::PostgresSinks;
use conveyor_ssh::SshEngine;

/// Opens the embedded runtime on `state_dir` with every engine and sink the CLI links.
///
/// # Errors
/// When the state directory cannot be created.
pub(crate) fn open(config: Arc<Config>, state_dir: &Path) -> anyhow::Result<Embedded> {
    let secrets = Arc::new(DirSecrets::new(state_dir.join("secrets")));
    // `local` and `sql` are the embedded runtime's own.
    let engines = Engines::new().with("ssh", Arc::new(SshEngine::new(secrets.clone())));
    // The one place the CLI reads this variable: a connection string holds a password, so it
    // is not a command-line flag (flags show in `ps`).
    let url = std::env::var("CONVEYOR_POSTGRES_URL").ok();
    let sinks = PostgresSinks::new(secrets, url);
    Ok(Embedded::open_with(config, state_dir, engines)?.with_run_log_sinks(Arc::new(sinks)))
}
