//! The `conveyor` command, run as a process: validation, examples, the infra files, pipes, proxies.
//!
//! One test binary for the crate (`autotests = false`): one link of the dependency graph
//! instead of one per file, and every test in one run. Each module was a test file of its own.

mod common;
mod docs;
mod examples;
mod infra;
mod pipe;
mod proxy;
mod validate;
