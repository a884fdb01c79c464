//! Whether the data directory is encrypted at rest, said once at start (docs/adr/0007, decision
//! 9): custos relies on the volume's encryption, so it detects a dm-crypt (LUKS) device under the
//! data directory, accepts a declaration for what it cannot see (a cloud provider's encrypted
//! volume), and warns otherwise.

use std::path::{Path, PathBuf};

/// What protects the data directory at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtRest {
    /// The data directory's filesystem is on a dm-crypt device (directly or under LVM).
    DmCrypt {
        /// The device, e.g. `dm-0`.
        device: String,
    },
    /// `[store] encryption_at_rest` declares it (what custos cannot detect).
    Declared(String),
    /// Nothing custos can detect, and nothing declared.
    None,
}

impl AtRest {
    /// The value of `/api/status`'s `encryption_at_rest`.
    pub fn describe(&self) -> String {
        match self {
            AtRest::DmCrypt { device } => format!("dm-crypt ({device})"),
            AtRest::Declared(what) => format!("declared: {what}"),
            AtRest::None => "none detected".into(),
        }
    }
}

/// Detects what protects `data_dir`; a declaration wins over detection.
pub fn check(data_dir: &Path, declared: Option<&str>) -> AtRest {
    if let Some(d) = declared {
        return AtRest::Declared(d.to_string());
    }
    let Ok(path) = data_dir.canonicalize() else {
        return AtRest::None;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return AtRest::None;
    };
    let Some(dev) = device_of(&mountinfo, &path) else {
        return AtRest::None;
    };
    match crypt_device(&PathBuf::from("/sys/dev/block").join(&dev), 0) {
        Some(device) => AtRest::DmCrypt { device },
        None => AtRest::None,
    }
}

/// The `major:minor` of the mount holding `path`: the longest mount point that contains it.
fn device_of(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Fields: id, parent, major:minor, root, mount point, ...
            let (dev, point) = (f.get(2)?, f.get(4)?);
            let point = unescape(point);
            path.starts_with(&point)
                .then(|| (point.as_os_str().len(), (*dev).to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, dev)| dev)
}

/// Mount points escape spaces and a few other characters as `\ooo` octal.
fn unescape(s: &str) -> PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// The dm-crypt device at or under the block device `sys` (`/sys/dev/block/M:m`), looking through
/// device-mapper layers (LVM on LUKS) and from a partition to its disk's holders.
fn crypt_device(sys: &Path, depth: usize) -> Option<String> {
    if depth > 8 {
        return None;
    }
    let name = || {
        std::fs::canonicalize(sys)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    if let Ok(uuid) = std::fs::read_to_string(sys.join("dm/uuid"))
        && uuid.starts_with("CRYPT-")
    {
        return name();
    }
    let slaves = std::fs::read_dir(sys.join("slaves")).ok()?;
    slaves
        .filter_map(|s| s.ok())
        .find_map(|s| crypt_device(&s.path(), depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 253:0 / / rw,relatime - ext4 /dev/mapper/root rw
30 22 8:1 / /boot rw,relatime - ext4 /dev/sda1 rw
41 22 253:2 / /srv/custos\\040data rw,relatime - xfs /dev/mapper/data rw
";

    #[test]
    fn the_longest_mount_point_holding_the_path_names_the_device() {
        assert_eq!(
            device_of(MOUNTINFO, Path::new("/srv/custos data/x")).as_deref(),
            Some("253:2")
        );
        assert_eq!(
            device_of(MOUNTINFO, Path::new("/boot/grub")).as_deref(),
            Some("8:1")
        );
        assert_eq!(
            device_of(MOUNTINFO, Path::new("/srv/custos")).as_deref(),
            Some("253:0")
        );
    }

    #[test]
    fn dm_crypt_is_found_through_lvm_layers() {
        let sys = tempfile::tempdir().unwrap();
        let (lvm, luks) = (sys.path().join("dm-2"), sys.path().join("dm-1"));
        for (d, uuid) in [(&lvm, "LVM-abc"), (&luks, "CRYPT-LUKS2-0123-dm")] {
            std::fs::create_dir_all(d.join("dm")).unwrap();
            std::fs::write(d.join("dm/uuid"), uuid).unwrap();
        }
        std::fs::create_dir_all(lvm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(&luks, lvm.join("slaves/dm-1")).unwrap();
        assert_eq!(crypt_device(&lvm, 0).as_deref(), Some("dm-1"));
        std::fs::write(luks.join("dm/uuid"), "LVM-plain").unwrap();
        assert_eq!(crypt_device(&lvm, 0), None);
    }

    #[test]
    fn a_declaration_wins_and_this_machine_gives_an_answer_without_failing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            check(dir.path(), Some("aws-ebs-kms")),
            AtRest::Declared("aws-ebs-kms".into())
        );
        // Whatever this machine's volume is, the check answers (it never fails the start).
        let here = check(dir.path(), None);
        assert!(
            matches!(here, AtRest::None | AtRest::DmCrypt { .. }),
            "{here:?}"
        );
        assert_eq!(AtRest::None.describe(), "none detected");
    }
}
