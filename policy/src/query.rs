//! What callers ask of a loaded policy set without speaking Cedar: the policies that govern an
//! action (with where they are written), a policy's text, and the metrics a policy reads. The deploy
//! gate uses these to list its `deploy` policies and to show the measured values that mattered.

use crate::Policies;
use crate::engine::Engine;

/// A policy that governs an action, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoverningPolicy {
    /// Its `@id`.
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// Its `@advice`.
    pub advice: Option<String>,
    /// Its file, relative to the policy directory (empty when unknown).
    pub file: String,
    /// The line of its `@id` (0 when unknown).
    pub line: usize,
}

impl Policies {
    /// The ids of every policy of the set, in the set's order.
    pub fn ids(&self) -> Vec<String> {
        self.set.policies().map(|p| p.id().to_string()).collect()
    }

    /// The policies that name the action `action` (like `deploy`), sorted by file and line.
    ///
    /// A policy names it when an entity literal `…Action::"ACTION"` (of any namespace) occurs in
    /// it: Cedar's `entity_literals` covers the scope (`action == Custos::Action::"deploy"`,
    /// `action in [...]`) and the `when`/`unless` conditions alike, so a policy that narrows an
    /// unconstrained scope with a condition on the action counts too.
    pub fn for_action(&self, action: &str) -> Vec<GoverningPolicy> {
        let mut out: Vec<GoverningPolicy> = self
            .set
            .policies()
            .filter(|pol| {
                pol.entity_literals().iter().any(|uid| {
                    uid.type_name().basename() == "Action" && uid.id().unescaped() == action
                })
            })
            .map(|pol| {
                let id = pol.id().to_string();
                let (file, line) = self
                    .locations
                    .get(&id)
                    .map(|(f, l, _)| {
                        (
                            f.strip_prefix(&self.dir).unwrap_or(f).display().to_string(),
                            *l,
                        )
                    })
                    .unwrap_or_default();
                GoverningPolicy {
                    effect: pol.effect().to_string(),
                    advice: pol.annotation("advice").map(str::to_string),
                    id,
                    file,
                    line,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        out
    }

    /// The text of the policy `id`, as Cedar prints it; `None` when the set has no such policy.
    pub fn text(&self, id: &str) -> Option<String> {
        self.set
            .policy(&cedar_policy::PolicyId::new(id))
            .map(|p| p.to_string())
    }
}

impl Engine {
    /// The policies of the engine's set that name the action `action`: see
    /// [`Policies::for_action`].
    pub fn policies_for_action(&self, action: &str) -> Vec<GoverningPolicy> {
        self.policies().for_action(action)
    }

    /// The metrics (fields of `context.metrics`) the policy `id` reads, in the order they first
    /// occur; empty when the set has no such policy.
    pub fn metrics_read(&self, id: &str) -> Vec<String> {
        self.policies()
            .text(id)
            .map(|t| metrics_read(&t))
            .unwrap_or_default()
    }
}

/// Metrics read by a policy: every `context.metrics.NAME` in its text, in order of first
/// occurrence.
///
/// This reads the policy's text rather than its parsed form on purpose: the gate shows the values
/// in the order the policy's author wrote them, and Cedar's JSON form of a policy (the only public
/// view of its conditions) orders the parts of an expression by key name, not by position.
pub fn metrics_read(policy_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = "context.metrics.";
    let mut rest = policy_text;
    while let Some(i) = rest.find(needle) {
        rest = &rest[i + needle.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_name_the_metrics_they_read() {
        let t = "forbid (principal, action, resource) when { context.metrics.a_b.greaterThan(decimal(\"1\")) || context.metrics.c < 3 || context.metrics.a_b == 1 };";
        assert_eq!(metrics_read(t), vec!["a_b".to_string(), "c".to_string()]);
    }
}
