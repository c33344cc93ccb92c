//! The end-to-end tests of the Conveyor chain.
//!
//! One test binary for the crate (`autotests = false`): one link of the dependency graph
//! instead of one per file, and every test in one run. Each module was a test file of its own.

mod alerts;
mod branches;
mod bus_conformance;
mod checks;
mod console;
mod console_actions;
mod embedded_chain;
mod engines;
mod exactly_once;
mod gcp_emulators;
mod graphs;
mod http_engine;
mod lineage;
mod max_active_runs;
mod messages;
mod object_store_conformance;
mod operate;
mod placeholders;
mod postgres;
mod prereqs;
mod run_log_conformance;
mod runtime;
mod shipping;
mod ssh;
mod stage;
mod warehouse_conformance;
