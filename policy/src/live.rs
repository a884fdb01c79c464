//! The engine in force while a server runs, replaceable by a reload.
//!
//! A reader takes the engine in force when it starts deciding and keeps it to the end, so one
//! decision never mixes two policy sets; a reload swaps in a fully loaded and validated engine for
//! every later reader. Nothing here loads files: a reload that fails leaves the engine in force.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::engine::Engine;

/// A shared, replaceable [`Engine`]; clones share it.
#[derive(Debug, Clone)]
pub struct Live {
    current: Arc<RwLock<Arc<Engine>>>,
    generation: Arc<AtomicU64>,
}

impl Live {
    /// `engine` in force, generation 0.
    pub fn new(engine: Engine) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(engine))),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The engine in force now.
    pub fn current(&self) -> Arc<Engine> {
        // A writer only ever stores a whole engine, so a poisoned lock still holds a valid one.
        match self.current.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How many times the engine was replaced: caches of decisions key on it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `engine` in force for every later reader; returns the one it replaces.
    pub fn replace(&self, engine: Engine) -> Arc<Engine> {
        let new = Arc::new(engine);
        let old = match self.current.write() {
            Ok(mut e) => std::mem::replace(&mut *e, new),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        old
    }
}

impl From<Engine> for Live {
    fn from(engine: Engine) -> Self {
        Self::new(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &std::path::Path) -> Engine {
        Engine::load(dir).unwrap()
    }

    #[test]
    fn a_replacement_reaches_every_clone_and_readers_keep_what_they_took() {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/policy");
        let tmp = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&shipped).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
            }
        }
        let live = Live::new(load(tmp.path()));
        let other = live.clone();
        let held = live.current();
        let before = held.hash().to_string();
        assert_eq!(live.generation(), 0);

        let entities = tmp.path().join("entities.json");
        let text = std::fs::read_to_string(&entities).unwrap();
        std::fs::write(&entities, text.replacen("[", "[ ", 1)).unwrap();
        let old = live.replace(load(tmp.path()));

        assert_eq!(old.hash(), before);
        assert_eq!(held.hash(), before, "a reader keeps the engine it took");
        assert_ne!(other.current().hash(), before, "clones see the new engine");
        assert_eq!(other.generation(), 1);
    }
}
