//! Google's contract, not our fakes: the requests Conveyor's Google adapters send, checked
//! against Google's own discovery documents (the machine-readable API descriptions Google's
//! client libraries are generated from) and, for Data Fusion, against CDAP's REST routes.
//!
//! Test support only. Every REST fake in the tests and every recording proxy in front of an
//! emulator records what it receives ([`record`]); [`check`] then checks each request: the
//! method exists for its verb and path, every path and query parameter is known and
//! well-formed, every body field exists in the request schema with the right JSON type and a
//! valid enum value, required fields are there, `Content-Length` is sent on every POST, PUT
//! and PATCH, JSON bodies say so, and a fake's answers fit the response schema. The fakes
//! refuse as Google's front end does (411 without a length, 400 for what the API refuses) while
//! the test runs; `contract-check` (run by `scripts/test.sh` after the tests) checks every
//! recorded request again, names the test that made each finding, and checks that every
//! request kind the adapters can send ([`kinds::KINDS`]) was seen.
//!
//! # Layout
//! - `discovery.rs`: [`Documents`], the discovery documents read from the pinned
//!   `google-api-python-client` wheel (`scripts/emulators.sh discovery` installs it), and the
//!   look-up of a request's method.
//! - `cdap.rs`: CDAP's documented REST routes (Data Fusion), which discovery does not cover.
//! - `schema.rs`: a JSON value checked against a discovery schema.
//! - `check.rs`: [`check`], the findings of one recorded exchange, and [`Finding`].
//! - `rules.rs`: combinations the APIs refuse or ignore that no schema says.
//! - `record.rs`: [`Recorded`], the recorder every fake shares, and [`record::layer`], which
//!   makes an axum fake record and refuse as Google does.
//! - `proxy.rs`: [`Proxy`], a recording reverse proxy in front of an emulator.
//! - `kinds.rs`: the request kinds the adapters can send.
//! - `reads.rs`: the response fields the adapters read.
//! - `bin/contract-check.rs`: the check over every recorded request of a test run.

pub mod cdap;
mod check;
mod discovery;
pub mod kinds;
mod proxy;
pub mod reads;
pub mod record;
mod rules;
mod schema;

pub use check::{Finding, check, check_all};
pub use discovery::{Documents, Matched};
pub use proxy::Proxy;
pub use record::{Recorded, Recording};
