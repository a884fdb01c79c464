//! `custos audit verify|report`: the audit trail's integrity and the compliance report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use custos_server::RulesOptions;

use super::{check_format, require_dir, user};
use crate::flags::AuditCommand;

/// Runs `custos audit ...`.
pub async fn run(what: AuditCommand) -> Result<ExitCode> {
    match what {
        AuditCommand::Verify {
            data,
            anchor,
            format,
        } => audit_verify(data, anchor.as_deref(), &format),
        AuditCommand::Report {
            from,
            to,
            out,
            format,
            data,
            slos,
            prices,
        } => audit_report(&from, &to, &out, &format, data, slos, prices).await,
    }
}

/// A report bound: a date is a whole UTC day (its start, or for `end` the next day's start).
fn report_bound(s: &str, flag: &str, end: bool) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => {
            let d = if end { d + chrono::Days::new(1) } else { d };
            Ok(d.and_time(chrono::NaiveTime::MIN).and_utc())
        }
        Err(_) => Err(user(format!(
            "`{flag} {s}` is neither a date like 2026-11-01 nor an RFC 3339 time like 2026-11-01T00:00:00Z"
        ))),
    }
}

async fn audit_report(
    from: &str,
    to: &str,
    out: &std::path::Path,
    format: &str,
    data: Option<PathBuf>,
    slos: Option<PathBuf>,
    prices: Option<PathBuf>,
) -> Result<ExitCode> {
    use custos_governance::report::{ReportFormat, write};
    let formats = ReportFormat::parse_list(format).map_err(user)?;
    let (from, to) = (
        report_bound(from, "--from", false)?,
        report_bound(to, "--to", true)?,
    );
    if to <= from {
        return Err(user("`--to` must be after `--from`"));
    }
    let dir = require_dir(data)?;
    let rules = custos_server::Rules::load(&RulesOptions::resolve(prices, slos).map_err(user)?)
        .map_err(user)?;
    let report = custos_server::report_offline(&dir, &rules, from, to).await?;
    let files = write(&report, out, &formats)?;
    println!(
        "audit report {} .. {} written to {}:",
        from.to_rfc3339(),
        to.to_rfc3339(),
        out.display()
    );
    for f in &files {
        println!("  {:<20} {:>9} bytes  sha256 {}", f.file, f.bytes, f.sha256);
    }
    println!("  manifest.json (lists them, with the audit chain's last hash)");
    if !report.integrity.ok() {
        eprintln!("warning: the audit log failed verification; the report says where");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn audit_verify(data: Option<PathBuf>, anchor: Option<&str>, format: &str) -> Result<ExitCode> {
    check_format(format, &["text", "json"])?;
    let dir = require_dir(data)?;
    let v = custos_audit::verify_anchored(&custos_server::audit_dir(&dir), anchor)?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match &v.finding {
            None => {
                println!(
                    "audit log `{}`: {} record(s), chain intact; last record {} ({})",
                    v.path.display(),
                    v.records,
                    v.last_seq,
                    v.last_hash
                );
                match &v.signed_by {
                    Some(k) => println!("head signed by ed25519 key {k}"),
                    None => println!(
                        "head not signed (a log from before signing; the next record signs it)"
                    ),
                }
                if let Some(a) = &v.anchor {
                    println!("anchor {a} is in the log");
                }
                if v.partial_tail {
                    println!(
                        "note: the log ends in a partial record left by a crash; it was never acknowledged and the next writer removes it"
                    );
                }
            }
            Some(f) => {
                println!(
                    "audit log `{}`: TAMPERED: {} (checked {} intact record(s) before it)",
                    v.path.display(),
                    f.message,
                    v.records
                );
            }
        }
    }
    Ok(if v.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
