//! Route steps (jumps on conditions over the input and earlier outputs) and transform steps
//! (`set: {field: path}`), with the lookups and comparisons they share.

use serde_json::{Value, json};

use super::Executor;
use crate::Result;
use crate::journal::RunRecord;
use crate::workflow::{StepFile, Workflow};

impl Executor {
    /// Jumps to the step the route's conditions choose.
    pub(super) async fn route_step(
        &self,
        w: &Workflow,
        step: &StepFile,
        r: &mut RunRecord,
    ) -> Result<()> {
        let steps = &w.file.steps;
        let target = route(w, step, r);
        r.outputs
            .insert(step.id.clone(), json!({ "goto": steps[target].id }));
        r.cursor = target;
        r.attempt = 1;
        self.save(r).await
    }

    /// Shapes the step's output from the input and earlier outputs.
    pub(super) async fn transform_step(&self, step: &StepFile, r: &mut RunRecord) -> Result<()> {
        let mut out = serde_json::Map::new();
        for (field, path) in &step.set {
            out.insert(field.clone(), lookup(r, path).unwrap_or(Value::Null));
        }
        r.outputs.insert(step.id.clone(), Value::Object(out));
        r.cursor += 1;
        r.attempt = 1;
        self.save(r).await
    }
}

/// Reads `input.FIELD`, `STEP.FIELD` or `STEP.output.FIELD` from a run.
fn lookup(r: &RunRecord, path: &str) -> Option<Value> {
    let mut parts = path.split('.');
    let head = parts.next()?;
    let mut v = if head == "input" {
        &r.input
    } else {
        r.outputs.get(head)?
    };
    for p in parts {
        v = v.get(p)?;
    }
    Some(v.clone())
}

fn compare(left: &Value, op: &str, right: &Value) -> bool {
    if let (Some(a), Some(b)) = (left.as_f64(), right.as_f64()) {
        return match op {
            ">=" => a >= b,
            ">" => a > b,
            "<=" => a <= b,
            "<" => a < b,
            "==" => a == b,
            _ => a != b,
        };
    }
    match op {
        "==" => left == right,
        "!=" => left != right,
        _ => match (left.as_str(), right.as_str()) {
            (Some(a), Some(b)) => match op {
                ">=" => a >= b,
                ">" => a > b,
                "<=" => a <= b,
                _ => a < b,
            },
            _ => false,
        },
    }
}

/// The step a route goes to.
fn route(w: &Workflow, step: &StepFile, r: &RunRecord) -> usize {
    let target = step
        .when
        .iter()
        .find(|rule| lookup(r, &rule.field).is_some_and(|v| compare(&v, &rule.op, &rule.value)))
        .map(|rule| rule.goto.as_str())
        .or(step.default.as_deref())
        .unwrap_or_default();
    w.file
        .steps
        .iter()
        .position(|s| s.id == target)
        .unwrap_or(w.file.steps.len())
}
