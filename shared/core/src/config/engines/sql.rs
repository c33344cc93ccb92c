//! `engine: sql`: a query job in the warehouse.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Engine, Kind, Problems, RUNNING, opt, parameter_placeholders, render_parameter, required, say,
};
use crate::config::{CreateDisposition, WriteDisposition};

/// A SQL query job (`engine: sql`). Placeholders in `query` and `destination` take the run's
/// values in their table-safe form (`{date}` of `2026-11-20` is `2026_11_20`, as in
/// `load.table`) and `{table}` (the loaded table); a value that is not table-safe is refused,
/// never pasted into SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlJob {
    /// The query (GoogleSQL in BigQuery; the embedded mode runs it on SQLite with the
    /// warehouse's datasets attached, so `dataset.table` names work the same).
    pub query: String,
    /// The table the query's result is written to (`dataset.table`). Without it the query
    /// runs as a script (DML/DDL such as `TRUNCATE TABLE`, `MERGE`).
    #[serde(default)]
    pub destination: Option<String>,
    /// What happens to the destination's rows. Default `WRITE_EMPTY` (BigQuery's).
    #[serde(default)]
    pub write_disposition: Option<WriteDisposition>,
    /// Whether a missing destination is created. Default `CREATE_IF_NEEDED`.
    #[serde(default)]
    pub create_disposition: CreateDisposition,
}

impl SqlJob {
    /// The query and destination with their placeholders filled from `vars`. Every value
    /// must be table-safe (letters, digits, `_`), except `{table}`, which must be a table
    /// reference: nothing else is ever pasted into SQL. (The submit step passes the run's
    /// captures and date in their table-safe form, as `load.table` uses them.)
    ///
    /// # Errors
    /// The placeholder and why its value is refused, or a destination that is not a table.
    pub fn rendered(
        &self,
        vars: &BTreeMap<String, String>,
    ) -> Result<(String, Option<crate::names::TableRef>), String> {
        let mut checked = BTreeMap::new();
        let names = parameter_placeholders(&self.query).into_iter().chain(
            self.destination
                .iter()
                .flat_map(|d| parameter_placeholders(d)),
        );
        for name in names {
            let Some(value) = vars.get(&name) else {
                return Err(format!("{{{name}}} has no value"));
            };
            let safe = if name == "table" {
                crate::names::TableRef::parse(value).is_ok()
            } else {
                !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if !safe {
                return Err(format!(
                    "{{{name}}} = {value:?} is not table-safe (letters, digits and '_'): it is \
                     not pasted into SQL"
                ));
            }
            checked.insert(name, value.clone());
        }
        let query = render_parameter(&self.query, &checked)?;
        let destination = match &self.destination {
            None => None,
            Some(d) => {
                let d = render_parameter(d, &checked)?;
                Some(crate::names::TableRef::parse(&d).map_err(|e| e.to_string())?)
            }
        };
        Ok((query, destination))
    }
}

/// What this engine is called and what its states mean.
const KIND: Kind = Kind {
    name: "sql",
    success: "DONE",
    non_terminal: &["PENDING", "RUNNING"],
    // A BigQuery job is DONE either way; FAILED is Conveyor's name for DONE with an
    // `errorResult` (only DONE without one is success).
    terminal: &["DONE", "FAILED"],
    running: RUNNING,
};

impl Engine for SqlJob {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn problems(&self, o: &mut Problems) {
        required(o, "query", &self.query);
        if let Some(d) = &self.destination {
            required(o, "destination", d);
        }
        if self.destination.is_none() && self.write_disposition.is_some() {
            say(
                o,
                "write_disposition",
                "applies to a `destination` table; a query without one runs as a script",
            );
        }
    }

    fn each_parameter(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
        f("query", &mut self.query);
        opt(f, "destination", &mut self.destination);
    }
}
