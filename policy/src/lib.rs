//! Governance policies: the Cedar schema and policy files under `rules/policy/`, loaded, named and
//! validated.
//!
//! This crate owns reading a policy directory (`schema.cedarschema` and `*.cedar`), naming every
//! policy from its `@id` annotation (Cedar itself names them `policy0`, `policy1`, ...), and strict
//! validation against the schema with warnings treated as errors. Every problem is reported with
//! the file, line and column it points at, so `custos policy validate` reads like a compiler.
//!
//! On top of a loaded directory, [`engine::Engine`] answers authorization requests (failing closed on
//! any error), [`query`] answers what callers ask of the set without speaking Cedar (the policies
//! governing an action, the metrics a policy reads), and [`testing`] runs policy tests written in
//! the JSON format of `cedar run-tests`. A running server holds its engine in a [`live::Live`], which a
//! reload replaces whole.
//! Every loaded set has a [`Policies::hash`]: the SHA-256 of the schema, the policy files and the entity store, which
//! every decision record carries.

mod context;
pub use context::Sensitive;
pub mod engine;
pub mod junit;
pub mod live;
pub mod query;
pub mod testing;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

/// One problem in a policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the problem points into the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong, and how to fix it when the engine says.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Errors of the policy crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or a file could not be read.
    #[error("cannot read `{path}`: {cause}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The policies or the schema are invalid; every problem found is listed.
    #[error("{} problem(s) in the policies:\n{}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// The entity store does not parse or does not match the schema.
    #[error("invalid entities: {0}")]
    Entities(String),
    /// A policy test file is invalid.
    #[error("invalid policy test file `{path}`: {message}")]
    TestFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result type of the policy crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A validated policy directory.
#[derive(Debug, Clone)]
pub struct Policies {
    /// The schema.
    pub schema: Schema,
    /// Every policy, named by its `@id`.
    pub set: PolicySet,
    /// The file each policy came from, by id.
    pub files: BTreeMap<String, PathBuf>,
    /// Where each policy's `@id` annotation is: file, 1-based line and column, by id.
    pub locations: BTreeMap<String, (PathBuf, usize, usize)>,
    /// SHA-256 (hex) of the schema, every policy file and the entity store (`entities.json`), by
    /// file name and content; changes with any edit, including comments, and with any change of
    /// team membership, owners or thresholds.
    pub hash: String,
    /// Each of those files' own SHA-256, by file name: what a change record names.
    pub file_hashes: BTreeMap<String, String>,
    /// The directory the policies were loaded from.
    pub dir: PathBuf,
    /// The schema's source text.
    pub schema_source: String,
}

impl Policies {
    /// Number of policies.
    pub fn len(&self) -> usize {
        self.set.policies().count()
    }

    /// Whether there are no policies.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `@advice` annotation of a policy.
    ///
    /// Policies without one have none.
    pub fn advice(&self, id: &str) -> Option<&str> {
        self.set
            .policy(&PolicyId::new(id))
            .and_then(|p| p.annotation("advice"))
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Problems from a diagnostic whose labels point into `text`.
fn problems(file: &Path, text: &str, d: &dyn Diagnostic) -> Vec<Problem> {
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    let mut out: Vec<Problem> = d
        .labels()
        .into_iter()
        .flatten()
        .take(1)
        .map(|l| {
            let (line, column) = line_col(text, l.offset());
            Problem {
                file: file.to_path_buf(),
                line: Some(line),
                column: Some(column),
                message: message.clone(),
            }
        })
        .collect();
    if out.is_empty() {
        out.push(Problem {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message,
        });
    }
    out
}

/// Feeds one file into the set's hash: its name and content, each length-prefixed so that no two
/// different directories hash alike.
fn hash_file(hasher: &mut Sha256, name: &str, text: &str) {
    for part in [name.as_bytes(), text.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
}

/// The files `dir/*.EXT`, sorted by name.
pub(crate) fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|cause| Error::Read {
            path: dir.to_path_buf(),
            cause,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|cause| Error::Read {
        path: path.to_path_buf(),
        cause,
    })
}

/// Loads `dir/schema.cedarschema` and every `dir/*.cedar`, names policies by `@id`, and validates
/// them strictly against the schema; warnings count as errors. All problems are returned at once.
pub fn load(dir: &Path) -> Result<Policies> {
    let mut found = Vec::new();
    let schema_path = dir.join("schema.cedarschema");
    let schema_text = read(&schema_path)?;
    let schema = match Schema::from_cedarschema_str(&schema_text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                found.extend(problems(&schema_path, &schema_text, &w));
            }
            Some(schema)
        }
        Err(e) => {
            found.extend(problems(&schema_path, &schema_text, &e));
            None
        }
    };
    let files = files_with_extension(dir, "cedar")?;
    if files.is_empty() {
        found.push(Problem {
            file: dir.to_path_buf(),
            line: None,
            column: None,
            message: "no `*.cedar` policy files; without policies every request is denied".into(),
        });
    }
    let mut hasher = Sha256::new();
    let mut file_hashes = BTreeMap::new();
    let mut feed = |name: &str, text: &str| {
        hash_file(&mut hasher, name, text);
        file_hashes.insert(
            name.to_string(),
            hex::encode(Sha256::digest(text.as_bytes())),
        );
    };
    feed("schema.cedarschema", &schema_text);
    let mut loaded = Loaded::default();
    for file in &files {
        let text = read(file)?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        feed(&name, &text);
        loaded.add_file(file, &text, &mut found);
    }
    // The entity store decides as much as the policies do (who is in which team, who owns a
    // workflow, its threshold): it is part of the set.
    let entities = dir.join("entities.json");
    if entities.exists() {
        feed("entities.json", &read(&entities)?);
    }
    if let Some(schema) = &schema {
        found.extend(loaded.validate(schema, dir));
    }
    match schema {
        Some(schema) if found.is_empty() => Ok(Policies {
            schema,
            set: loaded.set,
            files: loaded.origin,
            locations: loaded.locations,
            hash: hex::encode(hasher.finalize()),
            file_hashes,
            dir: dir.to_path_buf(),
            schema_source: schema_text,
        }),
        _ => Err(Error::Invalid(found)),
    }
}

