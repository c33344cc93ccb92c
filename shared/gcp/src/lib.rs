//! Conveyor's Google Cloud adapters (the runner of a function binary is `conveyor-service`).
//!
//! A function links this crate and the core only: each function's `ports` wires the few
//! adapters its step uses (see [`Gcp`]), so the linker drops the rest.
//!
//! # Layout
//! - `auth.rs`: [`GcpAuth`], the one credentials source every client shares (Application
//!   Default Credentials; anonymous for emulators).
//! - `pubsub.rs`: [`PubSubBus`], the event bus on a Pub/Sub topic (its REST API).
//! - `gcs.rs`: [`GcsStore`], Cloud Storage through its JSON API.
//! - `bigquery/`: [`BigQuery`], warehouse, run log and the `sql` engine ([`SqlEngine`]),
//!   through BigQuery's REST API.
//! - `secrets.rs`: [`SecretManager`], where `secret:` references are read.
//! - `dead_letter.rs`: [`PubSubRest`], Pub/Sub's REST API for reading and replaying the
//!   dead-letter subscription (`conveyor replay`).
//! - [`engines`]: Dataproc Serverless, Dataproc clusters, Dataflow flex templates and Data
//!   Fusion through their REST APIs.
//! - `settings.rs`: [`GcpSettings`], the `CONVEYOR_*` variables of a Cloud Run service, and
//!   [`Gcp`], which builds each adapter from them on one credentials source.
//! - [`rest`]: the one HTTP client of every adapter (hyper-util's pool over rustls).
//! - [`oidc`]: the optional check of a function's callers (Google-signed OIDC tokens).
//! - [`cloud_identity`]: membership of Google groups (the console's `group:` operators).
//! - [`iap`]: who calls the console behind Identity-Aware Proxy (IAP's signed header).
//! - `jwks.rs`: the cached public keys both verify signatures with.

mod auth;
mod bigquery;
pub mod cloud_identity;
mod dead_letter;
pub mod engines;
mod gcs;
pub mod iap;
mod jwks;
mod lineage;
mod notify;
pub mod oidc;
mod pubsub;
pub mod rest;
mod secrets;
mod settings;

pub use auth::{AdcCredentials, GcpAuth, MetadataToken};
pub use bigquery::{BigQuery, SqlEngine, load_configuration};
pub use dead_letter::{PubSubRest, PulledMessage};
pub use gcs::GcsStore;
pub use lineage::DataLineage;
pub use notify::GcpNotifier;
pub use pubsub::PubSubBus;
pub use rest::Roots;
pub use secrets::SecretManager;
pub use settings::{Gcp, GcpSettings};

/// Installs the aws-lc-rs rustls provider once: the HTTP client, the Google crates and the
/// BigQuery client share it instead of each bringing their own. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The process's shared HTTP client (connection pool), with the crypto provider installed.
/// Every adapter of a function uses it (one pool, one TLS set-up); see [`rest`].
pub fn http_client() -> rest::Client {
    rest::shared()
}

#[cfg(test)]
mod tests {
    /// Google's APIs present chains to Google Trust Services' roots: they must be among the
    /// compiled-in ones, or every call of a function would fail verification.
    #[test]
    fn the_compiled_in_roots_include_google_trust_services() {
        let gts: Vec<_> = webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .filter(|a| {
                a.subject
                    .windows(11)
                    .any(|w| w == b"GTS Root R1" || w == b"GTS Root R4")
            })
            .collect();
        assert_eq!(gts.len(), 2, "GTS Root R1 and R4");
    }
}
