//! The contract shared by everything that writes or reads spans in custos.
//!
//! This crate owns:
//! - the Arrow schema of the `spans` table ([`spans_schema`]) and its fixed SQL column names ([`col`]),
//! - the attribute conventions: which OpenTelemetry attribute keys (GenAI semantic conventions,
//!   OpenLLMetry, OpenInference and custos' own `automation.*`) are lifted into which typed column, in
//!   which order of preference ([`CONVENTIONS`]),
//! - the id types ([`TraceId`], [`SpanId`]) and their lowercase-hex text form.
//!
//! Nothing here does I/O. The collector builds batches with this schema, the store persists them, and
//! analytics reads them; a change here is a change to all three and to every user's SQL.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Errors of the schema crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// An id had the wrong number of bytes.
    #[error("invalid {kind}: expected {expected} bytes, got {got}")]
    IdLength {
        /// `trace id` or `span id`.
        kind: &'static str,
        /// The required length.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// An id was all zero bytes, which OTLP forbids.
    #[error("invalid {kind}: all bytes are zero")]
    IdZero {
        /// `trace id` or `span id`.
        kind: &'static str,
    },
}

/// Result type of the schema crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A 16-byte W3C trace id; valid means not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; valid means not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

macro_rules! id_type {
    ($ty:ident, $len:expr, $kind:expr) => {
        impl $ty {
            /// Validates raw OTLP bytes: exact length and not all zero.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| Error::IdLength {
                    kind: $kind,
                    expected: $len,
                    got: bytes.len(),
                })?;
                if arr.iter().all(|b| *b == 0) {
                    return Err(Error::IdZero { kind: $kind });
                }
                Ok(Self(arr))
            }

            /// Lowercase hex, the form stored in the `spans` table.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Writes lowercase hex into `out` without allocating a new string.
            pub fn write_hex(&self, out: &mut String) {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                for b in self.0 {
                    out.push(DIGITS[(b >> 4) as usize] as char);
                    out.push(DIGITS[(b & 0xf) as usize] as char);
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.to_hex())
            }
        }
    };
}

id_type!(TraceId, 16, "trace id");
id_type!(SpanId, 8, "span id");

/// The fixed SQL column names of the `spans` table.
pub mod col {
    /// Trace id, lowercase hex.
    pub const TRACE_ID: &str = "trace_id";
    /// Span id, lowercase hex.
    pub const SPAN_ID: &str = "span_id";
    /// Parent span id, lowercase hex; null for a root span.
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    /// W3C trace state.
    pub const TRACE_STATE: &str = "trace_state";
    /// Span flags (W3C trace flags in the low byte).
    pub const FLAGS: &str = "flags";
    /// Span name.
    pub const NAME: &str = "name";
    /// Span kind in lowercase words.
    pub const KIND: &str = "kind";
    /// `service.name` of the resource.
    pub const SERVICE_NAME: &str = "service_name";
    /// Start as a UTC timestamp (microseconds).
    pub const START_TIME: &str = "start_time";
    /// End as a UTC timestamp (microseconds).
    pub const END_TIME: &str = "end_time";
    /// Exact start in nanoseconds since the Unix epoch.
    pub const START_TIME_UNIX_NANO: &str = "start_time_unix_nano";
    /// Exact end in nanoseconds since the Unix epoch.
    pub const END_TIME_UNIX_NANO: &str = "end_time_unix_nano";
    /// Duration in milliseconds.
    pub const DURATION_MS: &str = "duration_ms";
    /// `unset`, `ok` or `error`.
    pub const STATUS_CODE: &str = "status_code";
    /// Status message.
    pub const STATUS_MESSAGE: &str = "status_message";
    /// Workflow name.
    pub const WORKFLOW: &str = "workflow";
    /// Run id, the trace id when the attribute is absent.
    pub const RUN_ID: &str = "run_id";
    /// Step name.
    pub const STEP: &str = "step";
    /// Step kind.
    pub const STEP_KIND: &str = "step_kind";
    /// Model name.
    pub const MODEL: &str = "model";
    /// Model provider.
    pub const PROVIDER: &str = "provider";
    /// Model version.
    pub const MODEL_VERSION: &str = "model_version";
    /// Prompt version.
    pub const PROMPT_VERSION: &str = "prompt_version";
    /// Input tokens (including cached tokens).
    pub const INPUT_TOKENS: &str = "input_tokens";
    /// Output tokens.
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Cache-read input tokens.
    pub const CACHE_READ_TOKENS: &str = "cache_read_tokens";
    /// Cache-write (cache-creation) input tokens.
    pub const CACHE_WRITE_TOKENS: &str = "cache_write_tokens";
    /// Reasoning output tokens (included in `output_tokens`).
    pub const REASONING_TOKENS: &str = "reasoning_tokens";
    /// Cost in USD as reported by the span.
    pub const COST_USD: &str = "cost_usd";
    /// Decision confidence in [0, 1].
    pub const CONFIDENCE: &str = "confidence";
    /// Decision outcome.
    pub const DECISION: &str = "decision";
    /// Whether a human overrode the decision.
    pub const HUMAN_OVERRIDE: &str = "human_override";
    /// Who reviewed.
    pub const HUMAN_REVIEWER: &str = "human_reviewer";
    /// Review time in milliseconds.
    pub const REVIEW_MS: &str = "review_ms";
    /// Run outcome on a run's root span.
    pub const OUTCOME: &str = "outcome";
    /// The span id of the decision a review on its own span reviews (`automation.review.of`).
    pub const REVIEW_OF: &str = "review_of";
    /// All span attributes as text.
    pub const ATTRIBUTES: &str = "attributes";
    /// All resource attributes as text.
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    /// Instrumentation scope name.
    pub const SCOPE_NAME: &str = "scope_name";
    /// Instrumentation scope version.
    pub const SCOPE_VERSION: &str = "scope_version";
    /// Span events.
    pub const EVENTS: &str = "events";
    /// Span links.
    pub const LINKS: &str = "links";
    /// Dropped attribute count.
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    /// Dropped event count.
    pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
    /// Dropped link count.
    pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
    /// Who sent the span: the principal of the ingest token (or client certificate) of its export,
    /// in Cedar syntax (`Custos::Service::"otel-collector"`); null for spans stored before custos
    /// recorded it.
    pub const SOURCE: &str = "source";
    /// Partition column: the UTC date of `start_time`, `YYYY-MM-DD`.
    pub const DATE: &str = "date";
}

