//! Rendering an SLO evaluation: a text table, and Prometheus/OpenMetrics gauges named after
//! Sloth's recording rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Severity, Slo, SloReport, SloResult, SloSet};
use crate::metrics::text_table;

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
        slo_samples(&mut families, &r.service, s, def);
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

/// One SLO's samples, by family.
fn slo_samples(
    families: &mut BTreeMap<String, Vec<String>>,
    service: &str,
    s: &SloResult,
    def: &Slo,
) {
    let labels = format!(
        "sloth_id=\"{}-{}\",sloth_service=\"{}\",sloth_slo=\"{}\"",
        esc(service),
        esc(&s.name),
        esc(service),
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

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
