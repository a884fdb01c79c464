//! Deterministic synthetic data: the one pseudo-random generator ([`Rng`], SplitMix64) and the
//! workloads generated with it.
//!
//! This crate owns the reference-workflow OTLP workload ([`reference`]: the analytics golden tests,
//! the metric cross-checks, `custos bench analytics`), the ingest benchmark's export requests
//! ([`ingest`]), the foreign workload shaped like a user's own SDK code ([`foreign`]), the policy benchmark's request mix ([`policy`]) and the parsers' property tests'
//! mutations of the fuzz corpus ([`mutate`]). The same seed always gives the
//! same data, on every platform and release.
//!
//! It is a normal dependency, not a test kit: the executor's seeded local models and connectors
//! draw from [`Rng`] in production, and `custos bench` generates its workloads here. So it stays
//! light (OTLP protobuf types and JSON values, no query engine, no server).

mod attr;
pub mod foreign;
pub mod ingest;
pub mod mutate;
pub mod policy;
pub mod reference;
mod rng;

pub use rng::Rng;