/// The policies read so far, with where each came from.
#[derive(Default)]
struct Loaded {
    set: PolicySet,
    /// Each policy's file.
    origin: BTreeMap<String, PathBuf>,
    /// Each policy's `@id` position.
    locations: BTreeMap<String, (PathBuf, usize, usize)>,
    /// Each policy's file and its text, to locate validation errors.
    texts: BTreeMap<String, (PathBuf, String)>,
}

impl Loaded {
    /// Adds the policies of one file; what is wrong with them goes to `found`.
    fn add_file(&mut self, file: &Path, text: &str, found: &mut Vec<Problem>) {
        let parsed = match PolicySet::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                found.extend(problems(file, text, &e));
                return;
            }
        };
        for policy in parsed.policies() {
            // Cedar does not expose a policy's position; the `@id` annotation locates it.
            let position = |id: &str| {
                text.find(&format!("@id(\"{id}\")"))
                    .map(|o| line_col(text, o))
            };
            let at = |message: String, id: Option<&str>| {
                let (line, column) = id
                    .and_then(position)
                    .map_or((None, None), |(l, c)| (Some(l), Some(c)));
                Problem {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message,
                }
            };
            let Some(id) = policy.annotation("id") else {
                let head: String = policy.to_string().chars().take(60).collect();
                found.push(at(
                    format!(
                        "policy `{}...` has no `@id(\"...\")` annotation; every policy needs a unique id so decisions can name it",
                        head.split_whitespace().collect::<Vec<_>>().join(" ")
                    ),
                    None,
                ));
                continue;
            };
            if let Some(first) = self.origin.get(id) {
                found.push(at(
                    format!(
                        "policy id `{id}` is already used in `{}`; ids must be unique",
                        first.display()
                    ),
                    Some(id),
                ));
                continue;
            }
            if self.set.add(policy.new_id(PolicyId::new(id))).is_err() {
                found.push(at(format!("cannot add policy `{id}`"), Some(id)));
                continue;
            }
            if let Some((line, column)) = position(id) {
                self.locations
                    .insert(id.to_string(), (file.to_path_buf(), line, column));
            }
            self.origin.insert(id.to_string(), file.to_path_buf());
            self.texts
                .insert(id.to_string(), (file.to_path_buf(), text.to_string()));
        }
        if parsed.templates().next().is_some() {
            found.push(Problem {
                file: file.to_path_buf(),
                line: None,
                column: None,
                message: "policy templates are not supported; write static policies".into(),
            });
        }
    }

    /// Strict validation against the schema, each error and warning located in its policy.
    fn validate(&self, schema: &Schema, dir: &Path) -> Vec<Problem> {
        let result = Validator::new(schema.clone()).validate(&self.set, ValidationMode::Strict);
        let locate = |id: &PolicyId, p: &dyn Diagnostic| match self.texts.get(&id.to_string()) {
            Some((file, text)) => problems(file, text, p),
            None => problems(dir, "", p),
        };
        let mut found = Vec::new();
        for e in result.validation_errors() {
            found.extend(locate(e.policy_id(), e));
        }
        for w in result.validation_warnings() {
            found.extend(locate(w.policy_id(), w));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_of_offsets() {
        let t = "ab\ncd\nef";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (2, 2));
        assert_eq!(line_col(t, 100), (3, 3));
    }
}
