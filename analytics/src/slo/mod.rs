//! Service level objectives over SQL, with multi-window, multi-burn-rate alerts.
//!
//! Definitions live in `rules/slos.yaml`, in a format close to Sloth's: a service, and per SLO a
//! name, an objective in percent and an SLI given as two SQL queries, one counting error events and
//! one counting all events, over a templated window:
//!
//! - `{{.window_start}}` and `{{.window_end}}`: timestamp literals bounding the window,
//! - `{{.window}}`: the window length as an interval literal (e.g. for `now() - {{.window}}`).
//!
//! Each query returns one row with one number. The error ratio of a window is errors ÷ total; its
//! burn rate is the error ratio ÷ the error budget (1 − objective). An alert fires when both its
//! long and its short window burn faster than its threshold (Google SRE Workbook, ch. 5). Defaults:
//! page on 1h/5m at 14.4× and on 6h/30m at 6×, ticket on 3d/6h at 1×; the SLO period is 30 days.
//!
//! This module holds the file format and the validated rules; `rules` reads and validates an
//! SLO file, `eval` evaluates it (windows, burn rates, alerts, the runs that burned a budget)
//! and `report` renders an evaluation as text or Prometheus gauges.

mod eval;
mod report;
mod rules;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::metrics::sql_timestamp;

pub use eval::{AlertResult, SloReport, SloResult, WindowResult, burning_runs_sql, evaluate};
pub use report::{render_prometheus, render_table};

/// `rules/slos.yaml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloFile {
    /// Format version; `custos/v1`.
    pub version: String,
    /// The service the SLOs belong to (Sloth's `service`).
    pub service: String,
    /// Default alert windows for every SLO of the file.
    #[serde(default)]
    pub alerting: Option<AlertingSpec>,
    /// The SLOs.
    pub slos: Vec<SloSpec>,
}

/// One SLO as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// Name, unique in the file: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// Objective in percent, e.g. `99.5`.
    pub objective: f64,
    /// What the SLO promises, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The SLO period (error budget window), e.g. `30d`; defaults to `30d`.
    #[serde(default)]
    pub period: Option<String>,
    /// The indicator.
    pub sli: SliSpec,
    /// Alert windows overriding the file's and the defaults.
    #[serde(default)]
    pub alerting: Option<AlertingSpec>,
}

/// The SLI as error and total events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliSpec {
    /// Event queries.
    pub events: EventsSpec,
}

/// Error and total event queries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSpec {
    /// SQL returning the number of bad events in the window.
    pub error_query: String,
    /// SQL returning the number of all events in the window.
    pub total_query: String,
}

/// Alert windows by severity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingSpec {
    /// Page alerts; replaces the default page windows when given.
    #[serde(default)]
    pub page: Option<Vec<WindowSpec>>,
    /// Ticket alerts; replaces the default ticket windows when given.
    #[serde(default)]
    pub ticket: Option<Vec<WindowSpec>>,
}

/// One multi-window burn-rate rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Long window, e.g. `1h`.
    pub long: String,
    /// Short window, e.g. `5m`.
    pub short: String,
    /// Burn-rate threshold, e.g. `14.4`.
    pub burn_rate: f64,
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Wake someone up.
    Page,
    /// Look at it during working hours.
    Ticket,
}

/// A validated burn-rate rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// Severity.
    pub severity: Severity,
    /// Long window.
    pub long: Duration,
    /// Short window.
    pub short: Duration,
    /// Threshold.
    pub burn_rate: f64,
}

/// A validated SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// Name.
    pub name: String,
    /// Objective as a ratio, e.g. 0.995.
    pub objective: f64,
    /// Description.
    pub description: Option<String>,
    /// Period.
    pub period: Duration,
    /// Error events SQL (templated).
    pub error_query: String,
    /// Total events SQL (templated).
    pub total_query: String,
    /// Alert rules.
    pub alerts: Vec<AlertRule>,
}

/// A validated SLO file.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSet {
    /// The file it came from, for messages.
    pub file: String,
    /// Service.
    pub service: String,
    /// SLOs in file order.
    pub slos: Vec<Slo>,
}

/// Page and ticket rules given in a file or an SLO; `None` keeps the level above.
type AlertOverrides = (Option<Vec<AlertRule>>, Option<Vec<AlertRule>>);

fn default_alerts() -> Vec<AlertRule> {
    let h = |n: u64| Duration::from_secs(n * 3600);
    let m = |n: u64| Duration::from_secs(n * 60);
    vec![
        AlertRule {
            severity: Severity::Page,
            long: h(1),
            short: m(5),
            burn_rate: 14.4,
        },
        AlertRule {
            severity: Severity::Page,
            long: h(6),
            short: m(30),
            burn_rate: 6.0,
        },
        AlertRule {
            severity: Severity::Ticket,
            long: h(72),
            short: h(6),
            burn_rate: 1.0,
        },
    ]
}

