//! `trigger.schedule`: a cron expression in the dialect Cloud Scheduler accepts, and an IANA
//! time zone. Checked on the YAML itself, so a mistake elsewhere in the pipeline hides neither.

use marked_yaml::Node;

use super::{Validator, closest, get, pos};

impl Validator {
    /// `trigger.schedule`: a cron expression Cloud Scheduler accepts and an IANA time zone.
    /// Checked on the YAML itself, so a mistake elsewhere in the pipeline hides neither.
    pub(super) fn schedule(&mut self, path: &str, node: &Node) {
        if let Some(expect) = get(node, "expect") {
            if expect.as_mapping().is_some()
                && get(expect, "by").is_none()
                && get(expect, "within").is_none()
            {
                self.issue(
                    format!("{path}.expect"),
                    pos(expect.span().start()),
                    "give `by` (a time of day, such as \"06:00\") or `within` (such as 26h), or both",
                );
            }
            if let Some(by) = get(expect, "by").and_then(Node::as_scalar)
                && chrono::NaiveTime::parse_from_str(by.as_str(), "%H:%M").is_err()
            {
                self.issue(
                    format!("{path}.expect.by"),
                    pos(by.span().start()),
                    format!("{:?} is not a time HH:MM (such as \"06:00\")", by.as_str()),
                );
            }
            if let Some(zone) = get(expect, "time_zone").and_then(Node::as_scalar)
                && let Err(e) = parse_time_zone(zone.as_str())
            {
                self.issue(
                    format!("{path}.expect.time_zone"),
                    pos(zone.span().start()),
                    e,
                );
            }
        }
        let Some(schedule) = get(node, "trigger").and_then(|t| get(t, "schedule")) else {
            return;
        };
        if let Some(cron) = get(schedule, "cron").and_then(Node::as_scalar)
            && let Err(e) = check_cron(cron.as_str())
        {
            self.issue(
                format!("{path}.trigger.schedule.cron"),
                pos(cron.span().start()),
                format!("invalid cron {:?}: {e}", cron.as_str()),
            );
        }
        if let Some(zone) = get(schedule, "time_zone").and_then(Node::as_scalar)
            && let Err(e) = parse_time_zone(zone.as_str())
        {
            self.issue(
                format!("{path}.trigger.schedule.time_zone"),
                pos(zone.span().start()),
                e,
            );
        }
    }
}

/// The fields of Cloud Scheduler's cron (unix-cron): name, lowest and highest value, and the
/// names it accepts for values.
const CRON_FIELDS: [(&str, u32, u32, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of the month", 1, 31, &[]),
    (
        "month",
        1,
        12,
        &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    ),
    // 0-6 from Sunday, and 7 for Sunday too.
    (
        "day of the week",
        0,
        7,
        &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    ),
];

/// Checks `expr` against the cron dialect Cloud Scheduler accepts (unix-cron): exactly five
/// fields (minute, hour, day of the month, month, day of the week); each a `*`, a value, a
/// range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those; months `1-12` or
/// `JAN`-`DEC`, days of the week `0-7` (0 and 7 are Sunday) or `SUN`-`SAT`. Quartz and croner
/// extensions Cloud Scheduler refuses (`L`, `W`, `#`, `?`, a seconds or year field,
/// `@daily`) are refused here too, each with a reason.
///
/// # Errors
/// A message saying what is wrong, in words.
pub fn check_cron(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if let Some(first) = fields.first()
        && first.starts_with('@')
    {
        return Err(format!(
            "{first} is not supported by Cloud Scheduler: write the five fields (`0 0 * * *` for @daily)"
        ));
    }
    if fields.len() != 5 {
        return Err(format!(
            "has {} field(s); Cloud Scheduler's cron has exactly 5 (minute hour day-of-month month day-of-week), with no seconds or year field",
            fields.len()
        ));
    }
    for (text, (name, lo, hi, names)) in fields.iter().zip(CRON_FIELDS) {
        check_cron_field(text, name, lo, hi, names)?;
    }
    // What Cloud Scheduler accepts, croner (which `conveyor dev` evaluates with) reads.
    croner::Cron::new(expr)
        .parse()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_cron_field(
    text: &str,
    name: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
) -> Result<(), String> {
    let upper = text.to_ascii_uppercase();
    for (token, what) in [("#", "`#` (the nth weekday of the month)"), ("?", "`?`")] {
        if upper.contains(token) {
            return Err(format!(
                "{what} in the {name} field is not supported by Cloud Scheduler's cron"
            ));
        }
    }
    let value = |v: &str| -> Result<u32, String> {
        if let Ok(n) = v.parse::<u32>() {
            return if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "{n} is out of range for the {name} field ({lo}-{hi})"
                ))
            };
        }
        if let Some(i) = names.iter().position(|n| *n == v) {
            return Ok(u32::try_from(i).unwrap_or(0) + lo);
        }
        if v == "L" || v.ends_with('L') || v.ends_with('W') || v == "LW" {
            return Err(format!(
                "`{v}` in the {name} field is not supported by Cloud Scheduler's cron (no `L` for last or `W` for nearest weekday)"
            ));
        }
        let allowed = if names.is_empty() {
            format!("{lo}-{hi}")
        } else {
            format!("{lo}-{hi} or {}-{}", names[0], names[names.len() - 1])
        };
        Err(format!(
            "{v:?} is not a value of the {name} field ({allowed})"
        ))
    };
    for item in upper.split(',') {
        if item.is_empty() {
            return Err(format!("the {name} field has an empty list item"));
        }
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(n) if n > 0 => {}
                _ => {
                    return Err(format!(
                        "step {step:?} of the {name} field must be a whole number above 0"
                    ));
                }
            }
            if base != "*" && !base.contains('-') {
                return Err(format!(
                    "a step in the {name} field follows `*` or a range (`*/{step}`, `a-b/{step}`), not {base:?}"
                ));
            }
        }
        if base == "*" {
            continue;
        }
        match base.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("range {base} of the {name} field runs backwards"));
                }
            }
            None => {
                value(base)?;
            }
        }
    }
    Ok(())
}

