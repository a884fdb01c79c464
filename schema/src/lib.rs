//! custos-schema
