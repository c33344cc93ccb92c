//! A local command as the batch engine.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use conveyor_core::config::BatchSpec;
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, PortError, Submitted};
use conveyor_core::task_log::{TAIL_BYTES, TaskLog, telling_line};

/// Runs each batch as `sh -c COMMAND` in the background, in its own process group, with a
/// directory per job id under `root` holding `command`, `pid`, `stdout.log`, `stderr.log` and,
/// once it ends, `exit_code`. The directory is the job's durable state: a restarted runtime
/// finds its jobs again, a second submit of the same id adopts the job, and the real exit
/// status decides success.
///
/// A job directory appears whole or not at all: it is built in a hidden staging directory
/// (`.JOB_ID.*`), its process started there waiting for a go-ahead, and published with one
/// rename; only then does the command run. A submission cut short leaves no directory a
/// redelivery could adopt, and of two concurrent submissions one publishes and the other
/// adopts. A value holding a NUL byte (which no process can take) is refused up front.
///
/// Placeholders in the command are replaced by shell-quoted values (a capture taken from an
/// object name cannot inject shell syntax) and are also passed as `CONVEYOR_<NAME>`
/// environment variables.
#[derive(Debug, Clone)]
pub struct LocalBatchEngine {
    root: PathBuf,
}

/// The wrapper, run in the job's directory: it waits for the word `go` on its standard input
/// (sent once the directory is published under the job id), runs the command in the runtime's
/// working directory (`$2`), and records the exit status atomically. Without `go` (the
/// submission did not complete) it records that the job never started, so nothing waits for
/// it.
const WRAPPER: &str = r#"IFS= read -r go || go=
if [ "$go" != go ]; then
  echo 'conveyor: the job never started: its submission did not complete' >stderr.log
  echo 125 >exit_code.tmp; mv exit_code.tmp exit_code; exit 0
fi
(cd "$2" && exec sh -c "$1") </dev/null >stdout.log 2>stderr.log
echo $? >exit_code.tmp; mv exit_code.tmp exit_code"#;

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

    /// Writes `command` into `staging` and starts the wrapper there, waiting for `go`; writes
    /// its pid.
    async fn start(
        &self,
        req: &BatchRequest,
        spec: &conveyor_core::config::LocalBatch,
        command: &str,
        staging: &std::path::Path,
    ) -> Result<tokio::process::Child, PortError> {
        let io = |e: std::io::Error| PortError::transient(format!("{}: {e}", staging.display()));
        tokio::fs::write(staging.join("command"), command)
            .await
            .map_err(io)?;
        let cwd = match &spec.working_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| {
                PortError::transient(format!("cannot read the working directory: {e}"))
            })?,
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("conveyor-batch")
            .arg(command)
            .arg(&cwd)
            .current_dir(staging);
        for (k, v) in &req.vars {
            cmd.env(conveyor_core::shell::env_name(k), v);
        }
        cmd.envs(&spec.env);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| PortError::transient(format!("cannot start sh: {e}")))?;
        let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
        if let Err(e) = tokio::fs::write(staging.join("pid"), &pid).await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(io(e));
        }
        Ok(child)
    }
}

