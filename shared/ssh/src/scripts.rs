//! The shell scripts the engine runs on the host (through `sh -s`), and what their output
//! means. The host needs a POSIX `sh`, `setsid` (util-linux) and an `mv` with `-T` (GNU
//! coreutils or BusyBox): any Linux host.
//!
//! A job lives in `WORK_DIR/JOB_ID/` and is published whole, as the local engine does: the
//! submit script builds it in a hidden staging directory (`WORK_DIR/.JOB_ID.XXXXXX`), starts
//! the wrapper there in its own session (so its process group can be killed, and it survives
//! the SSH connection), waits for the wrapper to write its pid, and renames the directory into
//! place; only then does it tell the wrapper to go. A connection cut at any point leaves no
//! directory that a redelivered submit could adopt and wait on forever: either the job is not
//! published (the wrapper sees its staging directory removed, or gives up after a minute), or
//! it is published with its pid (and without a go-ahead records that it never started).

use conveyor_core::shell::quote;

/// Printed by the submit script when it started the job.
pub(crate) const STARTED: &str = "conveyor:started";
/// Printed by the submit script when the job directory already existed.
pub(crate) const ADOPTED: &str = "conveyor:adopted";
/// The submit script's exit status when the host lacks `setsid`: retrying cannot help.
pub(crate) const NO_SETSID: u32 = 72;

/// Run by `setsid sh -c` in the staging directory with the command (`$1`) and the login
/// directory (`$2`).
const WRAPPER: &str = r#"echo $$ >pid.tmp && mv pid.tmp pid || exit 1
i=0
while [ ! -e go ]; do
  [ -e command ] || exit 0
  i=$((i+1))
  if [ "$i" -gt 600 ]; then
    echo 'conveyor: the job never started: its submission did not complete' >stderr.log
    echo 125 >exit_code.tmp; mv exit_code.tmp exit_code; exit 0
  fi
  sleep 0.1 2>/dev/null || sleep 1
done
(cd "$2" && exec sh -c "$1") </dev/null >stdout.log 2>stderr.log
echo $? >exit_code.tmp; mv exit_code.tmp exit_code"#;

/// The script's body as a function, called with standard input from `/dev/null`: `sh -s`
/// reads the script from standard input, and a command reading it would eat the rest.
fn wrap(work_dir: &str, job_id: &str, body: &str) -> String {
    format!(
        "main() {{\ncd || exit 70\nroot={root}\njob={job}\ndir=\"$root/$job\"\n{body}\n}}\nmain </dev/null\n",
        root = quote(work_dir),
        job = quote(job_id),
    )
}

/// Starts `command` detached under `job_id`, or finds it started; prints [`STARTED`] or
/// [`ADOPTED`]. `env` is exported for the command (names already valid).
pub(crate) fn submit(
    work_dir: &str,
    job_id: &str,
    command: &str,
    env: &[(String, String)],
) -> String {
    let exports: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect();
    let body = format!(
        r#"if [ -e "$dir" ]; then echo {ADOPTED}; exit 0; fi
command -v setsid >/dev/null 2>&1 || {{ echo 'conveyor: setsid is missing on the host (util-linux)' >&2; exit {NO_SETSID}; }}
mkdir -p -- "$root" || exit 71
tmp=$(mktemp -d "$root/.$job.XXXXXX") || exit 73
printf '%s' {command} >"$tmp/command" || {{ rm -rf -- "$tmp"; exit 73; }}
home=$(pwd)
{exports}(cd "$tmp" && exec setsid sh -c {wrapper} conveyor-batch {command} "$home" </dev/null >/dev/null 2>&1) &
i=0
while [ ! -s "$tmp/pid" ]; do
  i=$((i+1))
  if [ "$i" -gt 100 ]; then rm -rf -- "$tmp"; echo 'conveyor: the job process did not start' >&2; exit 74; fi
  sleep 0.1 2>/dev/null || sleep 1
done
if mv -T -- "$tmp" "$dir" 2>/dev/null; then
  : >"$dir/go"
  echo {STARTED}
else
  rm -rf -- "$tmp"
  if [ -e "$dir" ]; then echo {ADOPTED}; else echo 'conveyor: cannot publish the job directory' >&2; exit 75; fi
fi"#,
        command = quote(command),
        wrapper = quote(WRAPPER),
    );
    wrap(work_dir, job_id, &body)
}

