//! `load`: the table it names, the schema it declares, and the options BigQuery would refuse
//! at the first load job.

use std::collections::{BTreeMap, BTreeSet};

use super::{Lines, Validator};
use crate::config::{
    Compression, CsvOptions, LoadBatch, LoadSpec, MAX_LOAD_URIS, MAX_RECORD_BYTES, OnSuccess,
    Pipeline, SchemaSpec, WriteDisposition, placeholders, render_table,
};
use crate::format::{ColumnType, Format};
use crate::names::{TableRef, reserved_dataset};

impl Validator {
    /// What is loaded where: a trigger that brings data, a table name that renders from the
    /// trigger's captures, a declared schema's columns and partition field.
    pub(super) fn load_target(
        &mut self,
        path: &str,
        lines: Lines<'_>,
        p: &Pipeline,
        load: &LoadSpec,
        captures: &[String],
    ) {
        let t = &p.trigger;
        if t.object.is_none() && t.topic.is_none() {
            self.issue(
                format!("{path}.load"),
                lines.at(&["load"]),
                "a load needs `trigger.object` (it runs when a matching object arrives) or `trigger.topic` (each message becomes rows)",
            );
        }
        // A sample value that is a valid project id, dataset and table name alike.
        let vars: BTreeMap<String, String> = captures
            .iter()
            .map(|c| (c.clone(), "sample".to_owned()))
            .collect();
        match render_table(&load.table, &vars, &vars) {
            Err(e) => self.issue(
                format!("{path}.load.table"),
                lines.at(&["load", "table"]),
                format!(
                    "{e} (placeholders must be captures of trigger.object.pattern: {captures:?})"
                ),
            ),
            Ok(sample) => match TableRef::parse(&sample) {
                Err(e) => {
                    self.issue(
                        format!("{path}.load.table"),
                        lines.at(&["load", "table"]),
                        e.to_string(),
                    );
                }
                Ok(t) => {
                    if let Some(why) = reserved_dataset(&t.dataset) {
                        self.issue(
                            format!("{path}.load.table"),
                            lines.at(&["load", "table"]),
                            why,
                        );
                    }
                }
            },
        }
        if let Some(decorator) = load.partition.as_ref().and_then(|p| p.decorator.as_ref()) {
            let known = |name: &str| {
                captures
                    .iter()
                    .any(|c| c == name || name.strip_suffix("_nodash") == Some(c.as_str()))
            };
            if decorator.contains('$') {
                self.issue(
                    format!("{path}.load.partition.decorator"),
                    lines.at(&["load", "partition", "decorator"]),
                    "the partition id only, without `$` (`{date_nodash}` gives 20261120)",
                );
            } else if let Some(unknown) = placeholders(decorator).into_iter().find(|n| !known(n)) {
                self.issue(
                    format!("{path}.load.partition.decorator"),
                    lines.at(&["load", "partition", "decorator"]),
                    format!(
                        "{{{unknown}}} is not a capture of trigger.object.pattern (captures: {captures:?}, each also as {{NAME_nodash}})"
                    ),
                );
            }
        }
        if let SchemaSpec::Columns(cols) = &load.schema {
            let mut names = BTreeSet::new();
            if cols.is_empty() {
                self.issue(
                    format!("{path}.load.schema"),
                    lines.at(&["load", "schema"]),
                    "declares no column",
                );
            }
            for (i, c) in cols.iter().enumerate() {
                let valid = c
                    .name
                    .chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
                    && c.name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    && c.name.len() <= 300;
                if !valid {
                    self.issue(
                        format!("{path}.load.schema[{i}].name"),
                        lines.at(&["load", "schema"]),
                        format!("invalid column name {:?}: letters, digits and '_', not starting with a digit", c.name),
                    );
                }
                if !names.insert(c.name.to_ascii_lowercase()) {
                    self.issue(
                        format!("{path}.load.schema[{i}].name"),
                        lines.at(&["load", "schema"]),
                        format!("column {:?} is declared twice", c.name),
                    );
                }
            }
            if let Some(field) = load.partition.as_ref().and_then(|p| p.field.as_ref()) {
                match cols.iter().find(|c| &c.name == field) {
                    None => self.issue(
                        format!("{path}.load.partition.field"),
                        lines.at(&["load", "partition", "field"]),
                        format!("{field:?} is not a declared column"),
                    ),
                    Some(c) if !matches!(c.ty, ColumnType::Timestamp | ColumnType::Date) => self
                        .issue(
                            format!("{path}.load.partition.field"),
                            lines.at(&["load", "partition", "field"]),
                            format!("{field:?} must be a TIMESTAMP or DATE column to partition on"),
                        ),
                    Some(_) => {}
                }
            }
        }
    }

