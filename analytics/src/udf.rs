//! SQL functions custos adds to DataFusion.
//!
//! - `price_usd(model, start_time, input_tokens, output_tokens, cache_read_tokens,
//!   cache_write_tokens, reasoning_tokens)`: the cost of a span's token usage from the price table
//!   ([`crate::prices`]); NULL when the model has no price on that day or no usage is reported.
//! - `psi(value, is_current)`: population stability index of a value in [0, 1] between the rows
//!   where `is_current` is false (the baseline) and true (the current window).
//! - `ks(value, is_current)`: the two-sample Kolmogorov–Smirnov statistic of the same split.
//!
//! Both drift functions ignore NULL and NaN values and return NULL when either side has no rows.
//! Definitions (bins, smoothing) are in docs/metrics.md and in [`psi_from_counts`] / [`ks_statistic`].

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Float64Builder, ListArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, TimeUnit, UInt64Type};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

use crate::prices::{PriceTable, Usage};

/// Number of equal-width bins over [0, 1] used by `psi`.
pub const PSI_BINS: usize = 10;
/// Pseudo-count added to every bin before computing proportions, so empty bins stay finite.
pub const PSI_SMOOTHING: f64 = 0.5;

/// The bin of `v` among [`PSI_BINS`] equal-width bins over [0, 1]; values outside are clamped to
/// the first or last bin.
pub fn psi_bin(v: f64) -> usize {
    let b = (v * PSI_BINS as f64).floor();
    if b < 0.0 {
        0
    } else {
        (b as usize).min(PSI_BINS - 1)
    }
}

/// PSI from per-bin counts: `Σ (c − b) · ln(c / b)` over smoothed proportions
/// `(count + PSI_SMOOTHING) / (total + PSI_SMOOTHING · bins)`. `None` when a side is empty.
pub fn psi_from_counts(baseline: &[u64], current: &[u64]) -> Option<f64> {
    let nb: u64 = baseline.iter().sum();
    let nc: u64 = current.iter().sum();
    if nb == 0 || nc == 0 {
        return None;
    }
    let k = baseline.len() as f64;
    let mut psi = 0.0;
    for (b, c) in baseline.iter().zip(current) {
        let pb = (*b as f64 + PSI_SMOOTHING) / (nb as f64 + PSI_SMOOTHING * k);
        let pc = (*c as f64 + PSI_SMOOTHING) / (nc as f64 + PSI_SMOOTHING * k);
        psi += (pc - pb) * (pc / pb).ln();
    }
    Some(psi)
}

/// The two-sample KS statistic `sup |F_baseline(x) − F_current(x)|`; sorts its inputs. `None` when
/// a side is empty.
pub fn ks_statistic(baseline: &mut [f64], current: &mut [f64]) -> Option<f64> {
    if baseline.is_empty() || current.is_empty() {
        return None;
    }
    baseline.sort_by(f64::total_cmp);
    current.sort_by(f64::total_cmp);
    let (nb, nc) = (baseline.len() as f64, current.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < baseline.len() && j < current.len() {
        let x = baseline[i].min(current[j]);
        while i < baseline.len() && baseline[i] <= x {
            i += 1;
        }
        while j < current.len() && current[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / nb - j as f64 / nc).abs());
    }
    Some(d)
}

/// FNV-1a, 64 bits: the value of `hash64(text)`.
pub fn fnv1a64(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Registers the custos functions on a session.
pub fn register(ctx: &datafusion::prelude::SessionContext, prices: Arc<PriceTable>) {
    ctx.register_udf(ScalarUDF::from(PriceUdf::new(prices)));
    ctx.register_udf(ScalarUDF::from(Hash64Udf::default()));
    ctx.register_udaf(AggregateUDF::from(DriftUdaf::new(DriftKind::Psi)));
    ctx.register_udaf(AggregateUDF::from(DriftUdaf::new(DriftKind::Ks)));
    ctx.register_udaf(AggregateUDF::from(
        crate::rollup::distinct::DistinctCountMerge::default(),
    ));
}

/// `price_usd(...)`.
#[derive(Debug)]
struct PriceUdf {
    prices: Arc<PriceTable>,
    signature: Signature,
}

impl PartialEq for PriceUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.prices, &other.prices)
    }
}
impl Eq for PriceUdf {}
impl Hash for PriceUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "price_usd".hash(state);
    }
}

