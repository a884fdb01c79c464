//! `custos wal check` and `custos wal salvage`: a damaged write-ahead log, read and repaired
//! (docs/operations.md, "The WAL is damaged").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use custos_store::Store;
use custos_store::wal::salvage::Report;

use super::user;

#[derive(clap::Subcommand)]
pub enum WalCommand {
    /// Read the WAL, skipping damage, and say what is damaged and what a salvage would keep.
    /// Changes nothing (a running server may hold the directory). Exits 0 when the log opens as
    /// it is, 1 when it is damaged.
    Check {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keep every readable record above the table's watermark in a new log, and move the
    /// damaged segments to `DATA/wal.damaged-UNIX`. The server must be stopped.
    Salvage {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

/// Runs `custos wal ...`.
pub async fn run(what: WalCommand) -> Result<ExitCode> {
    match what {
        WalCommand::Check { data, json } => check(&data, json),
        WalCommand::Salvage { data } => salvage(&data).await,
    }
}

fn describe(report: &Report) -> String {
    let mut out = String::new();
    for s in &report.segments {
        let seqs = s.seqs.map_or("no records".to_string(), |(a, b)| {
            format!("sequence {a}..={b}")
        });
        out.push_str(&format!(
            "{}: {} readable records, {seqs}\n",
            s.path.display(),
            s.records
        ));
        for d in &s.damage {
            match (d.to_byte, d.lost) {
                (Some(to), Some((a, b))) => out.push_str(&format!(
                    "  damaged bytes {}..{to}: records {a}..={b} lost\n",
                    d.from_byte
                )),
                (Some(to), None) => {
                    out.push_str(&format!("  damaged bytes {}..{to}\n", d.from_byte))
                }
                (None, _) => out.push_str(&format!(
                    "  unreadable from byte {} to the end (a torn tail when it is the newest \
                     segment: never acknowledged)\n",
                    d.from_byte
                )),
            }
        }
    }
    out
}

fn check(data: &Path, json: bool) -> Result<ExitCode> {
    let report = Store::check_wal(data).map_err(user)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", describe(&report));
        if report.is_clean() {
            println!("the WAL opens as it is");
        } else {
            println!(
                "the WAL is damaged: {} record(s) lost; `custos wal salvage --data {}` keeps \
                 the rest (stop the server first)",
                report.lost(),
                data.display()
            );
        }
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn salvage(data: &Path) -> Result<ExitCode> {
    let done = Store::salvage_wal(data).await.map_err(user)?;
    print!("{}", describe(&done.report));
    println!(
        "kept {} record(s) above the table's watermark, {} lost; the damaged segments are in {}",
        done.kept,
        done.report.lost(),
        done.damaged.display()
    );
    Ok(ExitCode::SUCCESS)
}
