//! A connection from a connection string: plain, or TLS through rustls (the system's roots,
//! plus the server's CA when the secret names one), with timeouts.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::ports::PortError;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tracing::warn;

/// How long connecting may take when the connection string does not say
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection secret (or `CONVEYOR_POSTGRES_URL`) holds: a connection string, or
/// `{"url": ..., "ca": PEM}`.
pub(crate) struct Target {
    config: Config,
    ca: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithCa {
    url: String,
    #[serde(default)]
    ca: Option<String>,
}

impl Target {
    /// Parses a secret's value. Errors never repeat the value (it holds a password).
    pub(crate) fn parse(value: &str) -> Result<Self, PortError> {
        let value = value.trim();
        let (url, ca) = if value.starts_with('{') {
            let w: WithCa = serde_json::from_str(value).map_err(|_| {
                PortError::permanent(
                    "the PostgreSQL secret is JSON but not {\"url\": ..., \"ca\": ...}".to_owned(),
                )
            })?;
            (w.url, w.ca)
        } else {
            (value.to_owned(), None)
        };
        // libpq's verify-ca / verify-full: this client always verifies the certificate chain
        // and the host name, so both mean `require` here.
        let url = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut config = Config::from_str(&url).map_err(|e| {
            PortError::permanent(format!(
                "the PostgreSQL connection string is not valid ({}); expected postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require",
                redact(&e.to_string())
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("conveyor");
        }
        Ok(Self { config, ca })
    }

    /// Connects and spawns the connection's driver.
    pub(crate) async fn connect(&self) -> Result<Client, PortError> {
        let fail = |e: tokio_postgres::Error| {
            PortError::transient(format!(
                "cannot connect to PostgreSQL: {}",
                redact(&e.to_string())
            ))
        };
        let client = match self.config.get_ssl_mode() {
            SslMode::Disable => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(fail)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        warn!(error = %redact(&e.to_string()), "PostgreSQL connection ended");
                    }
                });
                client
            }
            _ => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
                let (client, connection) = self.config.connect(tls).await.map_err(fail)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        warn!(error = %redact(&e.to_string()), "PostgreSQL connection ended");
                    }
                });
                client
            }
        };
        Ok(client)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, PortError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(ca) = &self.ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    PortError::permanent(format!("the PostgreSQL secret's `ca` is not PEM: {e}"))
                })?;
            if certs.is_empty() {
                return Err(PortError::permanent(
                    "the PostgreSQL secret's `ca` holds no certificate".to_owned(),
                ));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    PortError::permanent(format!("the PostgreSQL secret's `ca`: {e}"))
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PortError::permanent(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// Removes what looks like a password from a driver message (`password=...`).
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match word.split_once("password=") {
            Some((before, _)) => {
                out.push_str(before);
                out.push_str("password=<redacted>");
            }
            None => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_string_or_json_with_a_ca_parses_without_echoing_it() {
        let t = Target::parse("postgres://u:secret@127.0.0.1:5432/db?sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(t.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let t = Target::parse(r#"{"url": "postgres://u:p@h/db?sslmode=verify-full", "ca": "x"}"#)
            .unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.ca.as_deref(), Some("x"));
        let Err(e) = Target::parse("postgres://u:hunter2@h:notaport/db") else {
            panic!("a bad port parses");
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let Err(e) = Target::parse(r#"{"uri": "postgres://u:hunter2@h/db"}"#) else {
            panic!("a wrong key parses");
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(
            redact("bad password=hunter2 x"),
            "bad password=<redacted> x"
        );
    }
}