impl PriceUdf {
    fn new(prices: Arc<PriceTable>) -> Self {
        // Any argument types: the function casts (string views, dictionary strings, int32 counts).
        Self {
            prices,
            signature: Signature::any(7, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PriceUdf {
    fn name(&self) -> &str {
        "price_usd"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [
            model,
            time,
            input,
            output,
            cache_read,
            cache_write,
            reasoning,
        ] = arrays.as_slice()
        else {
            return exec_err!("price_usd takes 7 arguments, got {}", arrays.len());
        };
        let model = arrow::compute::cast(model, &DataType::Utf8)?;
        let model = model.as_string::<i32>();
        let time = arrow::compute::cast(time, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let time = time.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let ints: Vec<ArrayRef> = [input, output, cache_read, cache_write, reasoning]
            .iter()
            .map(|a| arrow::compute::cast(a, &DataType::Int64))
            .collect::<Result<_, _>>()?;
        let ints: Vec<_> = ints.iter().map(|a| a.as_primitive::<Int64Type>()).collect();
        let get = |k: usize, i: usize| {
            let a = ints[k];
            if a.is_null(i) { None } else { Some(a.value(i)) }
        };
        let mut out = Float64Builder::with_capacity(n);
        for i in 0..n {
            let usage = Usage {
                input: get(0, i),
                output: get(1, i),
                cache_read: get(2, i),
                cache_write: get(3, i),
                reasoning: get(4, i),
            };
            if model.is_null(i) || time.is_null(i) || usage.is_empty() {
                out.append_null();
                continue;
            }
            match self.prices.lookup(model.value(i), time.value(i)) {
                Some(p) => out.append_value(p.cost(&usage)),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `hash64(text)`: a 64-bit FNV-1a hash of a string, NULL for NULL. Lets `count(DISTINCT ...)`
/// over strings use DataFusion's grouped accumulator for integers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Hash64Udf {
    signature: Signature,
}

impl Default for Hash64Udf {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Hash64Udf {
    fn name(&self) -> &str {
        "hash64"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [text] = arrays.as_slice() else {
            return exec_err!("hash64 takes 1 argument, got {}", arrays.len());
        };
        let out: arrow::array::Int64Array = match text.data_type() {
            DataType::Utf8View => text
                .as_string_view()
                .iter()
                .map(|v| v.map(|s| fnv1a64(s.as_bytes())))
                .collect(),
            DataType::Utf8 => text
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(|s| fnv1a64(s.as_bytes())))
                .collect(),
            _ => {
                let text = arrow::compute::cast(text, &DataType::Utf8)?;
                text.as_string::<i32>()
                    .iter()
                    .map(|v| v.map(|s| fnv1a64(s.as_bytes())))
                    .collect()
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DriftKind {
    Psi,
    Ks,
}

/// `psi(value, is_current)` and `ks(value, is_current)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DriftUdaf {
    kind: DriftKind,
    signature: Signature,
}

impl DriftUdaf {
    fn new(kind: DriftKind) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn list_field(name: &str, item: DataType) -> FieldRef {
    Arc::new(Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(item, true))),
        true,
    ))
}

impl AggregateUDFImpl for DriftUdaf {
    fn name(&self) -> &str {
        match self.kind {
            DriftKind::Psi => "psi",
            DriftKind::Ks => "ks",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        match arg_types {
            [v, c]
                if (v.is_numeric() || v.is_null())
                    && matches!(c, DataType::Boolean | DataType::Null) =>
            {
                Ok(vec![DataType::Float64, DataType::Boolean])
            }
            _ => plan_err!(
                "{}(value, is_current) takes a number in [0, 1] and a boolean (true for the current window), got ({})",
                self.name(),
                arg_types
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    fn accumulator(&self, _acc_args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(match self.kind {
            DriftKind::Psi => Box::new(PsiAccumulator::default()),
            DriftKind::Ks => Box::new(KsAccumulator::default()),
        })
    }
    fn state_fields(&self, _args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(match self.kind {
            DriftKind::Psi => vec![
                list_field("baseline_bins", DataType::UInt64),
                list_field("current_bins", DataType::UInt64),
            ],
            DriftKind::Ks => vec![
                list_field("baseline_values", DataType::Float64),
                list_field("current_values", DataType::Float64),
            ],
        })
    }
}

/// Calls `f(value, is_current)` for every row with a non-NaN value and a non-null flag.
fn each_row(values: &[ArrayRef], mut f: impl FnMut(f64, bool)) -> DfResult<()> {
    let [v, cur] = values else {
        return exec_err!(
            "drift functions take (value, is_current), got {} arguments",
            values.len()
        );
    };
    let v = arrow::compute::cast(v, &DataType::Float64)?;
    let cur = arrow::compute::cast(cur, &DataType::Boolean)?;
    let v: &Float64Array = v.as_primitive::<Float64Type>();
    let cur: &BooleanArray = cur.as_boolean();
    for i in 0..v.len() {
        if v.is_null(i) || cur.is_null(i) {
            continue;
        }
        let x = v.value(i);
        if x.is_nan() {
            continue;
        }
        f(x, cur.value(i));
    }
    Ok(())
}

/// Calls `f` with the values of every non-null list of a list-typed state column.
fn each_list<T: arrow::datatypes::ArrowPrimitiveType>(
    state: &ArrayRef,
    mut f: impl FnMut(&[T::Native]),
) {
    let lists = state.as_list::<i32>();
    for row in 0..lists.len() {
        if !lists.is_null(row) {
            f(lists.value(row).as_primitive::<T>().values());
        }
    }
}

#[derive(Debug, Default)]
struct PsiAccumulator {
    baseline: [u64; PSI_BINS],
    current: [u64; PSI_BINS],
}

impl Accumulator for PsiAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let (b, c) = (&mut self.baseline, &mut self.current);
        each_row(values, |x, is_current| {
            let bin = psi_bin(x);
            if is_current { c[bin] += 1 } else { b[bin] += 1 }
        })
    }
    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Float64(psi_from_counts(
            &self.baseline,
            &self.current,
        )))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let list = |counts: &[u64]| {
            ScalarValue::List(Arc::new(
                ListArray::from_iter_primitive::<UInt64Type, _, _>([Some(
                    counts.iter().map(|c| Some(*c)).collect::<Vec<_>>(),
                )]),
            ))
        };
        Ok(vec![list(&self.baseline), list(&self.current)])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        for (state, target) in states.iter().zip([&mut self.baseline, &mut self.current]) {
            each_list::<UInt64Type>(state, |counts| {
                for (t, c) in target.iter_mut().zip(counts) {
                    *t += c;
                }
            });
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct KsAccumulator {
    baseline: Vec<f64>,
    current: Vec<f64>,
}

impl Accumulator for KsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let (b, c) = (&mut self.baseline, &mut self.current);
        each_row(
            values,
            |x, is_current| {
                if is_current { c.push(x) } else { b.push(x) }
            },
        )
    }
    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Float64(ks_statistic(
            &mut self.baseline,
            &mut self.current,
        )))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + (self.baseline.capacity() + self.current.capacity()) * 8
    }
    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let list = |v: &[f64]| {
            ScalarValue::List(Arc::new(
                ListArray::from_iter_primitive::<Float64Type, _, _>([Some(
                    v.iter().map(|x| Some(*x)).collect::<Vec<_>>(),
                )]),
            ))
        };
        Ok(vec![list(&self.baseline), list(&self.current)])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        for (state, target) in states.iter().zip([&mut self.baseline, &mut self.current]) {
            each_list::<Float64Type>(state, |values| target.extend_from_slice(values));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_equal_distributions_and_grows_with_shift() {
        let same = [10u64; PSI_BINS];
        assert!(psi_from_counts(&same, &same).unwrap().abs() < 1e-12);
        let mut shifted = [0u64; PSI_BINS];
        shifted[9] = 100;
        assert!(psi_from_counts(&same, &shifted).unwrap() > 0.25);
        assert_eq!(psi_from_counts(&[0; PSI_BINS], &same), None);
    }

    #[test]
    fn bins_clamp_out_of_range_values() {
        assert_eq!(psi_bin(-0.5), 0);
        assert_eq!(psi_bin(0.0), 0);
        assert_eq!(psi_bin(0.95), 9);
        assert_eq!(psi_bin(1.0), 9);
        assert_eq!(psi_bin(7.0), 9);
    }

    proptest::proptest! {
        /// PSI is never negative and is zero for identical samples; KS is in [0, 1] and zero for
        /// identical samples; neither panics on any input (NaN and infinities included).
        #[test]
        fn drift_statistics_are_well_behaved(
            a in proptest::collection::vec(proptest::num::f64::ANY, 1..200),
            b in proptest::collection::vec(proptest::num::f64::ANY, 1..200),
        ) {
            let hist = |v: &[f64]| {
                let mut h = [0u64; PSI_BINS];
                for x in v.iter().filter(|x| !x.is_nan()) {
                    h[psi_bin(*x)] += 1;
                }
                h
            };
            let (ha, hb) = (hist(&a), hist(&b));
            if let Some(p) = psi_from_counts(&ha, &hb) {
                proptest::prop_assert!(p >= -1e-12 && p.is_finite());
            }
            if let Some(p) = psi_from_counts(&ha, &ha) {
                proptest::prop_assert!(p.abs() < 1e-12);
            }
            let clean = |v: &[f64]| v.iter().copied().filter(|x| !x.is_nan()).collect::<Vec<_>>();
            let (mut ca, mut cb) = (clean(&a), clean(&b));
            if let Some(d) = ks_statistic(&mut ca.clone(), &mut cb) {
                proptest::prop_assert!((0.0..=1.0).contains(&d));
            }
            if let Some(d) = ks_statistic(&mut ca.clone(), &mut ca) {
                proptest::prop_assert!(d.abs() < 1e-12);
            }
        }
    }

    #[test]
    fn hash64_is_fnv1a() {
        assert_eq!(fnv1a64(b"") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a64(b"lookup"), fnv1a64(b"reply"));
    }

    #[test]
    fn ks_matches_hand_computation() {
        let mut a = vec![0.1, 0.2, 0.3, 0.4];
        let mut b = vec![0.3, 0.4, 0.5, 0.6];
        // After 0.2: F_a = 0.5, F_b = 0 → 0.5 is the supremum.
        assert!((ks_statistic(&mut a, &mut b).unwrap() - 0.5).abs() < 1e-12);
        let mut same = vec![0.5; 3];
        assert_eq!(ks_statistic(&mut same.clone(), &mut same), Some(0.0));
    }
}
