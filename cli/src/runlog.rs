//! Where the CLI reads (and, for `replay`, writes) the run log: BigQuery in production, or the
//! embedded SQLite under the state directory. No pipeline file is needed for either.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use conveyor_core::config::{Config, RunLogTarget};
use conveyor_core::names::TableRef;
use conveyor_core::ports::RunLog;
use conveyor_gcp::{Gcp, GcpSettings};

/// Options naming the run log to read.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunLogArgs {
    /// Read the production run log in BigQuery in this project (the services'
    /// `CONVEYOR_PROJECT`). Without it, the embedded state under --state-dir is read.
    #[arg(long, env = "CONVEYOR_PROJECT")]
    pub(crate) project: Option<String>,
    /// The run log's dataset (default: the pipeline file's, else `conveyor`).
    #[arg(long, env = "CONVEYOR_RUN_LOG_DATASET")]
    pub(crate) dataset: Option<String>,
    /// The run log's table (default: the pipeline file's, else `run_log`).
    #[arg(long, env = "CONVEYOR_RUN_LOG_TABLE")]
    pub(crate) table: Option<String>,
    /// BigQuery location of the queries (e.g. `EU`).
    #[arg(long, env = "CONVEYOR_BIGQUERY_LOCATION")]
    pub(crate) location: Option<String>,
    /// BigQuery API root (an emulator's `http://127.0.0.1:PORT/bigquery/v2`).
    #[arg(long, env = "CONVEYOR_BIGQUERY_ENDPOINT", hide_env_values = true)]
    pub(crate) bigquery_endpoint: Option<String>,
    /// No credentials (emulators only).
    #[arg(long, env = "CONVEYOR_ANONYMOUS", hide = true)]
    pub(crate) anonymous: bool,
    /// Read the embedded state even when CONVEYOR_PROJECT is set.
    #[arg(long, conflicts_with = "project")]
    pub(crate) local: bool,
}

/// An opened run log and the tables to read.
pub(crate) struct Opened {
    pub(crate) run_log: Arc<dyn RunLog>,
    pub(crate) tables: Vec<TableRef>,
    /// `BigQuery my-project` or `.conveyor/warehouse`, for messages.
    pub(crate) place: String,
}

impl Opened {
    pub(crate) fn table_names(&self) -> String {
        self.tables
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The pipeline file at `path` when there is one: status works without it.
pub(crate) fn optional_config(path: &Path) -> anyhow::Result<Option<Arc<Config>>> {
    if !path.exists() {
        return Ok(None);
    }
    conveyor_core::config::load_file(path)
        .map(|c| Some(Arc::new(c)))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl RunLogArgs {
    fn tables(&self, config: Option<&Config>) -> anyhow::Result<Vec<TableRef>> {
        if let (None, None, Some(c)) = (&self.dataset, &self.table, config) {
            return Ok(conveyor_console::runs::run_log_tables(c));
        }
        let default = RunLogTarget::default().table;
        let dataset = self.dataset.clone().unwrap_or(default.dataset);
        let table = self.table.clone().unwrap_or(default.table);
        let t = TableRef::parse(&format!("{dataset}.{table}"))
            .with_context(|| format!("bad run-log table {dataset}.{table}"))?;
        Ok(vec![t])
    }

    /// Opens the run log: BigQuery when a project is given, else the embedded SQLite.
    pub(crate) async fn open(
        &self,
        config: Option<&Config>,
        state_dir: &Path,
    ) -> anyhow::Result<Opened> {
        let tables = self.tables(config)?;
        if let (Some(project), false) = (&self.project, self.local) {
            if self.anonymous && self.bigquery_endpoint.is_none() {
                anyhow::bail!(
                    "CONVEYOR_ANONYMOUS is for emulators: set CONVEYOR_BIGQUERY_ENDPOINT too"
                );
            }
            let settings = GcpSettings {
                project: project.clone(),
                events_topic: String::new(),
                bigquery_location: self.location.clone(),
                pubsub_endpoint: None,
                gcs_endpoint: "https://storage.googleapis.com".to_owned(),
                bigquery_endpoint: self.bigquery_endpoint.clone(),
                secretmanager_endpoint: "https://secretmanager.googleapis.com".to_owned(),
                bigquery_emulator: false,
                anonymous: self.anonymous,
                dataproc_endpoint: None,
                dataflow_endpoint: None,
                http_timeout: conveyor_gcp::rest::REQUEST_TIMEOUT,
            };
            let gcp = Gcp::connect(settings).context("Google Cloud credentials")?;
            let bq = gcp.bigquery();
            return Ok(Opened {
                run_log: Arc::new(bq),
                tables,
                place: format!("BigQuery, project {project}"),
            });
        }
        let warehouse = state_dir.join("warehouse");
        if !warehouse.is_dir() {
            anyhow::bail!(
                "no embedded state in {} (run `conveyor run` or `conveyor dev` first), and no \
                 --project (or CONVEYOR_PROJECT) to read the production run log in BigQuery",
                state_dir.display()
            );
        }
        let store = conveyor_embedded::LocalStore::new(state_dir.join("buckets"))
            .with_context(|| format!("{}", state_dir.display()))?;
        let wh = conveyor_embedded::SqliteWarehouse::open(warehouse.clone(), Arc::new(store))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Opened {
            run_log: Arc::new(wh),
            tables,
            place: format!("{}", warehouse.display()),
        })
    }
}
