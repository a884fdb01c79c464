//! `custos top`: the operator's terminal dashboard (ratatui + crossterm).
//!
//! It reads a server's API only, so it works against a remote server: [`client`] fetches a
//! [`data::Snapshot`] per poll off the UI thread, [`app`] holds the state and handles keys as pure
//! functions, [`ui`] draws the state, and [`run`] ties them to a terminal (redraw on change,
//! selection kept across updates, reconnecting when the server goes away).

pub mod app;
pub mod client;
pub mod data;
pub mod run;
pub mod ui;

/// Errors of the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be read.
    #[error("{0}")]
    Api(String),
    /// The terminal could not be set up or drawn.
    #[error("terminal: {0}")]
    Terminal(String),
}

/// Result type of the dashboard.
pub type Result<T, E = Error> = std::result::Result<T, E>;
