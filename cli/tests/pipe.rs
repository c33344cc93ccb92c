//! Output into a pipe whose reader has gone (`conveyor … | head`) ends the command quietly.

use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn a_closed_pipe_ends_the_command_quietly_with_the_sigpipe_status() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/conveyor.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("--config")
        .arg(&config)
        .arg("schedules")
        .env_remove("CONVEYOR_CONFIG")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run conveyor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Log lines written to a file or a pipe hold no colour escape codes (they did: `\x1b[2m…`
/// around every field of every line of a `conveyor run 2> run.log`).
#[test]
fn logs_written_to_a_file_hold_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("conveyor.yaml");
    std::fs::write(
        &config,
        "pipelines:\n  - name: p\n    trigger: { object: { bucket: landing, pattern: \"in/*.csv\" } }\n    load: { table: \"ds.t\", format: CSV }\n",
    )
    .expect("config");
    let input = dir.path().join("state/buckets/landing/in");
    std::fs::create_dir_all(&input).expect("bucket");
    std::fs::write(input.join("a.csv"), "id\n1\n").expect("object");
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("--config")
        .arg(&config)
        .args(["--log", "info", "run", "--state-dir"])
        .arg(dir.path().join("state"))
        .env_remove("NO_COLOR")
        .env_remove("CONVEYOR_CONFIG")
        .env_remove("CONVEYOR_STATE_DIR")
        .output()
        .expect("run conveyor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("INFO"), "the run logged: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a file: {stderr:?}"
    );
}
