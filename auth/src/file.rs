//! The token file of a data directory, `auth/tokens.json`, shared by the server and the CLI.
//!
//! Writers take an exclusive OS lock on `auth/tokens.lock`, read the file, change it and replace
//! it atomically (write a temporary file, `fsync`, rename, `fsync` the folder), so a reader sees
//! the old contents or the new, never half. The folder is `0700` and the files `0600`: the file
//! holds no secrets, but who has which token is nobody else's business.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::token::{NewToken, TokenRecord, generate};
use crate::{Error, Result};

/// Token file name inside `auth/`.
pub const TOKENS_FILE: &str = "tokens.json";
const LOCK_FILE: &str = "tokens.lock";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    version: u32,
    tokens: Vec<TokenRecord>,
}

/// What identifies one version of the file on disk (a rename gives a new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// The token file of one data directory.
#[derive(Debug, Clone)]
pub struct TokenFile {
    dir: PathBuf,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |cause| Error::Io {
        what,
        path: path.to_path_buf(),
        cause,
    }
}

impl TokenFile {
    /// The token file of the data directory `data_dir` (nothing is created yet).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: crate::auth_dir(data_dir),
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(TOKENS_FILE)
    }

    /// The `auth/` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version on disk now; `None` when there is no file.
    pub fn version(&self) -> Result<Option<Version>> {
        let path = self.path();
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(Version {
                ino: m.ino(),
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    /// Every token, revoked and expired ones included; none when there is no file.
    pub fn read(&self) -> Result<Vec<TokenRecord>> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        let contents: Contents = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if contents.version != VERSION {
            return Err(Error::Corrupt {
                path,
                reason: format!(
                    "version {} (this build reads version {VERSION})",
                    contents.version
                ),
            });
        }
        Ok(contents.tokens)
    }

    /// Makes a token for `principal` and stores its hash. The caller checks that the principal
    /// exists.
    pub fn create(
        &self,
        principal: &str,
        expires: Option<DateTime<Utc>>,
        note: &str,
    ) -> Result<NewToken> {
        let now = Utc::now();
        if let Some(e) = expires
            && e <= now
        {
            return Err(Error::Invalid(format!(
                "expiry `{}` is in the past",
                e.to_rfc3339()
            )));
        }
        self.change(|tokens| {
            let new = generate(principal, expires, note, now)?;
            tokens.push(new.record.clone());
            Ok(new)
        })
    }

    /// Revokes the token `id`; revoking a revoked token changes nothing. Returns its record.
    pub fn revoke(&self, id: &str) -> Result<TokenRecord> {
        self.change(|tokens| {
            let t = tokens
                .iter_mut()
                .find(|t| t.id == id)
                .ok_or_else(|| Error::UnknownId(id.to_string()))?;
            if t.revoked.is_none() {
                t.revoked = Some(Utc::now());
            }
            Ok(t.clone())
        })
    }

    /// Runs `f` on the tokens under the lock and writes the result.
    fn change<T>(&self, f: impl FnOnce(&mut Vec<TokenRecord>) -> Result<T>) -> Result<T> {
        self.make_dir()?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("cannot open", &lock_path))?;
        lock.lock().map_err(io("cannot lock", &lock_path))?;
        let result = self.change_locked(f);
        let _ = lock.unlock();
        result
    }

    fn change_locked<T>(&self, f: impl FnOnce(&mut Vec<TokenRecord>) -> Result<T>) -> Result<T> {
        let mut tokens = self.read()?;
        let out = f(&mut tokens)?;
        let text = serde_json::to_vec_pretty(&Contents {
            version: VERSION,
            tokens,
        })
        .map_err(|e| Error::Invalid(format!("cannot serialize the token file: {e}")))?;
        write_secret(&self.path(), &text)?;
        Ok(out)
    }

    fn make_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io("cannot create", &self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io("cannot restrict", &self.dir))
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, mode `0600` (the
/// token file, and the admin token the server writes at start).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("cannot create", &tmp))?;
    f.write_all(bytes).map_err(io("cannot write", &tmp))?;
    f.sync_all().map_err(io("cannot sync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("cannot replace", path))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync", parent))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_revoke_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(&dir.path().join("data"));
        assert!(file.read().unwrap().is_empty());
        assert_eq!(file.version().unwrap(), None);
        let a = file
            .create("Custos::User::\"ana\"", None, "laptop")
            .unwrap();
        let v1 = file.version().unwrap();
        let b = file.create("Custos::Service::\"ci\"", None, "").unwrap();
        assert_ne!(file.version().unwrap(), v1, "a change is a new version");
        let again = TokenFile::new(&dir.path().join("data"));
        let listed = again.read().unwrap();
        assert_eq!(listed, vec![a.record.clone(), b.record.clone()]);
        let text = fs::read_to_string(again.path()).unwrap();
        assert!(!text.contains(&a.token), "the secret is never stored");
        let revoked = again.revoke(&a.record.id).unwrap();
        assert!(revoked.revoked.is_some());
        assert_eq!(again.revoke(&a.record.id).unwrap(), revoked, "idempotent");
        assert!(matches!(again.revoke("nope"), Err(Error::UnknownId(_))));
        let mode = fs::metadata(again.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(again.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn past_expiry_and_damaged_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let past = Utc::now() - chrono::Duration::seconds(5);
        let e = file
            .create("Custos::User::\"ana\"", Some(past), "")
            .unwrap_err();
        assert!(e.to_string().contains("in the past"), "{e}");
        fs::create_dir_all(file.dir()).unwrap();
        fs::write(file.path(), "{\"version\": 1, \"tokens\": [{\"id\": 3}]}").unwrap();
        let e = file.read().unwrap_err().to_string();
        assert!(e.contains("tokens.json") && e.contains("damaged"), "{e}");
        fs::write(file.path(), "{\"version\": 9, \"tokens\": []}").unwrap();
        let e = file.read().unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let file = TokenFile::new(dir.path());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        file.create(&format!("Custos::User::\"u{i}\""), None, "")
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(TokenFile::new(dir.path()).read().unwrap().len(), 40);
    }
}
