//! A local command as the batch engine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;

use conveyor_core::config::BatchSpec;
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};

/// Runs each batch as `sh -c COMMAND` in the background, in its own process group, with a
/// directory per job id under `root` holding `command`, `pid`, `stdout.log`, `stderr.log` and,
/// once it ends, `exit_code`. The directory is the job's durable state: a restarted runtime
/// finds its jobs again, a second submit of the same id adopts the job, and the real exit
/// status decides success.
///
/// Placeholders in the command are replaced by shell-quoted values (a capture taken from an
/// object name cannot inject shell syntax) and are also passed as `CONVEYOR_<NAME>`
/// environment variables.
#[derive(Debug, Clone)]
pub struct LocalBatchEngine {
    root: PathBuf,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Replaces `{name}` by the shell-quoted value; unknown placeholders stay as they are.
fn render_command(command: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(command.len());
    let mut rest = command;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after
            .find('}')
            .and_then(|end| vars.get(&after[..end]).map(|v| (end, v)))
        {
            Some((end, v)) => {
                out.push_str(&shell_quote(v));
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The wrapper records the command's exit status atomically once it ends.
const WRAPPER: &str = r#"sh -c "$1" >"$2/stdout.log" 2>"$2/stderr.log"; echo $? >"$2/exit_code.tmp"; mv "$2/exit_code.tmp" "$2/exit_code""#;

impl LocalBatchEngine {
    /// An engine keeping its job directories under `root` (created when missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn dir(&self, job_id: &JobId) -> PathBuf {
        // JobId is [a-z0-9_-]+: a plain directory name.
        self.root.join(job_id.as_str())
    }
}

fn alive(pid: &str) -> bool {
    // A zombie has exited; its /proc entry lingers until reaped.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[async_trait]
impl BatchEngine for LocalBatchEngine {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        let BatchSpec::Local(spec) = &req.spec else {
            return Err(PortError::Permanent(format!(
                "the local engine cannot run a {} batch",
                req.spec.engine()
            )));
        };
        let dir = self.dir(&req.job_id);
        match tokio::fs::create_dir(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Ok(Submitted {
                    job_id: req.job_id.clone(),
                    adopted: true,
                });
            }
            Err(e) => return Err(PortError::Transient(format!("{}: {e}", dir.display()))),
        }
        let command = render_command(&spec.command, &req.vars);
        let io = |e: std::io::Error| PortError::Transient(format!("{}: {e}", dir.display()));
        tokio::fs::write(dir.join("command"), &command)
            .await
            .map_err(io)?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("conveyor-batch")
            .arg(&command)
            .arg(&dir);
        for (k, v) in &req.vars {
            let key: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            cmd.env(format!("CONVEYOR_{key}"), v);
        }
        cmd.envs(&spec.env);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| PortError::Transient(format!("cannot start sh: {e}")))?;
        let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
        tokio::fs::write(dir.join("pid"), &pid).await.map_err(io)?;
        // The child is not awaited here: tokio reaps it in the background once it exits, and
        // its exit status is read from the job directory.
        drop(child);
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted: false,
        })
    }

    async fn state(&self, _spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let dir = self.dir(job_id);
        if !dir.is_dir() {
            return Err(PortError::NotFound(format!("local batch {job_id}")));
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if read("cancelled").is_some() {
            return Ok(JobState {
                state: "CANCELLED".to_owned(),
                terminal: true,
                error: Some("cancelled".to_owned()),
            });
        }
        if let Some(code) = read("exit_code") {
            let code = code.trim();
            if code == "0" {
                return Ok(JobState {
                    state: "SUCCEEDED".to_owned(),
                    terminal: true,
                    error: None,
                });
            }
            let stderr = read("stderr.log").unwrap_or_default();
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .chars()
                .take(500)
                .collect::<String>();
            let error = if last.is_empty() {
                format!("exit status {code}")
            } else {
                format!("exit status {code}: {last}")
            };
            return Ok(JobState {
                state: "FAILED".to_owned(),
                terminal: true,
                error: Some(error),
            });
        }
        match read("pid") {
            Some(pid) if alive(pid.trim()) => Ok(JobState {
                state: "RUNNING".to_owned(),
                terminal: false,
                error: None,
            }),
            Some(_) => {
                // The wrapper writes exit_code right after the command ends; give it a moment.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if dir.join("exit_code").exists() {
                    return self.state(_spec, job_id).await;
                }
                Ok(JobState {
                    state: "FAILED".to_owned(),
                    terminal: true,
                    error: Some("the batch process vanished without an exit status".to_owned()),
                })
            }
            None => Ok(JobState {
                state: "PENDING".to_owned(),
                terminal: false,
                error: None,
            }),
        }
    }

    async fn cancel(&self, _spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let dir = self.dir(job_id);
        let io = |e: std::io::Error| PortError::Transient(format!("{}: {e}", dir.display()));
        if dir.join("exit_code").exists() {
            return Ok(());
        }
        tokio::fs::write(dir.join("cancelled"), "")
            .await
            .map_err(io)?;
        if let Ok(pid) = tokio::fs::read_to_string(dir.join("pid")).await {
            let pid = pid.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                // The job runs in its own process group: end the whole group.
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", "--", &format!("-{pid}")])
                    .status()
                    .await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_shell_quoted() {
        let vars = BTreeMap::from([("date".to_owned(), "$(rm -rf ~)'x".to_owned())]);
        assert_eq!(
            render_command("echo {date} {other}", &vars),
            r"echo '$(rm -rf ~)'\''x' {other}"
        );
    }
}
