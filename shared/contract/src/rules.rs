//! What the APIs refuse or ignore that no schema says, from the fields' own descriptions in
//! the discovery documents:
//! - BigQuery `schemaUpdateOptions` ("supported in three cases: when writeDisposition is
//!   WRITE_APPEND; when writeDisposition is WRITE_TRUNCATE_DATA; when writeDisposition is
//!   WRITE_TRUNCATE and the destination table is a partition of a table, specified by
//!   partition decorators"): refused otherwise.
//! - BigQuery `maxBadRecords` ("only supported for CSV and NEWLINE_DELIMITED_JSON file
//!   formats"): ignored otherwise, so sending it says something that does not happen.

use serde_json::Value;

/// Problems of a request body of method `id`: (where, message, refused).
pub(crate) fn request(id: &str, body: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    if id != "bigquery.jobs.insert" {
        return out;
    }
    for (kind, default_write) in [("load", "WRITE_APPEND"), ("query", "WRITE_EMPTY")] {
        let Some(config) = body.pointer(&format!("/configuration/{kind}")) else {
            continue;
        };
        let at = format!("configuration.{kind}");
        let options = config
            .get("schemaUpdateOptions")
            .and_then(Value::as_array)
            .is_some_and(|o| !o.is_empty());
        if options {
            let write = config
                .get("writeDisposition")
                .and_then(Value::as_str)
                .unwrap_or(default_write);
            let table = config
                .pointer("/destinationTable/tableId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let allowed = write == "WRITE_APPEND"
                || write == "WRITE_TRUNCATE_DATA"
                || (write == "WRITE_TRUNCATE" && table.contains('$'));
            if !allowed {
                out.push((
                    format!("{at}.schemaUpdateOptions"),
                    format!(
                        "refused with writeDisposition {write} on {table:?} (only WRITE_APPEND, or WRITE_TRUNCATE on a partition decorator)"
                    ),
                    true,
                ));
            }
        }
        if kind == "load" && config.get("maxBadRecords").is_some_and(|v| !v.is_null()) {
            let format = config
                .get("sourceFormat")
                .and_then(Value::as_str)
                .unwrap_or("CSV");
            if !matches!(format, "CSV" | "NEWLINE_DELIMITED_JSON") {
                out.push((
                    format!("{at}.maxBadRecords"),
                    format!("ignored for {format}: BigQuery honours it for CSV and NEWLINE_DELIMITED_JSON only"),
                    false,
                ));
            }
        }
    }
    out
}
