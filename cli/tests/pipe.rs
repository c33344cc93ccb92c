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
