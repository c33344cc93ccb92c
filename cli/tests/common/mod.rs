//! What the CLI's test binaries share: the repository's files and running `conveyor`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `relative` inside the repository.
pub(crate) fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Runs the `conveyor` binary with `args` (without a `CONVEYOR_CONFIG` from the caller's
/// environment).
pub(crate) fn conveyor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(args)
        .env_remove("CONVEYOR_CONFIG")
        .output()
        .expect("run conveyor")
}
