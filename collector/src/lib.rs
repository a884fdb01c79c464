//! custos-collector
