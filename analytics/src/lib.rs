//! custos-analytics
