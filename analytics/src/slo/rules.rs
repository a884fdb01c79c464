//! Reading and validating an SLO file: names, objectives, periods, the SLI queries' window
//! placeholders and the alert windows (file-level, per SLO, or the defaults); and planning every
//! query once against a session.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;

use super::{
    AlertOverrides, AlertRule, AlertingSpec, PLACEHOLDERS, Severity, Slo, SloFile, SloSet, SloSpec,
    WindowSpec, bind_window, default_alerts,
};
use crate::duration::parse as parse_duration;
use crate::{Analytics, Error, Result};

/// Makes an error naming the file.
type Fail<'a> = &'a dyn Fn(String) -> Error;

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
        let file_alerts = match &raw.alerting {
            Some(a) => alerts_of(a, "", &fail)?,
            None => (None, None),
        };
        let mut names = BTreeSet::new();
        let mut slos = Vec::new();
        for spec in &raw.slos {
            slos.push(slo_of(spec, &mut names, &file_alerts, &fail)?);
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

/// Validates one SLO; `names` are those of the SLOs before it.
fn slo_of(
    spec: &SloSpec,
    names: &mut BTreeSet<String>,
    file_alerts: &AlertOverrides,
    fail: Fail<'_>,
) -> Result<Slo> {
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
        Some(p) => parse_duration(p).map_err(|e| fail(format!("{at}, field `period`: {e}")))?,
        None => Duration::from_secs(30 * 86_400),
    };
    for (field, sql) in [
        ("sli.events.error_query", &spec.sli.events.error_query),
        ("sli.events.total_query", &spec.sli.events.total_query),
    ] {
        check_query(&at, field, sql, fail)?;
    }
    let alerts = alerts_for(spec, &at, file_alerts, fail)?;
    Ok(Slo {
        name: spec.name.clone(),
        objective: spec.objective / 100.0,
        description: spec.description.clone(),
        period,
        error_query: spec.sli.events.error_query.clone(),
        total_query: spec.sli.events.total_query.clone(),
        alerts,
    })
}

/// An SLI query must not be empty, must use the window and no unknown placeholder.
fn check_query(at: &str, field: &str, sql: &str, fail: Fail<'_>) -> Result<()> {
    if sql.trim().is_empty() {
        return Err(fail(format!("{at}, field `{field}`: must not be empty")));
    }
    if !PLACEHOLDERS.iter().any(|p| sql.contains(p)) {
        return Err(fail(format!(
            "{at}, field `{field}`: the query does not use the window; filter with \
             `{{{{.window_start}}}}` and `{{{{.window_end}}}}` (or `{{{{.window}}}}`)"
        )));
    }
    let mut rest = sql;
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
    Ok(())
}

/// The SLO's alert rules: its own page and ticket windows, else the file's, else the defaults.
fn alerts_for(
    spec: &SloSpec,
    at: &str,
    file_alerts: &AlertOverrides,
    fail: Fail<'_>,
) -> Result<Vec<AlertRule>> {
    let (mut page, mut ticket) = file_alerts.clone();
    if let Some(a) = &spec.alerting {
        let (p, t) = alerts_of(a, &format!("{at}, "), fail)?;
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
    Ok(alerts)
}

/// The page and ticket rules an `alerting` block gives; `at` prefixes the field in errors.
fn alerts_of(spec: &AlertingSpec, at: &str, fail: Fail<'_>) -> Result<AlertOverrides> {
    Ok((
        rules_of(&spec.page, Severity::Page, "page", at, fail)?,
        rules_of(&spec.ticket, Severity::Ticket, "ticket", at, fail)?,
    ))
}

/// The validated rules of one severity's window list, if given.
fn rules_of(
    list: &Option<Vec<WindowSpec>>,
    sev: Severity,
    field: &str,
    at: &str,
    fail: Fail<'_>,
) -> Result<Option<Vec<AlertRule>>> {
    let Some(list) = list else { return Ok(None) };
    let mut out = Vec::new();
    for (i, w) in list.iter().enumerate() {
        let here = format!("{at}alerting.{field}[{i}]");
        let long =
            parse_duration(&w.long).map_err(|e| fail(format!("{here}, field `long`: {e}")))?;
        let short =
            parse_duration(&w.short).map_err(|e| fail(format!("{here}, field `short`: {e}")))?;
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
}
