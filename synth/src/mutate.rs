//! Seeded mutations of the fuzz corpus (`fuzz/corpus/TARGET`), for the parsers' property tests:
//! the same inputs `cargo fuzz` starts from, damaged the way a fuzzer damages them (a byte
//! changed, inserted or removed, a cut, a range repeated), so that CI exercises every parser
//! near its valid inputs in seconds while the coverage-guided fuzzers run for minutes
//! (`scripts/fuzz.sh`, docs/fuzzing.md).

use std::path::Path;

/// One edit: where (taken modulo the input's length), which kind (taken modulo 5) and a byte.
pub type Edit = (usize, u8, u8);

/// `base` with `edits` applied in order.
pub fn apply(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = base.to_vec();
    for &(at, kind, byte) in edits {
        let len = out.len();
        let i = if len == 0 { 0 } else { at % len };
        match kind % 5 {
            0 if len > 0 => out[i] = byte,
            1 => out.insert(i.min(len), byte),
            2 if len > 0 => {
                out.remove(i);
            }
            3 => out.truncate(i),
            4 if len > 0 => {
                let n = (usize::from(byte) + 1).min(len - i);
                let copy = out[i..i + n].to_vec();
                out.splice(i..i, copy);
            }
            _ => out.push(byte),
        }
    }
    out
}

/// The files of a corpus directory, sorted by name (empty when it cannot be read).
pub fn corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_edit_changes_the_input_as_named() {
        let base = b"abcdef";
        assert_eq!(apply(base, &[(1, 0, b'X')]), b"aXcdef");
        assert_eq!(apply(base, &[(1, 1, b'X')]), b"aXbcdef");
        assert_eq!(apply(base, &[(7, 2, 0)]), b"acdef");
        assert_eq!(apply(base, &[(3, 3, 0)]), b"abc");
        assert_eq!(apply(base, &[(4, 4, 1)]), b"abcdefef");
        assert_eq!(apply(b"", &[(9, 0, b'X')]), b"X");
        assert_eq!(apply(b"X", &[(9, 2, 0)]), b"");
        assert_eq!(apply(base, &[]), base);
    }

    #[test]
    fn the_corpus_of_a_missing_directory_is_empty() {
        assert!(corpus(Path::new("/nonexistent/custos")).is_empty());
    }
}