/// The IANA time zone `name` (Cloud Scheduler's `timeZone`), from the tz database.
///
/// # Errors
/// When no zone has that name; the message suggests the closest one.
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
        match closest(name, names) {
            Some(best) => format!(
                "{name:?} is not an IANA time zone; did you mean `{best}`?"
            ),
            None => format!(
                "{name:?} is not an IANA time zone (such as `Europe/Paris`, `Asia/Tokyo` or `Etc/UTC`)"
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::issues;
    use super::*;

    #[test]
    fn a_bad_zone_and_a_scheduler_invalid_cron_are_refused_with_their_lines() {
        for (cron, zone, what) in [
            ("0 5 L * *", "UTC", "cron"),
            ("0 5 * * 1#2", "UTC", "cron"),
            ("0 0 5 * * *", "UTC", "cron"),
            ("0 5 * * *", "Mars/Olympus", "time_zone"),
            ("0 5 * * *", "Europe/Pariss", "time_zone"),
        ] {
            let text = format!(
                "pipelines:\n  - name: n\n    trigger:\n      schedule:\n        cron: \"{cron}\"\n        time_zone: {zone}\n    jobs: [{{ name: j, engine: local, command: \"true\" }}]\n"
            );
            let found = issues(&text);
            assert_eq!(found.len(), 1, "{cron} {zone}: {found:#?}");
            assert_eq!(
                found[0].path,
                format!("pipelines[0].trigger.schedule.{what}")
            );
            let line = if what == "cron" { 5 } else { 6 };
            assert_eq!(found[0].line, Some(line), "{found:#?}");
        }
        let ok = "pipelines:\n  - name: n\n    trigger: { schedule: { cron: \"11 7 * * MON-FRI\", time_zone: Asia/Tokyo } }\n    jobs: [{ name: j, engine: local, command: \"true\" }]\n";
        assert!(issues(ok).is_empty(), "{:#?}", issues(ok));
    }

    #[test]
    fn cloud_scheduler_cron_is_accepted() {
        for ok in [
            "0 2 * * *",
            "*/5 * * * *",
            "0 9-17/2 * * MON-FRI",
            "0 0 1,15 * *",
            "30 4 1 JAN,jul *",
            "0 0 * * 7",
            "0 0 * * 0",
            "15 10 * * sun",
            "0   5  *  *  *",
        ] {
            assert_eq!(check_cron(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_cloud_scheduler_refuses_is_refused_with_a_reason() {
        for (bad, word) in [
            ("0 5 L * *", "`L`"),
            ("0 5 * * 1#2", "`#`"),
            ("0 5 15W * *", "`W`"),
            ("0 5 ? * MON", "`?`"),
            ("0 5 * * 5L", "`L`"),
            ("0 0 5 * * *", "6 field"),
            ("0 5 * *", "4 field"),
            ("@daily", "@daily"),
            ("60 * * * *", "out of range"),
            ("0 24 * * *", "out of range"),
            ("0 0 0 * *", "out of range"),
            ("0 0 * 13 *", "out of range"),
            ("0 0 * * 8", "out of range"),
            ("0 0 * JUNE *", "not a value"),
            ("5/10 * * * *", "follows `*` or a range"),
            ("*/0 * * * *", "above 0"),
            ("0 17-9 * * *", "backwards"),
            ("0 1,,2 * * *", "empty"),
        ] {
            let e = check_cron(bad).expect_err(bad);
            assert!(e.contains(word), "{bad}: {e}");
        }
    }

    #[test]
    fn time_zones_come_from_the_iana_database() {
        assert_eq!(
            parse_time_zone("Asia/Tokyo").unwrap(),
            chrono_tz::Asia::Tokyo
        );
        assert!(parse_time_zone("Etc/UTC").is_ok());
        let e = parse_time_zone("Europe/Pariss").unwrap_err();
        assert!(e.contains("did you mean `Europe/Paris`?"), "{e}");
        let e = parse_time_zone("Mars/Olympus").unwrap_err();
        assert!(e.contains("not an IANA time zone"), "{e}");
    }
}