/// Tells staging directories of one process apart.
static STAGING_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The end of a log file (at most a few times [`TAIL_BYTES`] read): a job's log may be large.
fn read_tail(path: &Path) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let want = (TAIL_BYTES * 4) as u64;
    if len > want && file.seek(SeekFrom::Start(len - want)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The tails of a job's `stdout.log` and `stderr.log`.
fn task_log(dir: &Path) -> Option<TaskLog> {
    TaskLog::from_outputs(
        &read_tail(&dir.join("stdout.log")),
        &read_tail(&dir.join("stderr.log")),
    )
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
            return Err(PortError::wrong_engine("local", &req.spec));
        };
        let command = conveyor_core::shell::render(&spec.command, &req.vars);
        if let Some(what) = conveyor_core::shell::nul_value(&command, &req.vars, &spec.env) {
            return Err(PortError::permanent(format!(
                "{what} holds a NUL byte, which no command can take"
            )));
        }
        let dir = self.dir(&req.job_id);
        let adopted = Submitted::adopted(&req.job_id);
        // A published job directory is whole (it has its command and pid): adopt it.
        if tokio::fs::symlink_metadata(&dir).await.is_ok() {
            return Ok(adopted);
        }
        // Build the job in a hidden staging directory, start the wrapper there (it waits for
        // `go`), then publish the directory under the job id with one rename: a redelivery sees
        // a whole job or none, never a directory without a pid.
        let staging = self.root.join(format!(
            ".{}.{}.{}",
            req.job_id,
            std::process::id(),
            STAGING_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let io = |e: std::io::Error| PortError::transient(format!("{}: {e}", staging.display()));
        tokio::fs::create_dir(&staging).await.map_err(io)?;
        let started = self.start(req, spec, &command, &staging).await;
        let mut child = match started {
            Ok(child) => child,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                return Err(e);
            }
        };
        match tokio::fs::rename(&staging, &dir).await {
            Ok(()) => {
                if let Some(mut stdin) = child.stdin.take() {
                    use tokio::io::AsyncWriteExt as _;
                    // A failed write leaves the wrapper without `go`: it records that the job
                    // never started, and the poll step retries it as a failed attempt.
                    let _ = stdin.write_all(b"go\n").await;
                }
                // The child is not awaited here: tokio reaps it in the background once it
                // exits, and its exit status is read from the job directory.
                drop(child);
                Ok(Submitted::started(&req.job_id))
            }
            Err(e) => {
                // Without `go` the wrapper ends at once, having run nothing.
                drop(child.stdin.take());
                let _ = child.wait().await;
                let _ = tokio::fs::remove_dir_all(&staging).await;
                if tokio::fs::symlink_metadata(&dir).await.is_ok() {
                    // A concurrent delivery published the job first.
                    Ok(adopted)
                } else {
                    Err(PortError::transient(format!("{}: {e}", dir.display())))
                }
            }
        }
    }

    async fn state(&self, _spec: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
        let dir = self.dir(job_id);
        if !dir.is_dir() {
            return Err(PortError::not_found(format!("local batch {job_id}")));
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if read("cancelled").is_some() {
            return Ok(JobState {
                log: None,
                state: "CANCELLED".to_owned(),
                terminal: true,
                error: Some("cancelled".to_owned()),
            });
        }
        if let Some(code) = read("exit_code") {
            let code = code.trim();
            if code == "0" {
                return Ok(JobState {
                    log: task_log(&dir),
                    state: "SUCCEEDED".to_owned(),
                    terminal: true,
                    error: None,
                });
            }
            let stderr = read_tail(&dir.join("stderr.log"));
            let error = match telling_line(&stderr) {
                Some(line) => format!("exit status {code}: {line}"),
                None => format!("exit status {code}"),
            };
            return Ok(JobState {
                log: task_log(&dir),
                state: "FAILED".to_owned(),
                terminal: true,
                error: Some(error),
            });
        }
        match read("pid") {
            Some(pid) if alive(pid.trim()) => Ok(JobState {
                log: task_log(&dir),
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
                    log: None,
                    state: "FAILED".to_owned(),
                    terminal: true,
                    error: Some("the batch process vanished without an exit status".to_owned()),
                })
            }
            // Jobs are published whole, so only a directory left by an older version or by
            // hand lacks a pid: it will never run, and waiting for it would hang to the timeout.
            None => Ok(JobState {
                log: None,
                state: "FAILED".to_owned(),
                terminal: true,
                error: Some("the job directory has no pid: the job never started".to_owned()),
            }),
        }
    }

    async fn cancel(&self, _spec: &BatchSpec, job_id: &JobId) -> Result<(), PortError> {
        let dir = self.dir(job_id);
        let io = |e: std::io::Error| PortError::transient(format!("{}: {e}", dir.display()));
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
    use std::collections::BTreeMap;

    use super::*;

    use conveyor_core::config::LocalBatch;
    use conveyor_core::names::{PipelineName, RunId};

    fn request(command: &str, vars: &[(&str, &str)]) -> BatchRequest {
        let run = RunId::derive(&PipelineName::parse("p").unwrap(), &["x"]);
        BatchRequest {
            job_id: JobId::derive("batch", &run, 1),
            run_id: run,
            attempt: 1,
            spec: BatchSpec::Local(LocalBatch {
                command: command.to_owned(),
                env: BTreeMap::new(),
                working_dir: None,
            }),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            job: "batch".to_owned(),
            row: BTreeMap::new(),
        }
    }

    async fn finish(engine: &LocalBatchEngine, req: &BatchRequest) -> JobState {
        for _ in 0..200 {
            let s = engine.state(&req.spec, &req.job_id).await.unwrap();
            if s.terminal {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the job did not end");
    }

    #[tokio::test]
    async fn a_nul_byte_is_refused_up_front_and_leaves_no_job_directory() {
        let dir = tempfile::tempdir().unwrap();
        let engine = LocalBatchEngine::new(dir.path()).unwrap();
        let req = request("echo {date}", &[("date", "2026\0-11-20")]);
        let err = engine.submit(&req).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("NUL"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A redelivery is refused the same way; nothing was left to adopt.
        assert!(!engine.submit(&req).await.unwrap_err().is_transient());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn concurrent_submissions_of_one_job_run_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs.txt");
        let engine = LocalBatchEngine::new(dir.path().join("batches")).unwrap();
        let req = request("echo ran >> {out}", &[("out", out.to_str().unwrap())]);
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (engine, req) = (engine.clone(), req.clone());
            tasks.push(tokio::spawn(async move { engine.submit(&req).await }));
        }
        let mut fresh = 0;
        for t in tasks {
            if !t.await.unwrap().unwrap().adopted {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1, "exactly one submission starts the job");
        assert_eq!(finish(&engine, &req).await.state, "SUCCEEDED");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
        let names: Vec<String> = std::fs::read_dir(dir.path().join("batches"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![req.job_id.to_string()],
            "no staging directory is left"
        );
        let job = dir.path().join("batches").join(req.job_id.as_str());
        assert!(job.join("pid").exists() && job.join("command").exists());
    }

    #[tokio::test]
    async fn a_job_directory_without_a_pid_fails_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let engine = LocalBatchEngine::new(dir.path()).unwrap();
        let req = request("true", &[]);
        std::fs::create_dir(dir.path().join(req.job_id.as_str())).unwrap();
        let s = engine.state(&req.spec, &req.job_id).await.unwrap();
        assert!(s.terminal, "{s:?}");
        assert_eq!(s.state, "FAILED");
    }

    #[tokio::test]
    async fn the_command_runs_in_the_runtime_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let engine = LocalBatchEngine::new(dir.path()).unwrap();
        let req = request("pwd", &[]);
        engine.submit(&req).await.unwrap();
        assert_eq!(finish(&engine, &req).await.state, "SUCCEEDED");
        let pwd = std::fs::read_to_string(dir.path().join(req.job_id.as_str()).join("stdout.log"))
            .unwrap();
        assert_eq!(
            std::path::Path::new(pwd.trim()).canonicalize().unwrap(),
            std::env::current_dir().unwrap().canonicalize().unwrap()
        );
    }

    #[tokio::test]
    async fn the_command_runs_in_its_working_directory_when_one_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("pipelines");
        std::fs::create_dir(&work).unwrap();
        let engine = LocalBatchEngine::new(dir.path().join("batches")).unwrap();
        let mut req = request("pwd", &[]);
        if let BatchSpec::Local(spec) = &mut req.spec {
            spec.working_dir = Some(work.clone());
        }
        engine.submit(&req).await.unwrap();
        assert_eq!(finish(&engine, &req).await.state, "SUCCEEDED");
        let job = dir.path().join("batches").join(req.job_id.as_str());
        let pwd = std::fs::read_to_string(job.join("stdout.log")).unwrap();
        assert_eq!(
            std::path::Path::new(pwd.trim()).canonicalize().unwrap(),
            work.canonicalize().unwrap()
        );
    }
}