    /// The load job's options BigQuery refuses or ignores, and the batch's bounds.
    pub(super) fn load_options(
        &mut self,
        path: &str,
        lines: Lines<'_>,
        p: &Pipeline,
        load: &LoadSpec,
    ) {
        let t = &p.trigger;
        // BigQuery accepts schema update options with WRITE_APPEND, or with WRITE_TRUNCATE
        // on one partition (`partition.decorator`); with anything else it refuses the job.
        let one_partition = load
            .partition
            .as_ref()
            .is_some_and(|p| p.decorator.is_some());
        if !load.schema_update_options.is_empty()
            && load.write_disposition != WriteDisposition::WriteAppend
            && !(one_partition && load.write_disposition == WriteDisposition::WriteTruncate)
        {
            self.issue(
                format!("{path}.load.schema_update_options"),
                lines.at(&["load", "schema_update_options"]),
                format!(
                    "BigQuery refuses schema update options with {}: only with WRITE_APPEND (a truncate replaces the schema anyway)",
                    match load.write_disposition {
                        WriteDisposition::WriteTruncate => "WRITE_TRUNCATE",
                        _ => "WRITE_EMPTY",
                    }
                ),
            );
        }
        // BigQuery honours maxBadRecords for CSV and JSON only; elsewhere it is silently
        // ignored, and a file with bad rows fails however many are allowed.
        if load.max_bad_records > 0 && !matches!(load.format, Format::Csv | Format::Ndjson) {
            self.issue(
                format!("{path}.load.max_bad_records"),
                lines.at(&["load", "max_bad_records"]),
                format!(
                    "BigQuery honours max_bad_records for CSV and NDJSON only, not {}: leave it out",
                    match load.format {
                        Format::Avro => "AVRO",
                        Format::Parquet => "PARQUET",
                        _ => "ORC",
                    }
                ),
            );
        }
        if !(1..=MAX_RECORD_BYTES).contains(&load.max_record_bytes) {
            self.issue(
                format!("{path}.load.max_record_bytes"),
                lines.at(&["load", "max_record_bytes"]),
                "must be from 1 to 100000000 (BigQuery's 100 MB row limit)",
            );
        }
        self.csv_options(path, lines, load);
        // BigQuery reads gzip for CSV and JSON only: Avro and Parquet compress their blocks.
        if load.compression == Compression::Gzip
            && !matches!(load.format, Format::Csv | Format::Ndjson)
        {
            self.issue(
                format!("{path}.load.compression"),
                lines.at(&["load", "compression"]),
                "BigQuery reads gzip for CSV and NDJSON files only (Avro, Parquet and ORC compress inside the file)",
            );
        }
        if load.clustering.len() > 4 {
            self.issue(
                format!("{path}.load.clustering"),
                lines.at(&["load", "clustering"]),
                "BigQuery clusters on at most four columns",
            );
        }
        if let Some(LoadBatch::Marker(m)) = &load.batch {
            if m.marker.is_empty() || m.marker.contains('/') {
                self.issue(
                    format!("{path}.load.batch.marker"),
                    lines.at(&["load", "batch", "marker"]),
                    "must be a file name such as _SUCCESS (no '/')",
                );
            }
            if let Some(o) = &t.object
                && m.covers == crate::config::MarkerCovers::Subfolders
                && o.pattern.as_str().split('/').count() < 3
            {
                self.issue(
                    format!("{path}.load.batch.marker.covers"),
                    lines.at(&["load", "batch", "marker"]),
                    "`covers: subfolders` needs a pattern with a folder level below the marker's (`orders/{date}/{hour}/*.csv`)",
                );
            }
            if let Some(o) = &t.object
                && !o.pattern.has_folder()
            {
                self.issue(
                    format!("{path}.trigger.object.pattern"),
                    lines.at(&["trigger", "object", "pattern"]),
                    "a marker batch needs a pattern whose file part has no `**` or `/` (the folder is what the marker completes)",
                );
            }
        }
        self.load_actions(path, lines, p, load);
        if let Some(LoadBatch::Window(w)) = &load.batch {
            if w.auto && w.window < crate::config::AUTO_MIN_WINDOW {
                self.issue(
                    format!("{path}.load.batch.max_delay"),
                    lines.at(&["load", "batch", "max_delay"]),
                    format!(
                        "must be at least {}s: BigQuery allows {} load jobs per table per day, \
                         one window every 57.6 s",
                        crate::config::AUTO_MIN_WINDOW.as_secs(),
                        crate::config::LOAD_JOBS_PER_TABLE_PER_DAY
                    ),
                );
            }
            if w.auto && p.trigger.object.is_none() {
                self.issue(
                    format!("{path}.load.batch.auto"),
                    lines.at(&["load", "batch", "auto"]),
                    "batches object arrivals: it needs `trigger.object`",
                );
            }
            if w.window.is_zero() {
                self.issue(
                    format!("{path}.load.batch.window"),
                    lines.at(&["load", "batch", "window"]),
                    "must be longer than 0s",
                );
            }
            if w.max_files == 0 || w.max_files > MAX_LOAD_URIS {
                self.issue(
                    format!("{path}.load.batch.max_files"),
                    lines.at(&["load", "batch", "max_files"]),
                    format!("must be between 1 and {}", MAX_LOAD_URIS),
                );
            }
        }
    }
}

