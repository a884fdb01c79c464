//! Who is calling: bearer tokens and the check every listener runs before it reads a body.
//!
//! This crate owns the identity half of access control; what an identified caller may do is the
//! policies' decision (`custos-governance::access`).
//!
//! - [`token`]: a token is 256 random bits (`cst_` and 43 base64url characters), shown once;
//!   only its SHA-256 is stored, with the principal it stands for, an optional expiry and a note.
//! - [`file`]: the data directory's token file `auth/tokens.json`, shared by processes: the CLI
//!   creates and revokes tokens whether or not a server runs on the directory, under an OS file
//!   lock, and replaces the file atomically.
//! - [`authn`]: the [`Authenticator`] a server holds: the token file's current contents
//!   (re-read within a quarter second of a change), tokens that live only in the process (the
//!   server's own executor), and a limit on failed attempts per client address.
//!
//! Tokens are compared by looking up the SHA-256 of what the caller sent: the secret itself is
//! never stored, and the lookup key is a hash the caller cannot steer.

pub mod authn;
pub mod file;
pub mod token;

pub use authn::{Authenticator, FailureLimit, Refusal};
pub use file::TokenFile;
pub use token::{Principal, TokenRecord};

use std::path::PathBuf;

/// Errors of token management.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{what} `{path}`: {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The token file is not what this version writes.
    #[error(
        "token file `{path}` is damaged: {reason}; restore it from a backup or move it away and create new tokens"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No token has this id.
    #[error("no token has id `{0}`; `custos token list` shows the ids")]
    UnknownId(String),
    /// The operating system could not give random bytes.
    #[error("cannot draw random bytes for a token: {0}")]
    Random(String),
    /// A request to create a token is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The folder of the token file and the admin token inside a data directory.
pub fn auth_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("auth")
}