/// The Arrow type of the `start_time` / `end_time` columns: microseconds, UTC (Delta's `timestamp`).
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow type of an attribute map: `Map<Utf8, Utf8>` with Delta's entry names.
pub fn attribute_map_type() -> DataType {
    DataType::Map(Arc::new(attribute_map_entries_field()), false)
}

/// The entries field of [`attribute_map_type`].
pub fn attribute_map_entries_field() -> Field {
    Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    )
}

/// The struct fields of one element of the `events` list.
pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time_unix_nano", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("attributes", attribute_map_type(), true),
        Field::new("dropped_attributes_count", DataType::Int64, true),
    ])
}

/// The struct fields of one element of the `links` list.
pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", attribute_map_type(), true),
        Field::new("dropped_attributes_count", DataType::Int64, true),
        Field::new("flags", DataType::Int64, true),
    ])
}

/// The list item field of `events`.
pub fn event_item_field() -> Field {
    Field::new("element", DataType::Struct(event_fields()), true)
}

/// The list item field of `links`.
pub fn link_item_field() -> Field {
    Field::new("element", DataType::Struct(link_fields()), true)
}

/// The Arrow schema of the `spans` table, in column order.
///
/// Every column is nullable so that the schema survives a round trip through Delta Lake unchanged.
/// The partition column `date` comes last, which is where Delta's scan puts partition columns.
pub fn spans_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use DataType::*;
            let s = |name: &str| Field::new(name, Utf8, true);
            let i = |name: &str| Field::new(name, Int64, true);
            let f = |name: &str| Field::new(name, Float64, true);
            Arc::new(Schema::new(vec![
                s(col::TRACE_ID),
                s(col::SPAN_ID),
                s(col::PARENT_SPAN_ID),
                s(col::TRACE_STATE),
                i(col::FLAGS),
                s(col::NAME),
                s(col::KIND),
                s(col::SERVICE_NAME),
                Field::new(col::START_TIME, timestamp_type(), true),
                Field::new(col::END_TIME, timestamp_type(), true),
                i(col::START_TIME_UNIX_NANO),
                i(col::END_TIME_UNIX_NANO),
                f(col::DURATION_MS),
                s(col::STATUS_CODE),
                s(col::STATUS_MESSAGE),
                s(col::WORKFLOW),
                s(col::RUN_ID),
                s(col::STEP),
                s(col::STEP_KIND),
                s(col::MODEL),
                s(col::PROVIDER),
                s(col::MODEL_VERSION),
                s(col::PROMPT_VERSION),
                i(col::INPUT_TOKENS),
                i(col::OUTPUT_TOKENS),
                i(col::CACHE_READ_TOKENS),
                i(col::CACHE_WRITE_TOKENS),
                i(col::REASONING_TOKENS),
                f(col::COST_USD),
                f(col::CONFIDENCE),
                s(col::DECISION),
                Field::new(col::HUMAN_OVERRIDE, Boolean, true),
                s(col::HUMAN_REVIEWER),
                i(col::REVIEW_MS),
                s(col::OUTCOME),
                s(col::REVIEW_OF),
                Field::new(col::ATTRIBUTES, attribute_map_type(), true),
                Field::new(col::RESOURCE_ATTRIBUTES, attribute_map_type(), true),
                s(col::SCOPE_NAME),
                s(col::SCOPE_VERSION),
                Field::new(col::EVENTS, List(Arc::new(event_item_field())), true),
                Field::new(col::LINKS, List(Arc::new(link_item_field())), true),
                i(col::DROPPED_ATTRIBUTES_COUNT),
                i(col::DROPPED_EVENTS_COUNT),
                i(col::DROPPED_LINKS_COUNT),
                s(col::SOURCE),
                s(col::DATE),
            ]))
        })
        .clone()
}

