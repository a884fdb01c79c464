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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::metrics::{Rows, format_duration, parse_duration, sql_timestamp, text_table};
use crate::{Analytics, Error, Result};

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
    let secs = (end - start).num_seconds();
    sql.replace("{{.window_start}}", &sql_timestamp(start))
        .replace("{{.window_end}}", &sql_timestamp(end))
        .replace("{{.window}}", &format!("INTERVAL '{secs} seconds'"))
}

impl SloSet {
    /// Reads and validates an SLO file.
    pub fn load(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Rules(format!("`{name}`: cannot read: {e}")))?;
        Self::parse(&text, &name)
    }

    /// Parses and validates SLO-file text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let fail = |m: String| Error::Rules(format!("`{file}`: {m}"));
        let raw: SloFile = serde_yaml_ng::from_str(text).map_err(|e| fail(e.to_string()))?;
        if raw.version != "custos/v1" {
            return Err(fail(format!(
                "unsupported version `{}`; expected `custos/v1`",
                raw.version
            )));
        }
        if raw.service.trim().is_empty() {
            return Err(fail("field `service` must not be empty".into()));
        }
        let alerts_of = |spec: &AlertingSpec, at: &str| -> Result<AlertOverrides> {
            let conv = |list: &Option<Vec<WindowSpec>>,
                        sev: Severity,
                        field: &str|
             -> Result<Option<Vec<AlertRule>>> {
                let Some(list) = list else { return Ok(None) };
                let mut out = Vec::new();
                for (i, w) in list.iter().enumerate() {
                    let here = format!("{at}alerting.{field}[{i}]");
                    let long = parse_duration(&w.long)
                        .map_err(|e| fail(format!("{here}, field `long`: {e}")))?;
                    let short = parse_duration(&w.short)
                        .map_err(|e| fail(format!("{here}, field `short`: {e}")))?;
                    if short >= long {
                        return Err(fail(format!(
                            "{here}: the short window `{}` must be shorter than the long window `{}`",
                            w.short, w.long
                        )));
                    }
                    if !(w.burn_rate.is_finite() && w.burn_rate > 0.0) {
                        return Err(fail(format!(
                            "{here}, field `burn_rate`: `{}` must be a positive number",
                            w.burn_rate
                        )));
                    }
                    out.push(AlertRule {
                        severity: sev,
                        long,
                        short,
                        burn_rate: w.burn_rate,
                    });
                }
                Ok(Some(out))
            };
            Ok((
                conv(&spec.page, Severity::Page, "page")?,
                conv(&spec.ticket, Severity::Ticket, "ticket")?,
            ))
        };
        let (file_page, file_ticket) = match &raw.alerting {
            Some(a) => alerts_of(a, "")?,
            None => (None, None),
        };
        let mut names = BTreeSet::new();
        let mut slos = Vec::new();
        for spec in &raw.slos {
            let at = format!("SLO `{}`", spec.name);
            if spec.name.is_empty()
                || !spec
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            {
                return Err(fail(format!(
                    "{at}, field `name`: use lowercase letters, digits, `-` and `_`"
                )));
            }
            if !names.insert(spec.name.clone()) {
                return Err(fail(format!("{at}: a second SLO has the same name")));
            }
            if !(spec.objective > 0.0 && spec.objective < 100.0) {
                return Err(fail(format!(
                    "{at}, field `objective`: `{}` must be a percentage between 0 and 100 (exclusive), e.g. 99.5",
                    spec.objective
                )));
            }
            let period = match &spec.period {
                Some(p) => {
                    parse_duration(p).map_err(|e| fail(format!("{at}, field `period`: {e}")))?
                }
                None => Duration::from_secs(30 * 86_400),
            };
            for (field, sql) in [
                ("sli.events.error_query", &spec.sli.events.error_query),
                ("sli.events.total_query", &spec.sli.events.total_query),
            ] {
                if sql.trim().is_empty() {
                    return Err(fail(format!("{at}, field `{field}`: must not be empty")));
                }
                if !PLACEHOLDERS.iter().any(|p| sql.contains(p)) {
                    return Err(fail(format!(
                        "{at}, field `{field}`: the query does not use the window; filter with \
                         `{{{{.window_start}}}}` and `{{{{.window_end}}}}` (or `{{{{.window}}}}`)"
                    )));
                }
                let mut rest = sql.as_str();
                while let Some(i) = rest.find("{{") {
                    let tail = &rest[i..];
                    if !PLACEHOLDERS.iter().any(|p| tail.starts_with(p)) {
                        // Up to the closing braces, or 20 characters (on a char boundary).
                        let end = tail.find("}}").map_or_else(
                            || tail.char_indices().nth(20).map_or(tail.len(), |(i, _)| i),
                            |e| e + 2,
                        );
                        return Err(fail(format!(
                            "{at}, field `{field}`: unknown placeholder `{}`; known: {}",
                            &tail[..end],
                            PLACEHOLDERS.join(", ")
                        )));
                    }
                    rest = &tail[2..];
                }
            }
            let (mut page, mut ticket) = (file_page.clone(), file_ticket.clone());
            if let Some(a) = &spec.alerting {
                let (p, t) = alerts_of(a, &format!("{at}, "))?;
                page = p.or(page);
                ticket = t.or(ticket);
            }
            let defaults = default_alerts();
            let mut alerts: Vec<AlertRule> = page.unwrap_or_else(|| {
                defaults
                    .iter()
                    .filter(|a| a.severity == Severity::Page)
                    .cloned()
                    .collect()
            });
            alerts.extend(ticket.unwrap_or_else(|| {
                defaults
                    .iter()
                    .filter(|a| a.severity == Severity::Ticket)
                    .cloned()
                    .collect()
            }));
            slos.push(Slo {
                name: spec.name.clone(),
                objective: spec.objective / 100.0,
                description: spec.description.clone(),
                period,
                error_query: spec.sli.events.error_query.clone(),
                total_query: spec.sli.events.total_query.clone(),
                alerts,
            });
        }
        if slos.is_empty() {
            return Err(fail("field `slos` lists no SLO".into()));
        }
        Ok(Self {
            file: file.to_string(),
            service: raw.service,
            slos,
        })
    }

    /// Plans every query once against the session, so a typo or an unknown column is reported
    /// at load time with the file, SLO and field.
    pub async fn check_sql(&self, analytics: &Analytics) -> Result<()> {
        let end = Utc::now();
        let start = end - chrono::Duration::hours(1);
        for slo in &self.slos {
            for (field, sql) in [
                ("sli.events.error_query", &slo.error_query),
                ("sli.events.total_query", &slo.total_query),
            ] {
                let bound = bind_window(sql, start, end);
                analytics.plan(&bound).await.map_err(|e| {
                    Error::Rules(format!(
                        "`{}`: SLO `{}`, field `{field}`: {e}",
                        self.file, slo.name
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// One window's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Window length, e.g. `1h`.
    pub window: String,
    /// Error events.
    pub errors: f64,
    /// All events.
    pub total: f64,
    /// errors ÷ total; null without events.
    pub error_ratio: Option<f64>,
    /// error ratio ÷ error budget; null without events.
    pub burn_rate: Option<f64>,
}

/// One alert rule's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertResult {
    /// Severity.
    pub severity: Severity,
    /// Long window.
    pub long: String,
    /// Short window.
    pub short: String,
    /// Threshold.
    pub burn_rate_threshold: f64,
    /// Burn rate over the long window.
    pub long_burn_rate: Option<f64>,
    /// Burn rate over the short window.
    pub short_burn_rate: Option<f64>,
    /// Both windows above the threshold.
    pub firing: bool,
}

/// One SLO's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Objective in percent.
    pub objective_percent: f64,
    /// Period, e.g. `30d`.
    pub period: String,
    /// SLI over the period: 1 − error ratio; null without events.
    pub sli: Option<f64>,
    /// Error ratio over the period.
    pub error_ratio: Option<f64>,
    /// 1 − period burn rate: 1 is untouched, 0 spent, below 0 overspent; null without events.
    pub error_budget_remaining: Option<f64>,
    /// Every evaluated window, shortest first.
    pub windows: Vec<WindowResult>,
    /// Alert rules.
    pub alerts: Vec<AlertResult>,
    /// `page`, `ticket`, `ok` or `no_data`.
    pub status: String,
}

/// Evaluation of a whole SLO file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloReport {
    /// Service.
    pub service: String,
    /// Evaluation time (window end), RFC 3339.
    pub at: String,
    /// Per SLO.
    pub slos: Vec<SloResult>,
}

impl SloReport {
    /// Whether any page alert fires.
    pub fn paging(&self) -> bool {
        self.slos.iter().any(|s| s.status == "page")
    }
}

async fn number(
    analytics: &Analytics,
    sql: &str,
    set: &SloSet,
    slo: &Slo,
    field: &str,
) -> Result<f64> {
    let at = |m: String| {
        Error::Rules(format!(
            "`{}`: SLO `{}`, field `{field}`: {m}",
            set.file, slo.name
        ))
    };
    let result = analytics.query(sql).await.map_err(|e| at(e.to_string()))?;
    if result.schema.fields().len() != 1 || result.num_rows() != 1 {
        return Err(at(format!(
            "the query must return one row with one number, got {} rows of {} columns",
            result.num_rows(),
            result.schema.fields().len()
        )));
    }
    let name = result.schema.field(0).name().clone();
    let mut value = None;
    Rows::new(&result).each(|r| value = Some(r.f64(&name)));
    match value {
        Some(Some(v)) if v.is_finite() => Ok(v),
        // SUM over no rows is NULL: no events.
        Some(None) => Ok(0.0),
        _ => Err(at("the query must return a finite number".into())),
    }
}

/// The SQL listing the runs an SLO's error query counts in `[start, end)`, slowest first: the
/// drill-down from an SLO to the runs that burned its budget (`GET /api/slo/{name}/runs`,
/// `custos top`).
///
/// The error query must be one `SELECT … FROM … [WHERE …]` without `WITH`, `GROUP BY`, `HAVING`
/// or set operations, over a relation with a `run_id` column (`runs`, `steps`, `decisions`,
/// `spans`); its runs are those of the rows its `FROM` and `WHERE` keep. For an SLI that sums a
/// quantity (cost) rather than counting events, that is every run contributing to the sum.
pub fn burning_runs_sql(
    slo: &Slo,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Result<String> {
    use datafusion::sql::sqlparser::ast::{GroupByExpr, SetExpr, Statement};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    let bound = bind_window(&slo.error_query, start, end);
    let unsupported = |why: &str| {
        Error::Plan(format!(
            "the error query of SLO `{}` {why}, so the runs that burned its budget cannot be \
             listed; write it as `SELECT count(*) FROM <view with run_id> WHERE <bad event>`",
            slo.name
        ))
    };
    let statements = Parser::parse_sql(&GenericDialect {}, &bound)
        .map_err(|e| Error::Syntax(format!("error query of SLO `{}`: {e}", slo.name)))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(unsupported("is not a single SELECT"));
    };
    if query.with.is_some() {
        return Err(unsupported("uses WITH"));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(unsupported(
            "is not a plain SELECT (set operation or VALUES)",
        ));
    };
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
    };
    if grouped || select.having.is_some() {
        return Err(unsupported("groups its rows"));
    }
    let [from] = select.from.as_slice() else {
        return Err(unsupported("does not read exactly one relation"));
    };
    let filter = select
        .selection
        .as_ref()
        .map(|w| w.to_string())
        .unwrap_or_else(|| "true".into());
    Ok(format!(
        "SELECT run_id, workflow, outcome, duration_ms, cost_usd, \
         CAST(start_time AS VARCHAR) AS start_time, trace_id \
         FROM runs WHERE run_id IN (SELECT run_id FROM {from} WHERE {filter}) \
         ORDER BY duration_ms DESC NULLS LAST, start_time DESC LIMIT {limit}"
    ))
}

/// Evaluates every SLO at `at`.
///
/// `runs` and `decisions` are computed once for the whole evaluation
/// ([`Analytics::with_materialized`]): every SLO over every window then reads them from memory,
/// and all SLOs see the same data.
pub async fn evaluate(analytics: &Analytics, set: &SloSet, at: DateTime<Utc>) -> Result<SloReport> {
    let texts: Vec<&str> = set
        .slos
        .iter()
        .flat_map(|s| [s.error_query.as_str(), s.total_query.as_str()])
        .collect();
    let mentions = |word: &str| texts.iter().any(|t| contains_word(t, word));
    let mut views: Vec<(&str, Option<Vec<String>>)> = Vec::new();
    for view in ["runs", "decisions"] {
        if !mentions(view) {
            continue;
        }
        let schema = analytics
            .context()
            .table(view)
            .await
            .map_err(|e| Error::Setup(e.to_string()))?
            .schema()
            .as_arrow()
            .clone();
        let mut columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|c| mentions(c))
            .collect();
        if columns.is_empty() {
            // `SELECT count(*) FROM runs` still needs a column to count rows of.
            columns.push("run_id".into());
        }
        views.push((view, Some(columns)));
    }
    let materialized = analytics.with_materialized(&views).await?;
    let analytics = &materialized;
    let mut slos = Vec::new();
    for slo in &set.slos {
        let budget = 1.0 - slo.objective;
        let mut windows: BTreeMap<Duration, WindowResult> = BTreeMap::new();
        let mut needed: BTreeSet<Duration> = BTreeSet::new();
        needed.insert(slo.period);
        for a in &slo.alerts {
            needed.insert(a.long);
            needed.insert(a.short);
        }
        for w in needed {
            let start = at - chrono::Duration::from_std(w).unwrap_or(chrono::Duration::zero());
            let errors = number(
                analytics,
                &bind_window(&slo.error_query, start, at),
                set,
                slo,
                "sli.events.error_query",
            )
            .await?;
            let total = number(
                analytics,
                &bind_window(&slo.total_query, start, at),
                set,
                slo,
                "sli.events.total_query",
            )
            .await?;
            let error_ratio = (total > 0.0).then(|| errors / total);
            windows.insert(
                w,
                WindowResult {
                    window: format_duration(w),
                    errors,
                    total,
                    error_ratio,
                    burn_rate: error_ratio.map(|r| r / budget),
                },
            );
        }
        let burn = |w: &Duration| windows.get(w).and_then(|r| r.burn_rate);
        let alerts: Vec<AlertResult> = slo
            .alerts
            .iter()
            .map(|a| {
                let (l, s) = (burn(&a.long), burn(&a.short));
                AlertResult {
                    severity: a.severity,
                    long: format_duration(a.long),
                    short: format_duration(a.short),
                    burn_rate_threshold: a.burn_rate,
                    long_burn_rate: l,
                    short_burn_rate: s,
                    firing: l.is_some_and(|l| l > a.burn_rate)
                        && s.is_some_and(|s| s > a.burn_rate),
                }
            })
            .collect();
        let period = windows.get(&slo.period).cloned();
        let error_ratio = period.as_ref().and_then(|p| p.error_ratio);
        let status = if alerts
            .iter()
            .any(|a| a.firing && a.severity == Severity::Page)
        {
            "page"
        } else if alerts.iter().any(|a| a.firing) {
            "ticket"
        } else if error_ratio.is_none() {
            "no_data"
        } else {
            "ok"
        };
        slos.push(SloResult {
            name: slo.name.clone(),
            description: slo.description.clone(),
            objective_percent: slo.objective * 100.0,
            period: format_duration(slo.period),
            sli: error_ratio.map(|r| 1.0 - r),
            error_ratio,
            error_budget_remaining: period.as_ref().and_then(|p| p.burn_rate).map(|b| 1.0 - b),
            windows: windows.into_values().collect(),
            alerts,
            status: status.to_string(),
        });
    }
    Ok(SloReport {
        service: set.service.clone(),
        at: at.to_rfc3339(),
        slos,
    })
}

/// Whether `word` occurs in `text` as a whole identifier.
fn contains_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Renders the report as text.
pub fn render_table(r: &SloReport) -> String {
    let mut out = format!("service {} at {}\n\n", r.service, r.at);
    let pc = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{:.d$}%", v * 100.0));
    let rows: Vec<Vec<String>> = r
        .slos
        .iter()
        .map(|s| {
            let firing: Vec<String> = s
                .alerts
                .iter()
                .filter(|a| a.firing)
                .map(|a| format!("{:?} {}/{}", a.severity, a.long, a.short).to_lowercase())
                .collect();
            let short = s.windows.first().and_then(|w| w.burn_rate);
            vec![
                s.name.clone(),
                format!("{}%", s.objective_percent),
                s.period.clone(),
                pc(s.sli, 3),
                pc(s.error_budget_remaining, 1),
                short.map_or("-".into(), |b| format!("{b:.2}x")),
                s.status.clone(),
                firing.join(", "),
            ]
        })
        .collect();
    out.push_str(&text_table(
        &[
            "slo",
            "objective",
            "period",
            "sli",
            "budget left",
            "burn (shortest)",
            "status",
            "firing",
        ],
        &rows,
    ));
    out
}

/// Prometheus/OpenMetrics gauges named after Sloth's recording rules, so existing SLO dashboards
/// fit: `slo:sli_error:ratio_rate<window>`, `slo:objective:ratio`, `slo:error_budget:ratio`,
/// `slo:time_period:days`, `slo:current_burn_rate:ratio`, `slo:period_burn_rate:ratio`,
/// `slo:period_error_budget_remaining:ratio`, `sloth_slo_info`, plus `custos_slo_alert_firing`.
pub fn render_prometheus(r: &SloReport, set: &SloSet) -> String {
    let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (s, def) in r.slos.iter().zip(&set.slos) {
        let labels = format!(
            "sloth_id=\"{}-{}\",sloth_service=\"{}\",sloth_slo=\"{}\"",
            esc(&r.service),
            esc(&s.name),
            esc(&r.service),
            esc(&s.name)
        );
        let mut put = |name: &str, extra: &str, v: Option<f64>| {
            if let Some(v) = v {
                families
                    .entry(name.to_string())
                    .or_default()
                    .push(format!("{name}{{{labels}{extra}}} {v}"));
            }
        };
        for w in &s.windows {
            put(
                &format!("slo:sli_error:ratio_rate{}", w.window),
                "",
                w.error_ratio,
            );
        }
        put("slo:objective:ratio", "", Some(def.objective));
        put("slo:error_budget:ratio", "", Some(1.0 - def.objective));
        put(
            "slo:time_period:days",
            "",
            Some(def.period.as_secs_f64() / 86_400.0),
        );
        put(
            "slo:current_burn_rate:ratio",
            "",
            s.windows.first().and_then(|w| w.burn_rate),
        );
        let period = s.windows.iter().find(|w| w.window == s.period);
        put(
            "slo:period_burn_rate:ratio",
            "",
            period.and_then(|w| w.burn_rate),
        );
        put(
            "slo:period_error_budget_remaining:ratio",
            "",
            s.error_budget_remaining,
        );
        put(
            "sloth_slo_info",
            &format!(
                ",sloth_mode=\"custos\",sloth_objective=\"{}\"",
                s.objective_percent
            ),
            Some(1.0),
        );
        for a in &s.alerts {
            put(
                "custos_slo_alert_firing",
                &format!(
                    ",severity=\"{}\",long=\"{}\",short=\"{}\"",
                    if a.severity == Severity::Page {
                        "page"
                    } else {
                        "ticket"
                    },
                    a.long,
                    a.short
                ),
                Some(if a.firing { 1.0 } else { 0.0 }),
            );
        }
    }
    let mut out = String::new();
    for (name, samples) in families {
        let _ = writeln!(out, "# TYPE {name} gauge");
        for s in samples {
            let _ = writeln!(out, "{s}");
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
