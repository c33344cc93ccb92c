//! The embedded runtime as the CLI wires it: local, SSH and HTTP batches, the PostgreSQL run-log
//! sink (`CONVEYOR_POSTGRES_URL`, or each sink's `url_secret` from the state directory's
//! `secrets/`), on the state directory's adapters.

use std::path::Path;
use std::sync::Arc;

use conveyor_core::config::Config;
use conveyor_core::engines::Engines;
use conveyor_embedded::DirSecrets;
use conveyor_embedded::runtime::Embedded;
use conveyor_embedded::state_dir::StateLock;
use conveyor_gcp::engines::{FixedIdToken, HttpEngine};
use conveyor_postgres::PostgresSinks;
use conveyor_ssh::SshEngine;

/// The state directory's lock, held until the process ends.
static HELD: std::sync::Mutex<Vec<(std::path::PathBuf, StateLock)>> =
    std::sync::Mutex::new(Vec::new());

/// Opens the embedded runtime on `state_dir` with every engine and sink the CLI links, after
/// checking that the directory can be written and taking its lock for the rest of the
/// process (a second `conveyor dev` or `run` on it is refused, naming this one's pid).
///
/// # Errors
/// When the state directory cannot be written or created, or another process holds it.
pub(crate) fn open(config: Arc<Config>, state_dir: &Path) -> anyhow::Result<Embedded> {
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !held.iter().any(|(dir, _)| dir == state_dir) {
        let lock = StateLock::acquire(state_dir)?;
        held.push((state_dir.to_path_buf(), lock));
    }
    drop(held);
    let secrets = Arc::new(DirSecrets::new(state_dir.join("secrets")));
    // `local` and `sql` are the embedded runtime's own.
    // `http` with `CONVEYOR_HTTP_ID_TOKEN` as its ID token when set (no metadata server here).
    let engines = Engines::new()
        .with("ssh", Arc::new(SshEngine::new(secrets.clone())))
        .with(
            "http",
            Arc::new(HttpEngine::new(Arc::new(FixedIdToken::from_env()))),
        );
    // The one place the CLI reads this variable: a connection string holds a password, so it
    // is not a command-line flag (flags show in `ps`).
    let url = std::env::var("CONVEYOR_POSTGRES_URL").ok();
    let sinks = PostgresSinks::new(secrets, url);
    Ok(Embedded::open_with(config, state_dir, engines)?.with_run_log_sinks(Arc::new(sinks)))
}
