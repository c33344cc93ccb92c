//! `scripts/prereqs.sh`, which `scripts/test.sh` runs first: on a machine lacking a
//! prerequisite it prints one line saying how to get it, and fails when the prerequisite is
//! required. Each case runs the script with a PATH of chosen tools (symlinks to the real ones,
//! or small fakes), never installing (`CONVEYOR_PREREQS_INSTALL=0`).

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use conveyor_e2e::repo;

/// What the script itself runs, plus the tools checked that each case keeps.
const BASE_TOOLS: &[&str] = &[
    "bash", "env", "dirname", "sed", "head", "sort", "id", "mktemp", "rm", "ls", "cat", "grep",
    "cc", "flock", "openssl",
];

fn which(tool: &str) -> PathBuf {
    let out = Command::new("bash")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("bash");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!path.is_empty(), "{tool} is not on this machine's PATH");
    PathBuf::from(path)
}

fn fake(dir: &Path, name: &str, script: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write fake");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A directory to use as PATH: `tools` linked from this machine, a `python3` (the real
/// interpreter, not a version-manager shim) and a cargo/rustc pair answering `rustc_version`.
fn path_with(tools: &[&str], rustc_version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for tool in tools {
        symlink(which(tool), dir.path().join(tool)).expect("symlink");
    }
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    let python = String::from_utf8_lossy(&python.stdout).trim().to_owned();
    symlink(python, dir.path().join("python3")).expect("symlink python3");
    fake(
        dir.path(),
        "rustc",
        &format!("echo 'rustc {rustc_version} (0000000 2026-01-01)'"),
    );
    fake(dir.path(), "cargo", "echo \"cargo-$1 1.0.0\"");
    dir
}

fn run(path: &Path, env: &[(&str, &str)]) -> (Output, String) {
    let mut cmd = Command::new(which("bash"));
    cmd.arg(repo().join("scripts/prereqs.sh"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::temp_dir())
        .env("CONVEYOR_PREREQS_INSTALL", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/prereqs.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn lines_about<'a>(stdout: &'a str, name: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1).map(|w| w.trim_end_matches(':')) == Some(name))
        .collect()
}

fn workspace_rust_version() -> String {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    toml.lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version in the workspace's Cargo.toml")
        .to_owned()
}

#[test]
fn a_missing_curl_is_one_line_saying_how_to_install_it_and_fails() {
    let path = path_with(BASE_TOOLS, "99.0.0");
    let (out, stdout) = run(path.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let missing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("MISSING"))
        .collect();
    assert_eq!(missing.len(), 1, "{stdout}");
    assert!(
        missing[0].starts_with("MISSING  curl: `apt-get install curl`"),
        "{stdout}"
    );
    assert_eq!(lines_about(&stdout, "curl").len(), 1, "{stdout}");
    // The tools that are there are reported as found.
    assert_eq!(lines_about(&stdout, "python3").len(), 1, "{stdout}");
    assert!(
        lines_about(&stdout, "python3")[0].starts_with("ok"),
        "{stdout}"
    );
}

#[test]
fn a_rust_older_than_the_workspace_rust_version_is_refused_with_the_fix() {
    let mut tools = BASE_TOOLS.to_vec();
    tools.push("curl");
    let path = path_with(&tools, "1.0.0");
    let (out, stdout) = run(path.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let rustc = lines_about(&stdout, "rustc");
    assert_eq!(rustc.len(), 1, "{stdout}");
    assert_eq!(
        rustc[0],
        format!(
            "MISSING  rustc: 1.0.0 is older than the workspace's rust-version {}: `rustup update`",
            workspace_rust_version()
        )
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("MISSING")).count(),
        1,
        "{stdout}"
    );
}

#[test]
fn no_pubsub_emulator_is_a_skip_locally_and_missing_under_ci() {
    let mut tools = BASE_TOOLS.to_vec();
    tools.push("curl");
    let path = path_with(&tools, "99.0.0");
    // No gcloud, no java and no PUBSUB_BIN on this PATH.
    let (out, stdout) = run(path.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = lines_about(&stdout, "pubsub-emulator");
    assert_eq!(line.len(), 1, "{stdout}");
    assert!(
        line[0].starts_with("SKIP     pubsub-emulator: "),
        "{stdout}"
    );
    assert!(
        line[0].contains("gcloud components install pubsub-emulator")
            && line[0].contains("PUBSUB_BIN"),
        "{stdout}"
    );
    assert!(!stdout.contains("PUBSUB_BIN=/"), "{stdout}");

    let (out, stdout) = run(path.path(), &[("CI", "true")]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = lines_about(&stdout, "pubsub-emulator");
    assert!(
        line[0].starts_with("MISSING  pubsub-emulator: "),
        "{stdout}"
    );
    assert!(
        lines_about(&stdout, "java")[0].starts_with("MISSING  java: "),
        "{stdout}"
    );
}

#[test]
fn the_pubsub_emulator_named_by_pubsub_bin_is_found_and_passed_on() {
    let mut tools = BASE_TOOLS.to_vec();
    tools.push("curl");
    let path = path_with(&tools, "99.0.0");
    let sdk = tempfile::tempdir().expect("tempdir");
    fake(sdk.path(), "cloud-pubsub-emulator", "exit 0");
    let bin = sdk.path().join("cloud-pubsub-emulator");
    let bin = bin.to_string_lossy().into_owned();
    let (out, stdout) = run(path.path(), &[("PUBSUB_BIN", &bin)]);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        lines_about(&stdout, "pubsub-emulator"),
        [format!("ok       pubsub-emulator  {bin}")]
    );
    assert_eq!(
        stdout.lines().last(),
        Some(format!("PUBSUB_BIN={bin}").as_str())
    );
}
