//! `engine: local`: a command on this machine (the embedded mode).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Engine, Kind, PROCESS_NON_TERMINAL, PROCESS_TERMINAL, Problems, RUNNING, map, required,
};

/// A local command run as the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalBatch {
    /// The command, run by `sh -c`. Placeholders: the trigger's captures, `{run_id}`,
    /// `{table}`, `{attempt}`, `{job_id}`.
    pub command: String,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory the command runs in. A relative path is relative to the pipeline file,
    /// and so is the default (the pipeline file's directory), so a pipeline file runs the
    /// same from any working directory. Configuration text read without a file
    /// (`parse_str`) runs commands in the process's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<std::path::PathBuf>,
}

impl LocalBatch {
    /// Makes the working directory relative to `base` (the pipeline file's directory):
    /// `base` itself when none is given, `base/DIR` when a relative one is.
    pub(crate) fn resolve_relative(&mut self, base: &std::path::Path) {
        self.working_dir = Some(match self.working_dir.take() {
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => base.join(dir),
            None => base.to_path_buf(),
        });
    }
}

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "local",
    success: "SUCCEEDED",
    non_terminal: PROCESS_NON_TERMINAL,
    terminal: PROCESS_TERMINAL,
    running: RUNNING,
};

impl Engine for LocalBatch {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        required(o, "command", &self.command);
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        f("command", &mut self.command);
        map(f, "env", &mut self.env);
    }
}
