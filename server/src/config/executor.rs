//! `[executor]`: the workflows the server runs, where their spans go and how long the journal
//! keeps finished runs' data.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// `[executor]`: the workflows the server runs (`POST /api/runs`) and where their spans go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Directory of workflow definitions (`*.yaml`) the server runs (default `workflows` when it
    /// exists). Without it, `POST /api/runs` answers 503.
    pub workflows: Option<PathBuf>,
    /// OTLP endpoint for the executor's spans (default: this server's own OTLP/HTTP receiver).
    pub otlp: Option<String>,
    /// How long a finished run's data (input, step outputs, effects' answers, review context,
    /// connector payloads) stays in the journal, e.g. `30d` (the default) or `12h`; then it is
    /// cleared and how the run went is kept. docs/privacy.md.
    pub journal_retention: Option<String>,
}

/// The executor's settings, resolved.
#[derive(Debug, Clone, Default)]
pub struct ExecutorSettings {
    /// Directory of workflow definitions, if any.
    pub workflows: Option<PathBuf>,
    /// OTLP endpoint; `None` is the server's own receiver.
    pub otlp: Option<String>,
    /// How long finished runs keep their data in the journal.
    pub journal_retention: Duration,
}

impl ExecutorConfig {
    pub(super) fn validate(&self) -> Result<ExecutorSettings> {
        Ok(ExecutorSettings {
            workflows: match &self.workflows {
                Some(p) if p.is_dir() => Some(p.clone()),
                Some(p) => {
                    return Err(Error::Config(format!(
                        "`executor.workflows` = `{}` is not a directory",
                        p.display()
                    )));
                }
                None => {
                    let d = PathBuf::from("workflows");
                    d.is_dir().then_some(d)
                }
            },
            otlp: self.otlp.clone(),
            journal_retention: match self.journal_retention.as_deref() {
                None => Duration::from_secs(30 * 86_400),
                Some(s) => match custos_analytics::duration::parse(s) {
                    Ok(d) if d >= Duration::from_secs(1) => d,
                    Ok(_) => {
                        return Err(Error::Config(format!(
                            "`executor.journal_retention` = `{s}` must be at least 1s"
                        )));
                    }
                    Err(e) => {
                        return Err(Error::Config(format!("`executor.journal_retention`: {e}")));
                    }
                },
            },
        })
    }
}