/// Reports the job's state: see [`Report::parse`].
pub(crate) fn state(work_dir: &str, job_id: &str) -> String {
    let body = r#"[ -d "$dir" ] || { echo missing; exit 0; }
cd "$dir" || exit 76
[ -e cancelled ] && echo cancelled
[ -e exit_code ] && echo "exit_code $(cat exit_code)"
if [ -s pid ]; then kill -0 "$(cat pid)" 2>/dev/null && echo alive; else echo nopid; fi
echo conveyor:stdout
tail -n 40 stdout.log 2>/dev/null | tail -c 4096
echo
echo conveyor:stderr
tail -n 40 stderr.log 2>/dev/null | tail -c 4096
exit 0"#;
    wrap(work_dir, job_id, body)
}

/// Marks the job cancelled and ends its process group: SIGTERM, and SIGKILL for what is
/// left after five seconds (a finished job is left alone).
pub(crate) fn cancel(work_dir: &str, job_id: &str) -> String {
    let body = r#"cd "$dir" 2>/dev/null || exit 0
[ -e exit_code ] && exit 0
: >cancelled
pid=$(cat pid 2>/dev/null)
case "$pid" in ''|*[!0-9]*) exit 0 ;; esac
kill -TERM "-$pid" 2>/dev/null || exit 0
i=0
while kill -0 "-$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
  i=$((i+1)); sleep 0.1 2>/dev/null || sleep 1
done
kill -KILL "-$pid" 2>/dev/null
exit 0"#;
    wrap(work_dir, job_id, body)
}

/// What the state script printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Report {
    /// No job directory.
    pub(crate) missing: bool,
    /// The job was cancelled.
    pub(crate) cancelled: bool,
    /// Its exit status, once it ended.
    pub(crate) exit_code: Option<String>,
    /// Its process is alive.
    pub(crate) alive: bool,
    /// The directory has no pid (left by hand or by an older version).
    pub(crate) no_pid: bool,
    /// The last lines of its standard output.
    pub(crate) stdout: Vec<String>,
    /// The last lines of its standard error.
    pub(crate) stderr: Vec<String>,
}

impl Report {
    pub(crate) fn parse(out: &str) -> Self {
        let mut r = Self::default();
        let mut lines = out.lines();
        for line in lines.by_ref() {
            match line.trim() {
                "missing" => r.missing = true,
                "cancelled" => r.cancelled = true,
                "alive" => r.alive = true,
                "nopid" => r.no_pid = true,
                "conveyor:stderr" => break,
                "conveyor:stdout" => {
                    for l in lines.by_ref() {
                        if l.trim() == "conveyor:stderr" {
                            break;
                        }
                        r.stdout.push(l.to_owned());
                    }
                    break;
                }
                l => {
                    if let Some(code) = l.strip_prefix("exit_code ") {
                        r.exit_code = Some(code.trim().to_owned());
                    }
                }
            }
        }
        r.stderr = lines.map(str::to_owned).collect();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_report_parses_with_the_stderr_tail() {
        let r = Report::parse("exit_code 3\nconveyor:stderr\nboom\nlast line\n");
        assert_eq!(r.exit_code.as_deref(), Some("3"));
        assert!(!r.alive && !r.missing && !r.cancelled);
        assert_eq!(r.stderr, vec!["boom", "last line"]);
        assert!(Report::parse("missing\n").missing);
        let r = Report::parse("exit_code 1\nconveyor:stdout\ncopied 3\n\nconveyor:stderr\nboom\n");
        assert_eq!(r.stdout, vec!["copied 3", ""]);
        assert_eq!(r.stderr, vec!["boom"]);
        let r = Report::parse("alive\nconveyor:stderr\n");
        assert!(r.alive && r.exit_code.is_none());
    }

    #[test]
    fn every_value_in_a_script_is_quoted() {
        let s = submit(
            "/tmp/x y",
            "job-1",
            "echo 'hi'; rm -rf $HOME",
            &[("CONVEYOR_DATE".into(), "$(reboot)".into())],
        );
        assert!(s.contains("root='/tmp/x y'"), "{s}");
        assert!(s.contains(r"export CONVEYOR_DATE='$(reboot)'"), "{s}");
        assert!(
            s.contains(r"printf '%s' 'echo '\''hi'\''; rm -rf $HOME'"),
            "{s}"
        );
        assert!(s.ends_with("main </dev/null\n"));
    }

    /// The scripts are valid `sh` (parsed, not run, by `sh -n`).
    #[test]
    fn the_scripts_parse_as_posix_sh() {
        for script in [
            submit(".conveyor/batches", "j", "true", &[]),
            state(".conveyor/batches", "j"),
            cancel(".conveyor/batches", "j"),
            WRAPPER.to_owned(),
        ] {
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
