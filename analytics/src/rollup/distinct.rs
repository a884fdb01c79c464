//! `distinct_count_merge(list)`: the number of distinct non-null values in all the `BIGINT` lists
//! of a group (NULL lists count nothing). Merges the step-name hash sets of a run's partial rows,
//! so retries stay exact when a run's spans were summarized in several flushes.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The function's name in SQL.
pub const NAME: &str = "distinct_count_merge";

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}

/// The UDAF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DistinctCountMerge {
    signature: Signature,
}

impl Default for DistinctCountMerge {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for DistinctCountMerge {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // Any list of integers, whatever its item field is called (Parquet writers differ).
        match arg_types {
            [DataType::List(f) | DataType::LargeList(f)] if f.data_type().is_integer() => {
                Ok(vec![list_type()])
            }
            [DataType::Null] => Ok(vec![list_type()]),
            _ => datafusion::common::plan_err!(
                "{NAME} takes a list of BIGINT, got ({})",
                arg_types
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(One::default()))
    }
    fn state_fields(&self, _args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new("values", list_type(), true))])
    }
    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::default()))
    }
    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

/// Calls `f(row, values)` for every row of `list` that is non-null and passes `filter`.
fn each_list(
    list: &ArrayRef,
    filter: Option<&BooleanArray>,
    mut f: impl FnMut(usize, &Int64Array),
) -> Result<()> {
    let Some(list) = list.as_list_opt::<i32>() else {
        return exec_err!("{NAME} takes a list of BIGINT, got {}", list.data_type());
    };
    for row in 0..list.len() {
        if list.is_null(row) || filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
            continue;
        }
        let values = list.value(row);
        let Some(values) = values.as_primitive_opt::<Int64Type>() else {
            return exec_err!("{NAME} takes a list of BIGINT, got {}", list.data_type());
        };
        f(row, values);
    }
    Ok(())
}

fn extend(into: &mut Vec<i64>, values: &Int64Array) {
    into.extend(values.iter().flatten());
}

fn distinct(v: &mut Vec<i64>) -> usize {
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Each group's values as one list array.
fn to_list(groups: Vec<Vec<i64>>) -> ArrayRef {
    let lengths = groups.iter().map(Vec::len);
    let offsets = OffsetBuffer::from_lengths(lengths);
    let values = Int64Array::from_iter_values(groups.into_iter().flatten());
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Int64, true)),
        offsets,
        Arc::new(values),
        None,
    ))
}

#[derive(Debug, Default)]
struct Groups {
    values: Vec<Vec<i64>>,
}

impl Groups {
    fn add(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        if self.values.len() < total {
            self.values.resize_with(total, Vec::new);
        }
        let [list] = values else {
            return exec_err!("{NAME} takes 1 argument, got {}", values.len());
        };
        each_list(list, filter, |row, v| {
            if let Some(g) = group_indices.get(row).and_then(|&g| self.values.get_mut(g)) {
                extend(g, v);
            }
        })
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.add(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.values);
        let counts = groups.into_iter().map(|mut v| distinct(&mut v) as i64);
        Ok(Arc::new(Int64Array::from_iter_values(counts)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut groups = emit_to.take_needed(&mut self.values);
        for g in &mut groups {
            distinct(g);
        }
        Ok(vec![to_list(groups)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.add(values, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let [list] = values else {
            return exec_err!("{NAME} takes 1 argument, got {}", values.len());
        };
        // The input is already a list: each row is its own state, filtered rows count nothing.
        let Some(filter) = opt_filter else {
            return Ok(vec![Arc::clone(list)]);
        };
        let dropped: BooleanArray = (0..filter.len())
            .map(|i| Some(!(filter.is_valid(i) && filter.value(i))))
            .collect();
        Ok(vec![arrow::compute::nullif(list.as_ref(), &dropped)?])
    }

    fn size(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<Vec<i64>>()
            + self.values.iter().map(|v| v.capacity() * 8).sum::<usize>()
    }
}

#[derive(Debug, Default)]
struct One {
    values: Vec<i64>,
}

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [list] = values else {
            return exec_err!("{NAME} takes 1 argument, got {}", values.len());
        };
        each_list(list, None, |_, v| extend(&mut self.values, v))
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(distinct(&mut self.values) as i64)))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.values.capacity() * 8
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        distinct(&mut self.values);
        let list = to_list(vec![self.values.clone()]);
        Ok(vec![ScalarValue::try_from_array(&list, 0)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn counts_distinct_values_across_lists_per_group() {
        let ctx = SessionContext::new();
        ctx.register_udaf(AggregateUDF::from(DistinctCountMerge::default()));
        let sql = "SELECT g, distinct_count_merge(l) AS n FROM (VALUES \
                   (1, [1, 2]), (1, [2, 3]), (1, NULL), (2, [5]), (2, [5, 5]), (3, NULL)) \
                   AS t(g, l) GROUP BY g ORDER BY g";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let n: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| v.unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(n, vec![3, 1, 0]);
    }
}
