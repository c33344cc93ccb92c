//! The Google adapters against REST fakes that answer (and refuse) as Google does.
//!
//! One test binary for the crate (`autotests = false`): one link of the dependency graph
//! instead of one per file, and every test in one run. Each module was a test file of its own.
//! `client.rs` stays a binary of its own: it sets the process's shared client's timeouts
//! (1 s), which the other tests must not inherit.

mod bigquery_rest;
mod cloud_identity;
mod iap;
mod lineage;
mod oidc;
mod storage_rest;
mod tls;
