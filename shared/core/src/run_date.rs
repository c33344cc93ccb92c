//! The run date: the logical date a run is for, as Airflow's logical date.
//!
//! Every run has one: an object's `{date}` capture, a schedule's fire date in its time zone,
//! a trigger's or backfill's `--date`, else the UTC day the run started. Steps carry it in
//! the events' `vars["date"]`; the log step writes it, as `YYYY-MM-DD`, in the run log's
//! `run_date` column ([`of_vars`]), which `conveyor status --date/--from/--to`, `/api/runs`
//! and the backfill and trigger reports read.

use std::collections::BTreeMap;

use chrono::NaiveDate;

/// The formats a `{date}` value may take, most common first.
const FORMATS: [&str; 4] = ["%Y-%m-%d", "%Y_%m_%d", "%Y%m%d", "%Y/%m/%d"];

/// `value` as a date, when it is one in a usual spelling (`2026-11-20`, `2026_11_20`,
/// `20261120`, `2026/11/20`).
///
/// # Examples
/// ```
/// use conveyor_core::run_date::parse;
/// assert_eq!(parse("2026_11_20").map(|d| d.to_string()), Some("2026-11-20".to_owned()));
/// assert_eq!(parse("november"), None);
/// ```
pub fn parse(value: &str) -> Option<NaiveDate> {
    let value = value.trim();
    FORMATS
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(value, f).ok())
}

/// The run date of a run whose values are `vars`: its `date`, as `YYYY-MM-DD`; `None` when
/// it has none or it is not a date.
pub fn of_vars(vars: &BTreeMap<String, String>) -> Option<String> {
    vars.get("date")
        .and_then(|d| parse(d))
        .map(|d| d.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_spellings_give_the_same_date_and_others_none() {
        for s in [
            "2026-11-20",
            "2026_11_20",
            "20261120",
            "2026/11/20",
            " 2026-11-20 ",
        ] {
            assert_eq!(parse(s), NaiveDate::from_ymd_opt(2026, 11, 20), "{s}");
        }
        for s in ["", "2026-13-01", "eu", "2026-11"] {
            assert_eq!(parse(s), None, "{s}");
        }
        let vars = BTreeMap::from([("date".to_owned(), "20261120".to_owned())]);
        assert_eq!(of_vars(&vars).as_deref(), Some("2026-11-20"));
        assert_eq!(of_vars(&BTreeMap::new()), None);
    }
}