impl Validator {
    /// `load.order`, `load.start_after`, `load.on_success`: on object arrivals, each
    /// with what it needs.
    fn load_actions(&mut self, path: &str, lines: Lines<'_>, p: &Pipeline, load: &LoadSpec) {
        if load.order.is_some() {
            if p.trigger.object.is_none() {
                self.issue(
                    format!("{path}.load.order"),
                    lines.at(&["load", "order"]),
                    "orders object arrivals: it needs `trigger.object`",
                );
            }
            if matches!(load.batch, Some(LoadBatch::Window(_))) {
                self.issue(
                    format!("{path}.load.order"),
                    lines.at(&["load", "order"]),
                    "a window batch loads its arrivals together: order applies to single objects or marker folders",
                );
            }
        }
        if let Some(s) = &load.start_after {
            if load.order.is_none() {
                self.issue(
                    format!("{path}.load.start_after"),
                    lines.at(&["load", "start_after"]),
                    "a start gate holds an ordered queue: set `order: by_name` too",
                );
            }
            if s.marker.is_empty() || s.marker.contains('/') {
                self.issue(
                    format!("{path}.load.start_after.marker"),
                    lines.at(&["load", "start_after", "marker"]),
                    "must be a file name such as _HISTORYDONE (no '/')",
                );
            }
        }
        if let Some(on) = &load.on_success {
            let at = lines.at(&["load", "on_success"]);
            if p.trigger.object.is_none() {
                self.issue(
                    format!("{path}.load.on_success"),
                    at,
                    "acts on source objects: it needs `trigger.object`",
                );
            }
            match (&on.move_to, on.delete_source) {
                (None, false) => self.issue(
                    format!("{path}.load.on_success"),
                    at,
                    "set `delete_source: true` or `move_to: \"done/{path}\"`",
                ),
                (Some(_), true) => self.issue(
                    format!("{path}.load.on_success"),
                    at,
                    "set either `delete_source` or `move_to`, not both",
                ),
                (Some(to), false) => {
                    let captures = p.captures();
                    let names = placeholders(to);
                    if let Some(unknown) = names
                        .iter()
                        .find(|n| !OnSuccess::NAMES.contains(&n.as_str()) && !captures.contains(n))
                    {
                        self.issue(
                            format!("{path}.load.on_success.move_to"),
                            lines.at(&["load", "on_success", "move_to"]),
                            format!("{{{unknown}}} is neither {{path}}, {{name}}, {{folder}} nor a capture of trigger.object.pattern ({captures:?})"),
                        );
                    } else if !names.iter().any(|n| n == "path" || n == "name") {
                        self.issue(
                            format!("{path}.load.on_success.move_to"),
                            lines.at(&["load", "on_success", "move_to"]),
                            "must name each source apart: put {path} or {name} in it (`done/{path}`)",
                        );
                    } else if to.starts_with(crate::INTERNAL_PREFIX) {
                        self.issue(
                            format!("{path}.load.on_success.move_to"),
                            lines.at(&["load", "on_success", "move_to"]),
                            format!("{} is Conveyor's own state", crate::INTERNAL_PREFIX),
                        );
                    }
                }
                (None, true) => {}
            }
        }
    }

