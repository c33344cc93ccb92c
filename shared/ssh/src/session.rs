//! One SSH connection: the host key checked against the pinned keys, public-key
//! authentication, and a script run through `sh -s`.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::keys::{PublicKeyOrCertificate, decode_secret_key, parse_public_key_base64};

use conveyor_core::config::SshBatch;
use conveyor_core::ports::PortError;

/// The most output a script may print that is kept (the state script prints 20 lines).
const MAX_OUTPUT: usize = 64 * 1024;

/// How long one script may run once connected.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// What a script printed and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) status: Option<u32>,
}

/// Accepts the server only if it shows one of the pinned keys; remembers what it showed.
struct Pinned {
    keys: Vec<PublicKey>,
    refused: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let shown = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                if self.keys.iter().any(|k| k.key_data() == key.key_data()) {
                    return Ok(true);
                }
                format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
            }
            PublicKeyOrCertificate::Certificate(_) => "a certificate".to_owned(),
        };
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(shown);
        }
        Ok(false)
    }
}

/// The pinned keys of `spec`, decoded.
pub(crate) fn pinned_keys(spec: &SshBatch) -> Result<Vec<PublicKey>, PortError> {
    let keys = spec.host_keys().map_err(PortError::permanent)?;
    if keys.is_empty() {
        return Err(PortError::permanent(format!(
            "known_hosts pins no key for {}:{}",
            spec.host, spec.port
        )));
    }
    keys.iter()
        .map(|(ty, b64)| {
            parse_public_key_base64(b64)
                .map_err(|e| PortError::permanent(format!("known_hosts: a {ty} key: {e}")))
        })
        .collect()
}

/// Whether a host-key algorithm negotiated for the connection can show `key`.
fn same_kind(algorithm: &Algorithm, key: &PublicKey) -> bool {
    match (algorithm, key.algorithm()) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        (a, b) => *a == b,
    }
}

/// The private key in a secret (OpenSSH or PEM, no passphrase).
pub(crate) fn private_key(secret: &[u8]) -> Result<PrivateKey, PortError> {
    let text = std::str::from_utf8(secret).map_err(|_| {
        PortError::permanent(
            "the SSH key secret is not text (expected an OpenSSH or PEM private key)".to_owned(),
        )
    })?;
    // The error names no key material.
    decode_secret_key(text, None).map_err(|e| {
        PortError::permanent(format!(
            "the SSH key secret holds no usable private key (OpenSSH or PEM, without a passphrase): {e}"
        ))
    })
}

/// A connected, authenticated session to the host of `spec`.
pub(crate) struct Session {
    handle: Handle<Pinned>,
}

impl Session {
    /// Connects to the host of `spec` within its `connect_timeout`, checks its key against
    /// `known_hosts` and logs in with `key`.
    ///
    /// # Errors
    /// Transient when the host cannot be reached; permanent when its key is not the pinned
    /// one or the login is refused.
    pub(crate) async fn connect(spec: &SshBatch, key: PrivateKey) -> Result<Self, PortError> {
        let keys = pinned_keys(spec)?;
        let preferred: Vec<Algorithm> = russh::Preferred::DEFAULT
            .key
            .iter()
            .filter(|a| keys.iter().any(|k| same_kind(a, k)))
            .cloned()
            .collect();
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(30)),
            preferred: russh::Preferred {
                key: Cow::Owned(preferred),
                ..russh::Preferred::DEFAULT
            },
            ..client::Config::default()
        });
        let refused = Arc::new(Mutex::new(None));
        let handler = Pinned {
            keys,
            refused: refused.clone(),
        };
        let target = format!("{}:{}", spec.host, spec.port);
        let connect = async {
            let stream = tokio::net::TcpStream::connect((spec.host.as_str(), spec.port))
                .await
                .map_err(|e| PortError::transient(format!("ssh {target}: {e}")))?;
            let _ = stream.set_nodelay(true);
            let mut handle = client::connect_stream(config, stream, handler)
                .await
                .map_err(|e| {
                    let shown = refused.lock().ok().and_then(|r| r.clone());
                    match shown {
                        Some(shown) => PortError::permanent(format!(
                            "ssh {target}: the host showed {shown}, which known_hosts does not pin: refused (a changed host key is checked by hand, never trusted)"
                        )),
                        None => PortError::transient(format!("ssh {target}: {e}")),
                    }
                })?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| PortError::transient(format!("ssh {target}: {e}")))?
                .flatten();
            let auth = handle
                .authenticate_publickey(
                    spec.user.clone(),
                    PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await
                .map_err(|e| PortError::transient(format!("ssh {target}: {e}")))?;
            if !auth.success() {
                return Err(PortError::permanent(format!(
                    "ssh {target}: the host refused the key for user {:?}",
                    spec.user
                )));
            }
            Ok(Self { handle })
        };
        tokio::time::timeout(spec.connect_timeout, connect)
            .await
            .map_err(|_| {
                PortError::transient(format!(
                    "ssh {target}: no connection within {:?}",
                    spec.connect_timeout
                ))
            })?
    }

    /// Runs `script` with `sh -s` and collects its output.
    ///
    /// # Errors
    /// Transient when the channel fails or the script takes too long.
    pub(crate) async fn run(&self, script: &str) -> Result<Output, PortError> {
        let io = |e: russh::Error| PortError::transient(format!("ssh: {e}"));
        let run = async {
            let mut channel = self.handle.channel_open_session().await.map_err(io)?;
            channel.exec(true, "sh -s").await.map_err(io)?;
            channel.data(script.as_bytes()).await.map_err(io)?;
            channel.eof().await.map_err(io)?;
            let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } if stdout.len() < MAX_OUTPUT => {
                        stdout.extend_from_slice(&data);
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } if stderr.len() < MAX_OUTPUT => {
                        stderr.extend_from_slice(&data);
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    _ => {}
                }
            }
            Ok(Output {
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                status,
            })
        };
        tokio::time::timeout(SCRIPT_TIMEOUT, run)
            .await
            .map_err(|_| {
                PortError::transient(format!("ssh: no answer within {SCRIPT_TIMEOUT:?}"))
            })?
    }

    /// Closes the connection politely.
    pub(crate) async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
