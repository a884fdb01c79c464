//! WAL segments: any bytes as the newest segment are checked, read and opened (salvage's check,
//! replay, the writer's own open) with an error at worst.
#![no_main]

use std::sync::OnceLock;

use custos_store::wal::{self, Wal, WalOptions};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fuzz_target!(|segment: &[u8]| {
    let dir = dir().join("wal");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{:020}.wal", 1)), segment).unwrap();
    let _ = wal::salvage::check(&dir);
    let _ = wal::read_after(&dir, 0);
    let options = WalOptions { segment_bytes: 1 << 20, sync: false };
    let _ = Wal::open(&dir, 0, options);
});
