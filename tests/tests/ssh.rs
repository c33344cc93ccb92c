//! The SSH engine against a real OpenSSH server (started by `scripts/sshd.sh` on a free
//! loopback port, with its own host key and an authorized client key): the engine alone, and
//! the embedded chain driving it (submit, poll, retries, timeout, run log).
//!
//! Without sshd (and without root to install it) these tests skip loudly; under `CI=true`
//! they fail.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::config::{BatchSpec, SecretRef, SshBatch};
use conveyor_core::engines::Engines;
use conveyor_core::event::StepName;
use conveyor_core::names::{JobId, PipelineName, RunId};
use conveyor_core::ports::{BatchEngine, BatchRequest, JobState, RunLogRow};
use conveyor_e2e::{Chain, repo};
use conveyor_embedded::DirSecrets;
use conveyor_ssh::SshEngine;

const KEY_SECRET: &str = "projects/test/secrets/onprem-key";

/// sshd started by `scripts/sshd.sh`, stopped on drop, with the client key in a secrets
/// directory.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    host_key: String,
    other_key: String,
}

impl Sshd {
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new(repo().join("scripts/sshd.sh"))
            .arg("start")
            .arg(dir.path().join("sshd"))
            .status()
            .expect("run scripts/sshd.sh");
        match status.code() {
            Some(0) => {}
            Some(3) if std::env::var("CI").as_deref() != Ok("true") => {
                conveyor_e2e::skipped("sshd is not available here; the SSH tests did not run");
                return None;
            }
            other => panic!("scripts/sshd.sh start failed: {other:?}"),
        }
        let env: HashMap<String, String> = std::fs::read_to_string(dir.path().join("sshd/env"))
            .expect("sshd env")
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let secret = dir.path().join("secrets").join(KEY_SECRET);
        std::fs::create_dir_all(secret.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&env["SSH_KEY"], &secret).expect("key secret");
        Some(Self {
            port: env["SSH_PORT"].parse().expect("port"),
            user: env["SSH_USER"].clone(),
            host_key: env["SSH_HOST_KEY"].clone(),
            other_key: env["SSH_OTHER_KEY"].clone(),
            dir,
        })
    }

    fn secrets(&self) -> Arc<DirSecrets> {
        Arc::new(DirSecrets::new(self.dir.path().join("secrets")))
    }

    fn engine(&self) -> SshEngine {
        SshEngine::new(self.secrets())
    }

    /// Where the jobs live on the "remote" host (this machine).
    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    fn spec(&self, command: &str, known_hosts: &str) -> SshBatch {
        SshBatch {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            key_secret: SecretRef::parse(KEY_SECRET).expect("secret"),
            known_hosts: known_hosts.to_owned(),
            command: command.to_owned(),
            env: BTreeMap::new(),
            work_dir: self.work_dir().display().to_string(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The `known_hosts` line pinning this server's key, in `[host]:port` form.
    fn pinned(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }

    /// The pipeline file's `batch:` for `command`.
    fn batch_yaml(&self, command: &str) -> String {
        format!(
            r#"{{ engine: ssh, host: 127.0.0.1, port: {}, user: {}, key_secret: {KEY_SECRET},
         known_hosts: "{}", work_dir: "{}", command: "{}" }}"#,
            self.port,
            self.user,
            self.pinned(),
            self.work_dir().display(),
            command
        )
    }

    async fn chain(&self, yaml: &str) -> Chain {
        let engines = Engines::new().with("ssh", Arc::new(self.engine()));
        Chain::start_with(yaml, Some(engines)).await
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/sshd.sh"))
            .arg("stop")
            .arg(self.dir.path().join("sshd"))
            .status();
    }
}

fn request(spec: SshBatch, key: &str, vars: &[(&str, &str)]) -> BatchRequest {
    let run = RunId::derive(&PipelineName::parse("onprem").expect("name"), &[key]);
    BatchRequest {
        job_id: JobId::derive("batch", &run, 1),
        run_id: run,
        attempt: 1,
        spec: BatchSpec::Ssh(spec),
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        job: "batch".to_owned(),
        row: BTreeMap::new(),
    }
}

