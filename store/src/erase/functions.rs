//! The two functions an erasure plans with: `custos_erased(trace_id, span_id)`, the key set the
//! delete commit's predicate names instead of any value, and `custos_mentions(...)`, whether a
//! row mentions a person anywhere in its strings.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::DataType;
use custos_redact::Mention;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// `custos_erased(trace_id, span_id)`: whether the pair is one of the keys being erased. Its SQL
/// form (stored in the delete commit's `commitInfo`) names no value.
#[derive(Debug)]
pub(super) struct ErasedKeys {
    keys: Arc<HashSet<(String, String)>>,
    signature: Signature,
}

impl PartialEq for ErasedKeys {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys)
    }
}
impl Eq for ErasedKeys {}
impl std::hash::Hash for ErasedKeys {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "custos_erased".hash(state);
        self.keys.len().hash(state);
    }
}

impl ErasedKeys {
    pub(super) fn udf(keys: Arc<HashSet<(String, String)>>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            keys,
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for ErasedKeys {
    fn name(&self) -> &str {
        "custos_erased"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [trace, span] = arrays.as_slice() else {
            return datafusion::common::exec_err!("custos_erased takes 2 arguments");
        };
        let trace = arrow::compute::cast(trace, &DataType::Utf8)?;
        let span = arrow::compute::cast(span, &DataType::Utf8)?;
        let (trace, span) = (trace.as_string::<i32>(), span.as_string::<i32>());
        let mut key = (String::new(), String::new());
        let out: BooleanArray = (0..trace.len())
            .map(|i| {
                if trace.is_null(i) || span.is_null(i) {
                    return Some(false);
                }
                key.0.clear();
                key.0.push_str(trace.value(i));
                key.1.clear();
                key.1.push_str(span.value(i));
                Some(self.keys.contains(&key))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `custos_mentions(col, ...)`: whether any string in the row (nested ones included) mentions
/// the person (see [`Selection::Mentions`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Mentions {
    mention: Mention,
    signature: Signature,
}

impl Mentions {
    pub(super) fn udf(mention: &Mention) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            mention: mention.clone(),
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }

    fn hit(&self, s: &str) -> bool {
        self.mention.in_text(s)
    }

    /// Per element of `array`: whether it (or anything nested in it) mentions the person.
    fn scan(&self, array: &ArrayRef) -> DfResult<Vec<bool>> {
        let n = array.len();
        let valid = |i: usize| !array.is_null(i);
        Ok(match array.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(..) => {
                let s = arrow::compute::cast(array, &DataType::Utf8)?;
                let s = s.as_string::<i32>();
                (0..n).map(|i| valid(i) && self.hit(s.value(i))).collect()
            }
            DataType::Struct(_) => {
                let st = array.as_struct();
                let mut out = vec![false; n];
                for child in st.columns() {
                    for (o, h) in out.iter_mut().zip(self.scan(child)?) {
                        *o |= h;
                    }
                }
                (0..n).map(|i| valid(i) && out[i]).collect()
            }
            DataType::Map(..) => {
                let m = array.as_map();
                let inner: ArrayRef = Arc::new(m.entries().clone());
                let hits = self.scan(&inner)?;
                let offsets = m.value_offsets();
                reduce(&hits, offsets.iter().map(|o| *o as usize), n, valid)
            }
            DataType::List(_) => {
                let l = array.as_list::<i32>();
                let hits = self.scan(l.values())?;
                reduce(
                    &hits,
                    l.value_offsets().iter().map(|o| *o as usize),
                    n,
                    valid,
                )
            }
            DataType::LargeList(_) => {
                let l = array.as_list::<i64>();
                let hits = self.scan(l.values())?;
                reduce(
                    &hits,
                    l.value_offsets().iter().map(|o| *o as usize),
                    n,
                    valid,
                )
            }
            _ => vec![false; n],
        })
    }
}

/// For each of `n` parents with child ranges from `offsets`: whether any child hit.
fn reduce(
    hits: &[bool],
    offsets: impl Iterator<Item = usize>,
    n: usize,
    valid: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let offsets: Vec<usize> = offsets.collect();
    (0..n)
        .map(|i| {
            let (a, b) = (offsets[i], offsets[i + 1]);
            valid(i) && hits.get(a..b).is_some_and(|s| s.iter().any(|h| *h))
        })
        .collect()
}

impl ScalarUDFImpl for Mentions {
    fn name(&self) -> &str {
        "custos_mentions"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = vec![false; n];
        for a in &arrays {
            for (o, h) in out.iter_mut().zip(self.scan(a)?) {
                *o |= h;
            }
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_reach_nested_strings() {
        use arrow::array::{MapBuilder, StringBuilder};
        let m = Mentions {
            mention: Mention::from_parts("u-123", "00ff00ff00ff00ff"),
            signature: Signature::variadic_any(Volatility::Immutable),
        };
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        b.keys().append_value("user.id");
        b.values().append_value("[PERSON:00ff00ff00ff00ff]");
        b.append(true).unwrap();
        b.keys().append_value("note");
        b.values().append_value("u-1234");
        b.append(true).unwrap();
        b.append(false).unwrap();
        b.keys().append_value("note");
        b.values().append_value("about u-123.");
        b.append(true).unwrap();
        let map: ArrayRef = Arc::new(b.finish());
        assert_eq!(m.scan(&map).unwrap(), vec![true, false, false, true]);
    }
}
