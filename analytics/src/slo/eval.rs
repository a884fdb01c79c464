//! Evaluating an SLO file at a moment: each SLO's windows (errors, totals, error ratios, burn
//! rates), its alert rules and status, over views computed once; and the drill-down SQL listing
//! the runs that burned an SLO's budget.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Severity, Slo, SloSet, bind_window};
use crate::duration::format as format_duration;
use crate::metrics::Rows;
use crate::{Analytics, Error, Result};

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
    let materialized = materialize(analytics, set).await?;
    let analytics = &materialized;
    let mut slos = Vec::new();
    for slo in &set.slos {
        slos.push(evaluate_slo(analytics, set, slo, at).await?);
    }
    Ok(SloReport {
        service: set.service.clone(),
        at: at.to_rfc3339(),
        slos,
    })
}

/// A session with the views the SLO queries mention (`runs`, `decisions`) computed once, with
/// only the columns they mention.
async fn materialize(analytics: &Analytics, set: &SloSet) -> Result<Analytics> {
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
    analytics.with_materialized(&views).await
}

/// One SLO at `at`: its windows, alerts and status.
async fn evaluate_slo(
    analytics: &Analytics,
    set: &SloSet,
    slo: &Slo,
    at: DateTime<Utc>,
) -> Result<SloResult> {
    let windows = evaluate_windows(analytics, set, slo, at).await?;
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
                firing: l.is_some_and(|l| l > a.burn_rate) && s.is_some_and(|s| s > a.burn_rate),
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
    Ok(SloResult {
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
    })
}

/// Errors, totals, error ratios and burn rates over the SLO's period and every alert window.
async fn evaluate_windows(
    analytics: &Analytics,
    set: &SloSet,
    slo: &Slo,
    at: DateTime<Utc>,
) -> Result<BTreeMap<Duration, WindowResult>> {
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
    Ok(windows)
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
