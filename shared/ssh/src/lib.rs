//! Conveyor's SSH batch engine (`engine: ssh`): a command on a remote host, such as seed 000's
//! on-prem cluster where Cloud Composer SSHed in to run `run_replicator.sh`.
//!
//! The client is pure Rust ([`russh`]), so a function's distroless image needs no `ssh`
//! binary. The host's key is pinned by the pipeline's `known_hosts` and checked on every
//! connection; there is no trust on first use. The private key comes from the
//! [`SecretStore`] (Secret Manager, or the embedded secrets directory), is held only for the
//! connection, and is never logged.
//!
//! # Layout
//! - `lib.rs`: [`SshEngine`], the [`BatchEngine`] port.
//! - `session.rs`: one connection: host-key check, authentication, a script through `sh -s`.
//! - `scripts.rs`: the scripts run on the host (submit, state, cancel) and how a job
//!   directory is published whole.

mod scripts;
mod session;

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{info, warn};

use conveyor_core::config::{BatchSpec, SshBatch};
use conveyor_core::names::JobId;
use conveyor_core::ports::{
    BatchEngine, BatchRequest, JobState, PortError, SecretStore, Submitted,
};

use scripts::Report;
use session::Session;

/// Runs `engine: ssh` batches: submit starts the command detached on the host under the job
/// id (in its own directory with `command`, `pid`, `stdout.log`, `stderr.log` and, once it
/// ends, `exit_code`, as the local engine keeps them) and returns; state reads the exit
/// status; cancel kills the job's process group. A resubmission finds the job directory and
/// adopts it.
#[derive(Clone)]
pub struct SshEngine {
    secrets: Arc<dyn SecretStore>,
}

impl SshEngine {
    /// An engine reading private keys from `secrets`.
    pub fn new(secrets: Arc<dyn SecretStore>) -> Self {
        Self { secrets }
    }

    async fn connect(&self, spec: &SshBatch) -> Result<Session, PortError> {
        let secret = self.secrets.access(&spec.key_secret).await?;
        let key = session::private_key(secret.expose())?;
        Session::connect(spec, key).await
    }

    async fn run(&self, spec: &SshBatch, script: &str) -> Result<session::Output, PortError> {
        let session = self.connect(spec).await?;
        let out = session.run(script).await;
        session.close().await;
        out
    }
}

fn ssh_spec(spec: &BatchSpec) -> Result<&SshBatch, PortError> {
    match spec {
        BatchSpec::Ssh(s) => Ok(s),
        other => Err(PortError::wrong_engine("ssh", other)),
    }
}

/// The last non-empty line of a script's standard error, for messages.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(500)
        .collect()
}

fn script_failed(what: &str, out: &session::Output) -> PortError {
    let message = format!(
        "{what} on the host failed (exit status {}): {}",
        out.status
            .map_or_else(|| "none".to_owned(), |s| s.to_string()),
        last_line(&out.stderr)
    );
    if out.status == Some(scripts::NO_SETSID) {
        PortError::permanent(message)
    } else {
        PortError::transient(message)
    }
}

#[async_trait]
impl BatchEngine for SshEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let spec = ssh_spec(&req.spec)?;
        let command = conveyor_core::shell::render(&spec.command, &req.vars);
        if let Some(what) = conveyor_core::shell::nul_value(&command, &req.vars, &spec.env) {
            return Err(PortError::permanent(format!(
                "{what} holds a NUL byte, which no command can take"
            )));
        }
        let mut env: Vec<(String, String)> = req
            .vars
            .iter()
            .map(|(k, v)| (conveyor_core::shell::env_name(k), v.clone()))
            .collect();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let script = scripts::submit(&spec.work_dir, req.job_id.as_str(), &command, &env);
        let out = self.run(spec, &script).await?;
        let said = |word: &str| out.stdout.lines().any(|l| l.trim() == word);
        let adopted = if said(scripts::STARTED) {
            false
        } else if said(scripts::ADOPTED) {
            true
        } else {
            return Err(script_failed("starting the job", &out));
        };
        info!(job_id = %req.job_id, host = %spec.host, adopted, "ssh job submitted");
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted,
        })
    }

    async fn state(&self, spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let spec = ssh_spec(spec)?;
        let out = self
            .run(spec, &scripts::state(&spec.work_dir, job_id.as_str()))
            .await?;
        if out.status != Some(0) {
            return Err(script_failed("reading the job's state", &out));
        }
        let report = Report::parse(&out.stdout);
        if report.missing {
            return Err(PortError::not_found(format!(
                "ssh job {job_id}: no directory on {}",
                spec.host
            )));
        }
        Ok(job_state(&report))
    }

    async fn cancel(&self, spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let spec = ssh_spec(spec)?;
        let out = self
            .run(spec, &scripts::cancel(&spec.work_dir, job_id.as_str()))
            .await?;
        if out.status != Some(0) {
            return Err(script_failed("cancelling the job", &out));
        }
        warn!(job_id = %job_id, host = %spec.host, "ssh job cancelled");
        Ok(())
    }
}

fn job_state(r: &Report) -> JobState {
    let log =
        conveyor_core::task_log::TaskLog::from_outputs(&r.stdout.join("\n"), &r.stderr.join("\n"));
    let ended = |state: &str, error: Option<String>| JobState {
        log: log.clone(),
        state: state.to_owned(),
        terminal: true,
        error,
    };
    if r.cancelled {
        return ended("CANCELLED", Some("cancelled".to_owned()));
    }
    if let Some(code) = &r.exit_code {
        if code == "0" {
            return ended("SUCCEEDED", None);
        }
        let error = match conveyor_core::task_log::telling_line(&r.stderr.join("\n")) {
            Some(line) => format!("exit status {code}: {line}"),
            None => format!("exit status {code}"),
        };
        return ended("FAILED", Some(error));
    }
    if r.no_pid {
        return ended(
            "FAILED",
            Some("the job directory has no pid: the job never started".to_owned()),
        );
    }
    if r.alive {
        return JobState {
            log,
            state: "RUNNING".to_owned(),
            terminal: false,
            error: None,
        };
    }
    ended(
        "FAILED",
        Some("the job's process vanished without an exit status".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_job_directory() {
        let s = |out: &str| job_state(&Report::parse(out));
        assert_eq!(s("alive\nconveyor:stderr\n").state, "RUNNING");
        assert!(!s("alive\nconveyor:stderr\n").terminal);
        assert_eq!(s("exit_code 0\nconveyor:stderr\n").state, "SUCCEEDED");
        let failed = s("exit_code 2\nconveyor:stderr\nno such table\n");
        assert_eq!(failed.state, "FAILED");
        assert_eq!(
            failed.error.as_deref(),
            Some("exit status 2: no such table")
        );
        assert_eq!(s("cancelled\nconveyor:stderr\n").state, "CANCELLED");
        assert!(s("nopid\nconveyor:stderr\n").terminal);
        assert!(
            s("conveyor:stderr\n").terminal,
            "a vanished process ends the job"
        );
    }
}
