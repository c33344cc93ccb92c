//! `engine: ssh`: a command on a remote host, detached under the job id.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Engine, Kind, PROCESS_NON_TERMINAL, PROCESS_TERMINAL, Problems, RUNNING, fixed, lenient, map,
    required, say,
};

/// A command run over SSH on a remote host (seed 000's on-prem cluster), detached under the
/// job id: the host keeps a directory per job (`work_dir/JOB_ID`) with `command`, `pid`,
/// `stdout.log`, `stderr.log` and, once it ends, `exit_code`, as the local engine does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshBatch {
    /// The host name or address.
    pub host: String,
    /// The SSH port. Default 22.
    #[serde(default = "default_ssh_port", deserialize_with = "lenient::port")]
    #[schemars(schema_with = "crate::config::schema::port")]
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The Secret Manager secret holding the private key (OpenSSH or PEM format, without a
    /// passphrase): `projects/P/secrets/NAME[/versions/V]`; embedded: the file
    /// `.conveyor/secrets/projects/P/secrets/NAME`.
    pub key_secret: crate::config::SecretRef,
    /// The host's public key, as `known_hosts` lines (`[host]:port ssh-ed25519 AAAA...`, or
    /// just `ssh-ed25519 AAAA...`). Required: the key is pinned, never trusted on first use.
    pub known_hosts: String,
    /// The command, run by `sh -c` in the user's home directory on the host. Placeholders are
    /// shell-quoted, and also exported as `CONVEYOR_<NAME>`.
    pub command: String,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the job directories live on the host, relative to the user's home directory
    /// unless absolute. Default `.conveyor/batches`.
    #[serde(default = "default_ssh_work_dir")]
    pub work_dir: String,
    /// How long connecting (TCP, key exchange, authentication) may take. Default 30s.
    #[serde(default = "default_ssh_connect_timeout", with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub connect_timeout: Duration,
}

fn default_ssh_port() -> u16 {
    22
}

fn default_ssh_work_dir() -> String {
    ".conveyor/batches".to_owned()
}

fn default_ssh_connect_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The key types a `known_hosts` line may pin.
const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

impl SshBatch {
    /// The host keys `known_hosts` pins for this host and port: `(key type, base64 key)`.
    /// A line applies when it names no host, or names `host` (port 22) or `[host]:port`.
    ///
    /// # Errors
    /// A line that is not `[HOSTS] KEYTYPE BASE64 [COMMENT]`, or a marker (`@revoked`,
    /// `@cert-authority`) or hashed host name, which are not supported.
    pub fn host_keys(&self) -> Result<Vec<(String, String)>, String> {
        let wanted = if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        };
        let mut keys = Vec::new();
        for (i, line) in self.known_hosts.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = |why: &str| format!("line {} of known_hosts: {why}", i + 1);
            if fields[0].starts_with('@') {
                return Err(bad("markers (@revoked, @cert-authority) are not supported"));
            }
            let (hosts, ty, key) = if HOST_KEY_TYPES.contains(&fields[0]) {
                (None, fields[0], fields.get(1))
            } else {
                (
                    Some(fields[0]),
                    fields.get(1).copied().unwrap_or(""),
                    fields.get(2),
                )
            };
            if !HOST_KEY_TYPES.contains(&ty) {
                return Err(bad(&format!(
                    "expected `[HOSTS] KEYTYPE BASE64` with KEYTYPE one of {}",
                    HOST_KEY_TYPES.join(", ")
                )));
            }
            let Some(key) = key else {
                return Err(bad("the key is missing after its type"));
            };
            if let Some(hosts) = hosts {
                if hosts.contains("|1|") {
                    return Err(bad(
                        "hashed host names are not supported: write the host name (ssh-keyscan without -H)",
                    ));
                }
                if !hosts.split(',').any(|h| h == wanted) {
                    continue;
                }
            }
            keys.push((ty.to_owned(), (*key).to_owned()));
        }
        Ok(keys)
    }
}

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "ssh",
    success: "SUCCEEDED",
    non_terminal: PROCESS_NON_TERMINAL,
    terminal: PROCESS_TERMINAL,
    running: RUNNING,
};

impl Engine for SshBatch {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        fixed(o, "host", &self.host);
        fixed(o, "user", &self.user);
        fixed(o, "work_dir", &self.work_dir);
        required(o, "command", &self.command);
        if self.port == 0 {
            say(o, "port", "must be between 1 and 65535");
        }
        for (field, value) in [("host", &self.host), ("user", &self.user)] {
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                say(o, field, "must not contain spaces or control characters");
            }
        }
        if self.work_dir.chars().any(char::is_control) {
            say(o, "work_dir", "must not contain control characters");
        }
        for key in self.env.keys() {
            if !crate::shell::is_env_name(key) {
                say(
                    o,
                    &format!("env.{key}"),
                    "is not a shell variable name (letters, digits, `_`)",
                );
            }
        }
        match self.host_keys() {
            Err(e) => say(o, "known_hosts", e),
            Ok(keys) if keys.is_empty() => say(
                o,
                "known_hosts",
                format!(
                    "pins no key for {}: add the host's key (`ssh-keyscan -p {} {}`, checked against the host's own fingerprint); it is never trusted on first use",
                    self.host, self.port, self.host
                ),
            ),
            Ok(_) => {}
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        f("command", &mut self.command);
        map(f, "env", &mut self.env);
    }
}