async fn wait_terminal(engine: &SshEngine, req: &BatchRequest) -> JobState {
    for _ in 0..300 {
        let s = engine.state(&req.spec, &req.job_id).await.expect("state");
        if s.terminal {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the job did not end within 30 s");
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid.trim()).exists()
        && !std::fs::read_to_string(Path::new("/proc").join(pid.trim()).join("stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
}

fn statuses(rows: &[RunLogRow], pipeline: &str, step: &str) -> Vec<(u32, String)> {
    rows.iter()
        .filter(|r| r.pipeline.as_deref() == Some(pipeline) && r.step == step)
        .map(|r| (r.attempt, r.status.clone()))
        .collect()
}

#[tokio::test]
async fn a_command_runs_detached_on_the_host_with_its_values_quoted() {
    let Some(sshd) = Sshd::start() else { return };
    let engine = sshd.engine();
    let out = sshd.dir.path().join("out.txt");
    let spec = sshd.spec(
        &format!(
            "printf '%s|%s' {{table}} \"$CONVEYOR_TABLE\" > {}",
            out.display()
        ),
        &sshd.pinned(),
    );
    let hostile = "t'; touch /tmp/conveyor-pwned; echo '";
    let req = request(spec, "run-1", &[("table", hostile)]);
    let submitted = engine.submit(&req).await.expect("submit");
    assert!(!submitted.adopted);
    let state = wait_terminal(&engine, &req).await;
    assert_eq!(state.state, "SUCCEEDED", "{state:?}");
    assert_eq!(
        std::fs::read_to_string(&out).expect("output"),
        format!("{hostile}|{hostile}")
    );
    let job = sshd.work_dir().join(req.job_id.as_str());
    for file in ["command", "pid", "stdout.log", "stderr.log", "exit_code"] {
        assert!(job.join(file).exists(), "{file} is missing from {job:?}");
    }
    let names: Vec<String> = std::fs::read_dir(sshd.work_dir())
        .expect("work dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![req.job_id.to_string()],
        "no staging directory is left"
    );
}

#[tokio::test]
async fn a_redelivered_submit_adopts_the_job_instead_of_starting_it_again() {
    let Some(sshd) = Sshd::start() else { return };
    let engine = sshd.engine();
    let marks = sshd.dir.path().join("marks.txt");
    let spec = sshd.spec(
        &format!("echo started >> {}; sleep 1", marks.display()),
        &sshd.pinned(),
    );
    let req = request(spec, "run-2", &[]);
    // Four deliveries at once, then one more after the job started.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (engine, req) = (engine.clone(), req.clone());
        tasks.push(tokio::spawn(async move { engine.submit(&req).await }));
    }
    let mut fresh = 0;
    for t in tasks {
        if !t.await.expect("task").expect("submit").adopted {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "one delivery starts the job, the others adopt it");
    assert!(engine.submit(&req).await.expect("resubmit").adopted);
    assert_eq!(wait_terminal(&engine, &req).await.state, "SUCCEEDED");
    assert_eq!(
        std::fs::read_to_string(&marks).expect("marks"),
        "started\n",
        "the command ran once"
    );
}

#[tokio::test]
async fn a_host_showing_another_key_is_refused_before_anything_runs() {
    let Some(sshd) = Sshd::start() else { return };
    let engine = sshd.engine();
    let mark = sshd.dir.path().join("ran");
    let spec = sshd.spec(
        &format!("touch {}", mark.display()),
        &format!("[127.0.0.1]:{} {}", sshd.port, sshd.other_key),
    );
    let req = request(spec, "run-3", &[]);
    let err = engine.submit(&req).await.expect_err("refused");
    assert!(
        !err.is_transient(),
        "a wrong host key is not retried: {err}"
    );
    assert!(err.to_string().contains("does not pin"), "{err}");
    assert!(!mark.exists());
    assert!(!sshd.work_dir().exists(), "nothing was created on the host");
    // A key pinned for another host or port does not count either.
    let spec = sshd.spec("true", &format!("otherhost {}", sshd.host_key));
    let err = engine
        .submit(&request(spec, "run-4", &[]))
        .await
        .expect_err("no key for this host");
    assert!(err.to_string().contains("pins no key"), "{err}");
}

#[tokio::test]
async fn the_chain_retries_a_failing_command_and_records_its_exit_status() {
    let Some(sshd) = Sshd::start() else { return };
    let marks = sshd.dir.path().join("attempts.txt");
    let yaml = format!(
        r#"
pipelines:
  - name: replicator
    batch: {}
    poll: {{ interval: 100ms, max_attempts: 2, backoff: {{ initial: 100ms }} }}
"#,
        sshd.batch_yaml(&format!(
            "echo attempt {{attempt}} >> {}; echo cannot reach teradata >&2; exit 3",
            marks.display()
        ))
    );
    let chain = sshd.chain(&yaml).await;
    let (status, body) = chain
        .post(
            StepName::Submit,
            r#"{"pipeline":"replicator"}"#,
            "application/json",
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    chain.settle(Duration::from_secs(60)).await;
    let log = chain.run_log().await;
    let poll = statuses(&log, "replicator", "poll");
    assert_eq!(poll.last(), Some(&(2, "FAILED".to_owned())), "{poll:?}");
    let failed = log
        .iter()
        .rev()
        .find(|r| r.status == "FAILED")
        .expect("failed row");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("exit status 3: cannot reach teradata")),
        "{failed:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&marks).expect("marks"),
        "attempt 1\nattempt 2\n",
        "two attempts, each under its own job id"
    );
    chain.stop().await;
}

#[tokio::test]
async fn a_timed_out_job_is_killed_on_the_host() {
    let Some(sshd) = Sshd::start() else { return };
    let child_pid = sshd.dir.path().join("child.pid");
    let yaml = format!(
        r#"
pipelines:
  - name: slow
    batch: {}
    poll: {{ interval: 100ms, timeout: 2s, max_attempts: 3 }}
"#,
        sshd.batch_yaml(&format!(
            "echo $$ > {}; exec sleep 300",
            child_pid.display()
        ))
    );
    let chain = sshd.chain(&yaml).await;
    let (status, body) = chain
        .post(
            StepName::Submit,
            r#"{"pipeline":"slow"}"#,
            "application/json",
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    chain.settle(Duration::from_secs(60)).await;
    let log = chain.run_log().await;
    let poll = statuses(&log, "slow", "poll");
    assert_eq!(poll.last(), Some(&(1, "TIMED_OUT".to_owned())), "{poll:?}");
    let pid = std::fs::read_to_string(&child_pid).expect("the command started");
    let mut gone = false;
    for _ in 0..50 {
        if !alive(&pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the remote command (pid {}) still runs", pid.trim());
    let jobs: Vec<_> = std::fs::read_dir(sshd.work_dir())
        .expect("work dir")
        .collect();
    assert_eq!(jobs.len(), 1, "a timeout is final, not retried");
    chain.stop().await;
}
