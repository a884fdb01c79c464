//! Change files: what a CI pipeline asks to deploy (a prompt or model version into a workflow),
//! with the canary window to measure, parsed and checked before anything is measured (docs/ci.md).

use std::path::Path;

use chrono::{DateTime, Utc};
use custos_analytics::canary::ChangeKind;
use custos_analytics::duration::parse as parse_duration;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The canary window: either the last `last` before the evaluation time, or `from`..`to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryWindow {
    /// A duration ending at the evaluation time, like `24h` or `90m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Window start (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Window end (RFC 3339; default the evaluation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

/// A change file: what a CI pipeline asks to deploy (YAML or JSON; docs/ci.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeFile {
    /// What changes: `prompt` or `model`.
    pub change: ChangeKind,
    /// The workflow the version is deployed into.
    pub workflow: String,
    /// Only this step's decisions count (for workflows with several decision steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The version serving now.
    pub current: String,
    /// The version asking to be deployed.
    pub candidate: String,
    /// Who asks, as a Cedar entity reference (`Custos::Service::"ci"`, `Custos::User::"ana"`).
    /// Through the API it is the authenticated caller (the field may be left out); a file run
    /// with `custos gate --data` must name it.
    #[serde(default)]
    pub requested_by: String,
    /// The canary window to measure.
    pub canary: CanaryWindow,
    /// Why: a pull request, a ticket; recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ChangeFile {
    /// Parses and checks a change file's text (`source` names it in messages).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let c: ChangeFile = serde_yaml_ng::from_str(text).map_err(|e| {
            Error::Gate(format!(
                "invalid change file `{source}`: {e}; it needs `change` (prompt or model), `workflow`, `current`, `candidate`, `requested_by` and `canary` (docs/ci.md)"
            ))
        })?;
        let bad = |m: String| Err(Error::Gate(format!("invalid change file `{source}`: {m}")));
        for (field, v) in [
            ("workflow", &c.workflow),
            ("current", &c.current),
            ("candidate", &c.candidate),
            ("requested_by", &c.requested_by),
        ] {
            if v.trim().is_empty() {
                return bad(format!("`{field}` is empty"));
            }
        }
        if c.current == c.candidate {
            return bad(format!(
                "`candidate` and `current` are both `{}`; name the version being replaced",
                c.current
            ));
        }
        match (&c.canary.last, &c.canary.from) {
            (Some(_), Some(_)) => {
                return bad("`canary` has both `last` and `from`; give one".into());
            }
            (None, None) => {
                return bad(
                    "`canary` needs `last` (like `24h`) or `from` (and optionally `to`)".into(),
                );
            }
            (Some(last), None) => {
                if c.canary.to.is_some() {
                    return bad("`canary.to` goes with `from`, not with `last`".into());
                }
                if let Err(e) = parse_duration(last) {
                    return bad(format!("`canary.last`: {e}"));
                }
            }
            (None, Some(from)) => {
                if let Some(to) = c.canary.to
                    && to <= *from
                {
                    return bad(format!(
                        "`canary.to` ({to}) is not after `canary.from` ({from})"
                    ));
                }
            }
        }
        Ok(c)
    }

    /// Reads and parses a change file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Gate(format!("cannot read change file `{}`: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The window as instants, given the evaluation time.
    pub fn window(&self, at: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
        if let Some(last) = &self.canary.last {
            let d = parse_duration(last).map_err(|e| Error::Gate(e.to_string()))?;
            let d = chrono::Duration::from_std(d)
                .map_err(|e| Error::Gate(format!("`canary.last` = `{last}`: {e}")))?;
            return Ok((at - d, at));
        }
        let from = self
            .canary
            .from
            .ok_or_else(|| Error::Gate("`canary` needs `last` or `from`".into()))?;
        Ok((from, self.canary.to.unwrap_or(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_files_are_checked() {
        let ok = "change: prompt\nworkflow: w\ncurrent: v1\ncandidate: v2\nrequested_by: 'Custos::Service::\"ci\"'\ncanary: {last: 24h}\n";
        assert!(ChangeFile::parse(ok, "c.yaml").is_ok());
        let e = ChangeFile::parse(&ok.replace("v2", "v1"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("both `v1`"), "{e}");
        let e = ChangeFile::parse(&ok.replace("{last: 24h}", "{}"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("needs `last`"), "{e}");
        let e = ChangeFile::parse(&ok.replace("prompt", "dataset"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("c.yaml"), "{e}");
        let e = ChangeFile::parse(&ok.replace("24h", "a while"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("canary.last"), "{e}");
        let e = ChangeFile::parse(&format!("{ok}colour: red\n"), "c.yaml").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