const PLACEHOLDERS: [&str; 3] = ["{{.window_start}}", "{{.window_end}}", "{{.window}}"];

/// Fills the window placeholders of an SLI query.
pub fn bind_window(sql: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    // Windows may be shorter than a second (`500ms`); whole seconds print as before.
    let ms = (end - start).num_milliseconds();
    let secs = match ms % 1000 {
        0 => format!("{}", ms / 1000),
        frac => format!("{}.{:03}", ms / 1000, frac.abs()),
    };
    sql.replace("{{.window_start}}", &sql_timestamp(start))
        .replace("{{.window_end}}", &sql_timestamp(end))
        .replace("{{.window}}", &format!("INTERVAL '{secs} seconds'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
version: custos/v1
service: demo
slos:
  - name: success
    objective: 99
    sli:
      events:
        error_query: SELECT count(*) FROM runs WHERE outcome = 'failure' AND start_time >= {{.window_start}} AND start_time < {{.window_end}}
        total_query: SELECT count(*) FROM runs WHERE start_time >= {{.window_start}} AND start_time < {{.window_end}}
"#;

    #[test]
    fn burning_runs_keep_the_error_querys_relation_and_filter() {
        let set = SloSet::parse(FILE, "slos.yaml").unwrap();
        let (start, end) = (
            DateTime::from_timestamp(0, 0).unwrap(),
            DateTime::from_timestamp(3600, 0).unwrap(),
        );
        let sql = burning_runs_sql(&set.slos[0], start, end, 50).unwrap();
        assert!(
            sql.contains(
                "IN (SELECT run_id FROM runs WHERE outcome = 'failure' AND start_time >= "
            ),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY duration_ms DESC NULLS LAST"),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT 50"), "{sql}");
        for (query, why) in [
            (
                "SELECT count(*) FROM runs GROUP BY workflow",
                "groups its rows",
            ),
            ("SELECT 1 UNION SELECT 2", "plain SELECT"),
            ("WITH x AS (SELECT 1) SELECT count(*) FROM x", "uses WITH"),
            ("SELECT count(*) FROM runs, steps", "exactly one relation"),
        ] {
            let mut slo = set.slos[0].clone();
            slo.error_query = query.into();
            let e = burning_runs_sql(&slo, start, end, 5)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.contains("SLO `success`"), "{e}");
        }
    }

    #[test]
    fn defaults_are_the_workbook_windows() {
        let set = SloSet::parse(FILE, "slos.yaml").unwrap();
        let slo = &set.slos[0];
        assert_eq!(slo.objective, 0.99);
        assert_eq!(slo.period, Duration::from_secs(30 * 86_400));
        assert_eq!(slo.alerts, default_alerts());
    }

    #[test]
    fn errors_name_file_slo_and_field() {
        let cases = [
            (FILE.replace("objective: 99", "objective: 120"), "field `objective`"),
            (FILE.replace("{{.window_start}}", "{{.start}}"), "unknown placeholder `{{.start}}`"),
            (
                FILE.replace(" AND start_time >= {{.window_start}} AND start_time < {{.window_end}}\n        total", "\n        total"),
                "does not use the window",
            ),
            (FILE.replace("name: success", "name: Success!"), "field `name`"),
            (
                FILE.replace("{{.window_end}}\n        total", "{{.wïndöw_énd ünclosed ääääää\n        total"),
                "unknown placeholder",
            ),
            (FILE.replace("objective: 99", "objective: 99\n    burn: 2"), "unknown field `burn`"),
            (
                FILE.replace("objective: 99", "objective: 99\n    alerting:\n      page:\n        - {long: 5m, short: 1h, burn_rate: 2}"),
                "must be shorter",
            ),
        ];
        for (text, want) in cases {
            let e = SloSet::parse(&text, "rules/slos.yaml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("rules/slos.yaml") && e.contains(want),
                "{want}: {e}"
            );
        }
    }

    #[test]
    fn window_binding() {
        let end = DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sql = bind_window(
            "{{.window_start}} {{.window_end}} {{.window}}",
            end - chrono::Duration::hours(1),
            end,
        );
        assert_eq!(
            sql,
            "TIMESTAMP '2026-11-01T23:00:00.000000Z' TIMESTAMP '2026-11-02T00:00:00.000000Z' INTERVAL '3600 seconds'"
        );
    }
}
