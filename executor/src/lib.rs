//! The reference executor: runs automation workflows durably and emits the telemetry custos
//! watches.
//!
//! This crate owns workflow definitions ([`workflow`]: the YAML format and its validation). Work in
//! progress: the run loop, the journal, models, connectors, reviews and telemetry come next
//! (docs: the executor issue).

pub mod workflow;
