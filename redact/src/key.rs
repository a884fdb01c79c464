//! The pseudonym key: 256 random bits in `DATA/redaction/pseudonym.key` (folder `0700`, file
//! `0600`, hex), made on first start. `hash` writes the first 64 bits of HMAC-SHA256(key, value)
//! in hex: without the key a pseudonym cannot be turned back into its value, or checked against a
//! guess; with it, the same value always gives the same pseudonym.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::hmac;

use crate::{Error, Result};

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "redaction/pseudonym.key";

/// A keyed pseudonym function.
#[derive(Clone)]
pub struct PseudonymKey {
    key: hmac::Key,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

fn key_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Key {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

impl PseudonymKey {
    /// The key of `data_dir`, made (and written) when there is none yet.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(e) => Err(key_err(&path, format!("cannot read: {e}"))),
        }
    }

    /// The key of `data_dir` if it has one (offline tools never make one).
    pub fn existing(data_dir: &Path) -> Result<Option<Self>> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(key_err(&path, format!("cannot read: {e}"))),
        }
    }

    /// A key that lives only in this process (pseudonyms made with it match nothing stored).
    pub fn ephemeral() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| key_err(Path::new("(memory)"), format!("no randomness: {e}")))?;
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Self> {
        let bytes =
            hex::decode(text.trim()).map_err(|e| key_err(path, format!("is not hex: {e}")))?;
        if bytes.len() != 32 {
            return Err(key_err(
                path,
                format!(
                    "holds {} bytes, not 32; restore the file from a backup (pseudonyms made with another key do not match)",
                    bytes.len()
                ),
            ));
        }
        Ok(Self::from_bytes(&bytes))
    }

    fn create(path: &Path) -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| key_err(path, format!("no randomness: {e}")))?;
        if write_private(path, format!("{}\n", hex::encode(bytes)).as_bytes())? {
            return Ok(Self::from_bytes(&bytes));
        }
        // Another process made it first: use theirs.
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_err(path, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// The pseudonym of `value`: 16 hex digits.
    pub fn pseudonym(&self, value: &[u8]) -> String {
        let tag = hmac::sign(&self.key, value);
        hex::encode(&tag.as_ref()[..8])
    }
}

/// Writes `bytes` to `path` only if it does not exist, readable by its owner only, in a folder
/// only its owner can enter: written and synced under a temporary name, then linked into place
/// (a link never replaces a file), so a crash leaves either no key or a whole one. Returns false
/// when `path` already existed.
fn write_private(path: &Path, bytes: &[u8]) -> Result<bool> {
    let dir: PathBuf = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(|e| key_err(path, format!("cannot create: {e}")))?;
    // A name of its own for each attempt: processes and threads may race to make the key.
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| key_err(path, format!("no randomness: {e}")))?;
    let tmp = dir.join(format!(".pseudonym.key.{}.tmp", hex::encode(nonce)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let mut f = options
        .open(&tmp)
        .map_err(|e| key_err(&tmp, format!("cannot create: {e}")))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| key_err(&tmp, format!("cannot write: {e}")))?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| key_err(path, format!("cannot sync the folder: {e}")))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(key_err(path, format!("cannot create: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_gives_stable_pseudonyms() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PseudonymKey::existing(dir.path()).unwrap().is_none());
        let k = PseudonymKey::open(dir.path()).unwrap();
        let again = PseudonymKey::open(dir.path()).unwrap();
        assert_eq!(
            k.pseudonym(b"ana@example.com"),
            again.pseudonym(b"ana@example.com")
        );
        assert_ne!(
            k.pseudonym(b"ana@example.com"),
            k.pseudonym(b"ben@example.com")
        );
        assert_eq!(k.pseudonym(b"x").len(), 16);
        let other = PseudonymKey::ephemeral().unwrap();
        assert_ne!(k.pseudonym(b"x"), other.pseudonym(b"x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{k:?}").contains(&k.pseudonym(b"")));
    }

    #[test]
    fn processes_racing_to_make_the_key_end_with_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| PseudonymKey::open(dir.path()).unwrap().pseudonym(b"x")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("redaction"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            [std::ffi::OsString::from("pseudonym.key")],
            "no temporary files left"
        );
    }

    #[test]
    fn a_damaged_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("redaction")).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "abcd\n").unwrap();
        let e = PseudonymKey::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds 2 bytes, not 32"), "{e}");
    }
}
