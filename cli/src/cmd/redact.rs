//! `custos redact test FILE`: the redaction rules run on an OTLP/JSON file, printing what they
//! would change, for writing rules without sending data anywhere.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use custos_redact::{PseudonymKey, Redactor};

use super::user;

#[derive(clap::Subcommand)]
pub enum RedactCommand {
    /// Run the rules on an OTLP/JSON export (`ExportTraceServiceRequest`) and print every value
    /// they change: before (`-`) and after (`+`), and the counts by rule and action. Nothing is
    /// written.
    Test {
        /// The OTLP/JSON file.
        file: PathBuf,
        /// Redaction rules [default: rules/redaction.yaml if present, else the shipped defaults].
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Data directory whose pseudonym key `hash` uses (so pseudonyms match the server's);
        /// without it a throwaway key is used.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

/// Runs `custos redact ...`.
pub fn run(what: RedactCommand) -> Result<ExitCode> {
    match what {
        RedactCommand::Test { file, rules, data } => test(&file, rules, data.as_deref()),
    }
}

fn test(file: &Path, rules: Option<PathBuf>, data: Option<&Path>) -> Result<ExitCode> {
    let key = match data {
        Some(d) => PseudonymKey::existing(d).map_err(user)?.ok_or_else(|| {
            user(format!(
                "`{}` has no pseudonym key yet (a server makes it on first start)",
                d.display()
            ))
        })?,
        None => PseudonymKey::ephemeral().map_err(user)?,
    };
    let rules = rules.or_else(|| {
        let d = PathBuf::from("rules/redaction.yaml");
        d.is_file().then_some(d)
    });
    let redactor = match &rules {
        Some(p) => Redactor::load(p, key),
        None => Redactor::defaults(key),
    }
    .map_err(user)?;
    let text = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let before: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
        serde_json::from_slice(&text).map_err(|e| {
            user(format!(
                "`{}` is not an OTLP/JSON ExportTraceServiceRequest (line {}, column {}): {e}",
                file.display(),
                e.line(),
                e.column()
            ))
        })?;
    let mut after = before.clone();
    redactor.request(&mut after);
    let changes = custos_redact::report::changes(&before, &after);
    for c in &changes {
        println!("{}", c.place);
        println!("  - {}", c.before);
        match &c.after {
            Some(a) => println!("  + {a}"),
            None => println!("  + (attribute dropped)"),
        }
    }
    let spans: usize = before
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    println!(
        "{} value(s) changed in {spans} span(s) with {}",
        changes.len(),
        rules.map_or("the shipped defaults".to_string(), |p| format!(
            "`{}`",
            p.display()
        ))
    );
    for (rule, action, n) in redactor.counts().snapshot() {
        println!("  {rule}: {action} {n}");
    }
    if data.is_none() {
        println!("(pseudonyms use a throwaway key; pass --data DIR for the server's)");
    }
    Ok(ExitCode::SUCCESS)
}