/// Columns the table is partitioned by.
pub const PARTITION_COLUMNS: &[&str] = &[col::DATE];

/// The type a lifted attribute must have to fill its typed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A string value.
    Str,
    /// An integer (an OTLP `intValue`).
    Int,
    /// A number (an OTLP `doubleValue`, or an `intValue` widened).
    Float,
    /// A boolean.
    Bool,
}

/// One typed column and the attribute keys that fill it, first match wins.
#[derive(Debug, Clone, Copy)]
pub struct Convention {
    /// The typed column of the `spans` table.
    pub column: &'static str,
    /// Attribute keys in order of preference; span attributes are searched before resource attributes.
    pub keys: &'static [&'static str],
    /// The value type the attribute must have; a value of another type leaves the column null.
    pub kind: ValueKind,
}

/// The attribute conventions, documented in `docs/conventions.md`.
pub const CONVENTIONS: &[Convention] = &[
    Convention {
        column: col::WORKFLOW,
        keys: &[
            "automation.workflow",
            "gen_ai.workflow.name",
            "traceloop.workflow.name",
        ],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::RUN_ID,
        keys: &["automation.run_id"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::STEP,
        keys: &["automation.step"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::STEP_KIND,
        keys: &["automation.step.kind"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::MODEL,
        keys: &[
            "gen_ai.response.model",
            "gen_ai.request.model",
            "llm.model_name",
        ],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::PROVIDER,
        keys: &[
            "gen_ai.provider.name",
            "gen_ai.system",
            "llm.provider",
            "llm.system",
        ],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::MODEL_VERSION,
        keys: &["automation.model.version"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::PROMPT_VERSION,
        keys: &["automation.prompt.version"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::INPUT_TOKENS,
        keys: &[
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
        ],
        kind: ValueKind::Int,
    },
    Convention {
        column: col::OUTPUT_TOKENS,
        keys: &[
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        ],
        kind: ValueKind::Int,
    },
    Convention {
        column: col::CACHE_READ_TOKENS,
        keys: &[
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "llm.token_count.prompt_details.cache_read",
        ],
        kind: ValueKind::Int,
    },
    Convention {
        column: col::CACHE_WRITE_TOKENS,
        keys: &[
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ],
        kind: ValueKind::Int,
    },
    Convention {
        column: col::REASONING_TOKENS,
        keys: &[
            "gen_ai.usage.reasoning.output_tokens",
            "llm.token_count.completion_details.reasoning",
        ],
        kind: ValueKind::Int,
    },
    Convention {
        column: col::COST_USD,
        keys: &["automation.cost_usd", "gen_ai.usage.cost", "llm.cost.total"],
        kind: ValueKind::Float,
    },
    Convention {
        column: col::CONFIDENCE,
        keys: &["automation.decision.confidence"],
        kind: ValueKind::Float,
    },
    Convention {
        column: col::DECISION,
        keys: &["automation.decision.outcome"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::HUMAN_OVERRIDE,
        keys: &["automation.human.override"],
        kind: ValueKind::Bool,
    },
    Convention {
        column: col::HUMAN_REVIEWER,
        keys: &["automation.human.reviewer"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::REVIEW_MS,
        keys: &["automation.human.review_ms"],
        kind: ValueKind::Int,
    },
    Convention {
        column: col::OUTCOME,
        keys: &["automation.outcome"],
        kind: ValueKind::Str,
    },
    Convention {
        column: col::REVIEW_OF,
        keys: &["automation.review.of"],
        kind: ValueKind::Str,
    },
];

/// The resource attribute that fills `service_name`.
pub const SERVICE_NAME_KEY: &str = "service.name";

/// Index of a column in [`spans_schema`], for builders that fill columns by position.
pub fn column_index(name: &str) -> Option<usize> {
    spans_schema().index_of(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_validate_length_and_zero() {
        assert_eq!(
            TraceId::from_bytes(&[0; 16]),
            Err(Error::IdZero { kind: "trace id" })
        );
        assert_eq!(
            SpanId::from_bytes(&[1; 7]),
            Err(Error::IdLength {
                kind: "span id",
                expected: 8,
                got: 7
            })
        );
        let id = TraceId::from_bytes(&[0xab; 16]).unwrap();
        assert_eq!(id.to_hex(), "ab".repeat(16));
        let mut s = String::new();
        id.write_hex(&mut s);
        assert_eq!(s, id.to_hex());
    }

    #[test]
    fn every_convention_names_a_schema_column() {
        for c in CONVENTIONS {
            assert!(column_index(c.column).is_some(), "{}", c.column);
        }
        // One attribute key must not fill two columns.
        let mut keys: Vec<_> = CONVENTIONS.iter().flat_map(|c| c.keys.iter()).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    #[test]
    fn schema_ends_with_partition_column() {
        let schema = spans_schema();
        assert_eq!(
            schema.fields().last().map(|f| f.name().as_str()),
            Some("date")
        );
        assert!(schema.fields().iter().all(|f| f.is_nullable()));
    }
}