    /// `load.csv`: for CSV only, each character one BigQuery takes, one place for the
    /// leading rows.
    fn csv_options(&mut self, path: &str, lines: Lines<'_>, load: &LoadSpec) {
        let csv = &load.csv;
        if csv != &CsvOptions::default() && load.format != Format::Csv {
            self.issue(
                format!("{path}.load.csv"),
                lines.at(&["load", "csv"]),
                "CSV options apply to `format: CSV` only: leave them out",
            );
            return;
        }
        if load.skip_leading_rows.is_some() && csv.skip_leading_rows.is_some() {
            self.issue(
                format!("{path}.load.skip_leading_rows"),
                lines.at(&["load", "skip_leading_rows"]),
                "given twice: here and as csv.skip_leading_rows; keep one",
            );
        }
        if csv.delimiter_byte().is_none() {
            self.issue(
                format!("{path}.load.csv.field_delimiter"),
                lines.at(&["load", "csv", "field_delimiter"]),
                "must be one character of ISO-8859-1 (BigQuery's fieldDelimiter), or `tab`",
            );
        }
        match csv.quote_byte() {
            None => self.issue(
                format!("{path}.load.csv.quote"),
                lines.at(&["load", "csv", "quote"]),
                "must be one character of ISO-8859-1 (BigQuery's quote), or \"\" for none",
            ),
            Some(quote) if quote.is_some() && quote == csv.delimiter_byte() => self.issue(
                format!("{path}.load.csv.quote"),
                lines.at(&["load", "csv", "quote"]),
                "is the field delimiter too",
            ),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GOOD, issues};

    #[test]
    fn schema_update_options_are_refused_unless_the_load_appends() {
        let with = |write: &str| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: CSV\n      write_disposition: {write}\n      schema_update_options: [ALLOW_FIELD_ADDITION]\n"),
            )
        };
        assert!(issues(&with("WRITE_APPEND")).is_empty());
        for write in ["WRITE_TRUNCATE", "WRITE_EMPTY"] {
            let found = issues(&with(write));
            assert_eq!(found.len(), 1, "{write}: {found:?}");
            assert_eq!(found[0].path, "pipelines[0].load.schema_update_options");
            assert!(found[0].message.contains(write), "{}", found[0].message);
        }
    }

    #[test]
    fn max_record_bytes_is_refused_outside_one_byte_to_bigquerys_row_limit() {
        let with = |n: u64| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: CSV\n      max_record_bytes: {n}\n"),
            )
        };
        assert!(issues(&with(1_000)).is_empty());
        for bad in [0, 100_000_001] {
            let found = issues(&with(bad));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].path, "pipelines[0].load.max_record_bytes");
        }
    }

    #[test]
    fn max_bad_records_is_refused_for_formats_bigquery_ignores_it_for() {
        let with = |format: &str, bad: u32| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: {format}\n      max_bad_records: {bad}\n"),
            )
        };
        for ok in ["CSV", "NDJSON"] {
            assert!(issues(&with(ok, 5)).is_empty(), "{ok}");
        }
        for ignored in ["AVRO", "PARQUET", "ORC"] {
            let found = issues(&with(ignored, 5));
            assert_eq!(found.len(), 1, "{ignored}: {found:?}");
            assert_eq!(found[0].path, "pipelines[0].load.max_bad_records");
            assert!(issues(&with(ignored, 0)).is_empty(), "0 is the default");
        }
    }

    #[test]
    fn a_partition_decorator_names_captures_and_allows_schema_updates_on_a_truncate() {
        let with = |partition: &str, extra: &str| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: CSV\n      partition: {partition}\n{extra}"),
            )
        };
        let ok = with(
            r#"{ decorator: "{date_nodash}" }"#,
            "      write_disposition: WRITE_TRUNCATE\n      schema_update_options: [ALLOW_FIELD_ADDITION]\n",
        );
        assert!(issues(&ok).is_empty(), "{:?}", issues(&ok));
        for bad in [
            r#"{ decorator: "{day}" }"#,
            r#"{ decorator: "${date_nodash}" }"#,
        ] {
            let found = issues(&with(bad, ""));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].path, "pipelines[0].load.partition.decorator");
        }
    }

    #[test]
    fn gzip_is_refused_for_formats_that_compress_inside_the_file() {
        let with = |format: &str| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: {format}\n      compression: gzip\n"),
            )
        };
        assert!(issues(&with("CSV")).is_empty());
        assert!(issues(&with("NDJSON")).is_empty());
        let found = issues(&with("PARQUET"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "pipelines[0].load.compression");
    }

    #[test]
    fn a_table_in_a_project_named_by_a_capture_is_accepted() {
        let text = GOOD
            .replace(
                "sales/{date}/*.csv",
                "{project}/{dataset}/{table}/{date}/*.csv",
            )
            .replace("analytics.sales_{date}", "{project}.{dataset}.{table}");
        assert!(issues(&text).is_empty(), "{:?}", issues(&text));
        let literal = GOOD.replace("analytics.sales_{date}", "other-project.analytics.sales");
        assert!(issues(&literal).is_empty(), "{:?}", issues(&literal));
    }

    #[test]
    fn a_marker_covering_subfolders_needs_a_folder_level_below_it() {
        let with = |pattern: &str| {
            GOOD.replace("sales/{date}/*.csv", pattern).replace(
                "      format: CSV\n",
                "      format: CSV\n      batch: { marker: { name: _SUCCESS, covers: subfolders } }\n",
            )
        };
        assert!(issues(&with("sales/{date}/{region}/*.csv")).is_empty());
        let found = issues(&with("{date}/*.csv"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "pipelines[0].load.batch.marker.covers");
    }

    #[test]
    fn order_start_gate_and_post_load_actions_are_checked() {
        let with =
            |keys: &str| GOOD.replace("      format: CSV\n", &format!("      format: CSV\n{keys}"));
        let paths = |keys: &str| -> Vec<String> {
            issues(&with(keys)).into_iter().map(|i| i.path).collect()
        };
        let ok = "      order: by_name\n      start_after: { marker: _HISTORYDONE }\n      on_success: { move_to: \"done/{date}/{name}\" }\n";
        assert!(paths(ok).is_empty(), "{:?}", issues(&with(ok)));
        assert!(paths("      on_success: { delete_source: true }\n").is_empty());
        assert_eq!(
            paths("      start_after: { marker: _HISTORYDONE }\n"),
            ["pipelines[0].load.start_after"],
            "a gate needs an ordered queue"
        );
        assert_eq!(
            paths("      order: by_name\n      start_after: { marker: a/_DONE }\n"),
            ["pipelines[0].load.start_after.marker"]
        );
        assert_eq!(
            paths("      order: by_name\n      batch: { window: 5m }\n"),
            ["pipelines[0].load.order"]
        );
        assert_eq!(
            paths("      on_success: {}\n"),
            ["pipelines[0].load.on_success"]
        );
        assert_eq!(
            paths("      on_success: { delete_source: true, move_to: \"done/{path}\" }\n"),
            ["pipelines[0].load.on_success"]
        );
        for bad in ["done/{region}/{path}", "done/all.csv", "_conveyor/{path}"] {
            assert_eq!(
                paths(&format!("      on_success: {{ move_to: \"{bad}\" }}\n")),
                ["pipelines[0].load.on_success.move_to"],
                "{bad}"
            );
        }
    }

    #[test]
    fn auto_batching_stays_under_the_daily_load_job_quota() {
        let with =
            |keys: &str| GOOD.replace("      format: CSV\n", &format!("      format: CSV\n{keys}"));
        let paths = |keys: &str| -> Vec<String> {
            issues(&with(keys)).into_iter().map(|i| i.path).collect()
        };
        assert!(paths("      batch: { auto: true }\n").is_empty());
        assert!(paths("      batch: { auto: true, max_delay: 15m, max_files: 500 }\n").is_empty());
        assert_eq!(
            paths("      batch: { auto: true, max_delay: 30s }\n"),
            ["pipelines[0].load.batch.max_delay"],
            "30 s windows are 2,880 jobs a day"
        );
        assert_eq!(
            paths("      order: by_name\n      batch: { auto: true }\n"),
            ["pipelines[0].load.order"]
        );
        // Keys that do not go together are refused when the file is read.
        for bad in [
            "      batch: { auto: true, window: 5m }\n",
            "      batch: { auto: true, marker: _SUCCESS }\n",
            "      batch: { window: 5m, max_delay: 2m }\n",
            "      batch: { auto: false }\n",
        ] {
            let found = issues(&with(bad));
            assert!(
                found.iter().any(|i| i.path.contains("load")),
                "{bad}: {found:?}"
            );
        }
        let config = crate::config::parse_str(&with("      batch: { auto: true }\n"), "t.yaml")
            .expect("config");
        let load = config.pipelines[0].load.as_ref().expect("load");
        let Some(crate::config::LoadBatch::Window(w)) = &load.batch else {
            panic!("{:?}", load.batch)
        };
        assert!(w.auto);
        assert_eq!(w.window, crate::config::AUTO_WINDOW);
    }

    #[test]
    fn on_failure_takes_a_topic_or_a_webhook_whose_url_is_a_secret() {
        let with = |actions: &str| {
            GOOD.replace(
                "    poll: {",
                &format!("    on_failure: {actions}\n    poll: {{"),
            )
        };
        let ok =
            "[{ publish: sales-failures }, { webhook: { url_secret: projects/p/secrets/chat } }]";
        assert!(issues(&with(ok)).is_empty(), "{:?}", issues(&with(ok)));
        for bad in [
            "[{ publish: goog-x }]",
            "[{ webhook: { url_secret: \"https://chat.googleapis.com/v1/spaces/x\" } }]",
            "[{ email: ops@example.com }]",
        ] {
            let found = issues(&with(bad));
            assert!(!found.is_empty(), "{bad}");
            assert!(
                found
                    .iter()
                    .all(|i| i.path.starts_with("pipelines[0].on_failure")),
                "{found:?}"
            );
        }
    }

    #[test]
    fn csv_options_are_checked_and_refused_for_other_formats() {
        let with = |format: &str, csv: &str| {
            GOOD.replace(
                "      format: CSV\n",
                &format!("      format: {format}\n      csv: {csv}\n"),
            )
        };
        let ok = r#"{ field_delimiter: "|", quote: "'", null_marker: "\\N", encoding: ISO-8859-1, allow_jagged_rows: true, skip_leading_rows: 1 }"#;
        assert!(
            issues(&with("CSV", ok)).is_empty(),
            "{:?}",
            issues(&with("CSV", ok))
        );
        assert!(issues(&with("CSV", "{ field_delimiter: tab }")).is_empty());
        let found = issues(&with("NDJSON", ok));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "pipelines[0].load.csv");
        let found = issues(&with("CSV", r#"{ field_delimiter: "||", quote: "ab" }"#));
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pipelines[0].load.csv.field_delimiter",
                "pipelines[0].load.csv.quote"
            ]
        );
        let twice = GOOD.replace(
            "      format: CSV\n",
            "      format: CSV\n      skip_leading_rows: 1\n      csv: { skip_leading_rows: 2 }\n",
        );
        let found = issues(&twice);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "pipelines[0].load.skip_leading_rows");
    }

    #[test]
    fn a_table_placeholder_without_a_capture_is_an_error() {
        let text = GOOD.replace("analytics.sales_{date}", "analytics.sales_{region}");
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "pipelines[0].load.table");
        assert!(found[0].message.contains("{region}"));
    }
}
