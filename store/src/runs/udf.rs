//! The aliases as DataFusion functions: `custos_run_of(trace_id, run_id)`, a span's run id with
//! them applied; `custos_workflow_of(trace_id, run_id, workflow)`, its workflow likewise; and
//! `custos_run_aliased(trace_id, run_id)`, whether one applies (the fold's predicate). Their SQL
//! forms name no trace, run or workflow.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::{Ident, trace_key};

/// What the function answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    /// The run id, resolved.
    Run,
    /// The workflow, resolved.
    Workflow,
    /// Whether an alias applies.
    Aliased,
}

/// The aliases as a DataFusion function (see the module docs).
#[derive(Debug)]
pub struct RunOf {
    aliases: Arc<HashMap<u128, Ident>>,
    answer: Answer,
    signature: Signature,
}

impl PartialEq for RunOf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.aliases, &other.aliases) && self.answer == other.answer
    }
}
impl Eq for RunOf {}
impl std::hash::Hash for RunOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.answer.hash(state);
        self.aliases.len().hash(state);
    }
}

impl RunOf {
    /// `custos_run_of` over `aliases`.
    pub fn run(aliases: Arc<HashMap<u128, Ident>>) -> ScalarUDF {
        Self::udf(aliases, Answer::Run)
    }

    /// `custos_workflow_of` over `aliases`.
    pub fn workflow(aliases: Arc<HashMap<u128, Ident>>) -> ScalarUDF {
        Self::udf(aliases, Answer::Workflow)
    }

    /// `custos_run_aliased` over `aliases`.
    pub fn aliased(aliases: Arc<HashMap<u128, Ident>>) -> ScalarUDF {
        Self::udf(aliases, Answer::Aliased)
    }

    fn udf(aliases: Arc<HashMap<u128, Ident>>, answer: Answer) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            aliases,
            answer,
            signature: Signature::any(
                if answer == Answer::Workflow { 3 } else { 2 },
                Volatility::Immutable,
            ),
        })
    }

    /// The rows that carried no run id and whose trace has an alias, with the alias.
    fn hits<'a>(&'a self, trace: &Strs<'_>, run: &Strs<'_>, len: usize) -> Vec<(usize, &'a Ident)> {
        let mut out = Vec::new();
        if self.aliases.is_empty() {
            return out;
        }
        for i in 0..len {
            if let (Some(t), Some(r)) = (trace.get(i), run.get(i))
                && t == r
                && let Some(a) = trace_key(t).and_then(|k| self.aliases.get(&k))
            {
                out.push((i, a));
            }
        }
        out
    }
}

/// A string column of any of Arrow's string types.
enum Strs<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
}

impl<'a> Strs<'a> {
    fn of(a: &'a ArrayRef) -> DfResult<Self> {
        Ok(match a.data_type() {
            DataType::Utf8 => Self::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Self::Large(a.as_string::<i64>()),
            DataType::Utf8View => Self::View(a.as_string_view()),
            other => return exec_err!("custos_run_of takes strings, not {other}"),
        })
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Self::Utf8(a) => (!a.is_null(i)).then(|| a.value(i)),
            Self::Large(a) => (!a.is_null(i)).then(|| a.value(i)),
            Self::View(a) => (!a.is_null(i)).then(|| a.value(i)),
        }
    }
}

impl ScalarUDFImpl for RunOf {
    fn name(&self) -> &str {
        match self.answer {
            Answer::Run => "custos_run_of",
            Answer::Workflow => "custos_workflow_of",
            Answer::Aliased => "custos_run_aliased",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let of = match self.answer {
            Answer::Aliased => return Ok(DataType::Boolean),
            Answer::Run => args.get(1),
            Answer::Workflow => args.get(2),
        };
        match of {
            Some(t) => Ok(t.clone()),
            None => exec_err!("{} takes {} arguments", self.name(), args.len() + 1),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (trace, run, workflow) = match (self.answer, arrays.as_slice()) {
            (Answer::Workflow, [t, r, w]) => (t, r, Some(w)),
            (Answer::Run | Answer::Aliased, [t, r]) => (t, r, None),
            _ => return exec_err!("{}: wrong number of arguments", self.name()),
        };
        let (t, r) = (Strs::of(trace)?, Strs::of(run)?);
        let hits = self.hits(&t, &r, run.len());
        let out: ArrayRef = match (self.answer, workflow) {
            (Answer::Aliased, _) => {
                let mut v = vec![false; run.len()];
                for (i, _) in &hits {
                    v[*i] = true;
                }
                Arc::new(BooleanArray::from(v))
            }
            (Answer::Workflow, Some(w)) => {
                let ws = Strs::of(w)?;
                substitute(
                    w,
                    &ws,
                    hits.iter().filter_map(|(i, d)| {
                        let own = ws.get(*i);
                        match (own, &d.workflow) {
                            (None, Some(wf)) => Some((*i, &**wf)),
                            _ => None,
                        }
                    }),
                )?
            }
            _ => substitute(run, &r, hits.iter().map(|(i, d)| (*i, &*d.run)))?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `array` (read as `strs`) with the given rows (in order) replaced.
fn substitute<'a>(
    array: &ArrayRef,
    strs: &Strs<'_>,
    hits: impl Iterator<Item = (usize, &'a str)>,
) -> DfResult<ArrayRef> {
    let mut hits = hits.peekable();
    if hits.peek().is_none() {
        return Ok(Arc::clone(array));
    }
    let mut b = StringBuilder::with_capacity(array.len(), 32 * array.len());
    for i in 0..array.len() {
        match hits.peek() {
            Some((at, v)) if *at == i => {
                b.append_value(v);
                hits.next();
            }
            _ => b.append_option(strs.get(i)),
        }
    }
    let built: ArrayRef = Arc::new(b.finish());
    Ok(if array.data_type() == &DataType::Utf8 {
        built
    } else {
        cast(&built, array.data_type())?
    })
}
