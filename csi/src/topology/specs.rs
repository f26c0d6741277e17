//! The text of each distinct volume spec, content-addressed under `<state>/specs/`.
//!
//! A published volume's mount source names its spec by key (a hash of the canonical
//! text), because the kernel limits a mount source to a page and a spec may be longer.
//! A record is written (to a temporary file, synced, renamed) before the volume is
//! mounted and never changes; records no mount names any more are removed by the reaper.
//! A key that already names another text (a hash collision) is refused, so two specs can
//! never share a record.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::volume::VolumeSpec;

/// A spec record could not be written or is in conflict.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Writing the record failed.
    #[error("recording the volume spec in {path}: {source}")]
    Io {
        /// The record.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Two different specs hash to one key.
    #[error("volume spec key {key} already records another spec")]
    Collision {
        /// The key.
        key: String,
    },
}

/// The records, with the ones read so far cached (they never change).
#[derive(Debug)]
pub struct SpecStore {
    dir: PathBuf,
    cache: Mutex<HashMap<String, VolumeSpec>>,
    writing: Mutex<()>,
}

impl SpecStore {
    /// Records under `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            cache: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
        }
    }

    /// The key of `spec`.
    pub fn key(spec: &VolumeSpec) -> String {
        crate::hash::fnv1a_hex(spec.canonical().as_bytes())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Makes sure `spec` is recorded; returns its key.
    pub fn record(&self, spec: &VolumeSpec) -> Result<String, SpecError> {
        let key = Self::key(spec);
        if let Some(known) = self.cache().get(&key) {
            return if known == spec {
                Ok(key)
            } else {
                Err(SpecError::Collision { key })
            };
        }
        // One writer at a time: concurrent publishes of one spec write one record.
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(&key);
        let canonical = spec.canonical();
        let io = |source| SpecError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) if text == canonical => {}
            Ok(_) => return Err(SpecError::Collision { key }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir).map_err(io)?;
                let temporary = self.dir.join(format!(".{key}.{}", std::process::id()));
                let mut file = std::fs::File::create(&temporary).map_err(io)?;
                file.write_all(canonical.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                std::fs::rename(&temporary, &path).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        self.cache().insert(key.clone(), spec.clone());
        Ok(key)
    }

    /// The spec recorded under `key`, if there is one.
    pub fn load(&self, key: &str) -> Option<VolumeSpec> {
        if let Some(spec) = self.cache().get(key) {
            return Some(spec.clone());
        }
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        let spec = VolumeSpec::from_canonical(&text).ok()?;
        (Self::key(&spec) == key).then(|| {
            self.cache().insert(key.to_owned(), spec.clone());
            spec
        })
    }

    /// Removes the record `key`.
    pub fn forget(&self, key: &str) {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.cache().remove(key);
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Removes every record whose key is not in `keep`; returns how many.
    pub fn retain(&self, keep: &HashSet<String>) -> usize {
        self.cache().retain(|key, _| keep.contains(key));
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || keep.contains(&name) {
                continue;
            }
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, VolumeSpec>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(canonical: &str) -> VolumeSpec {
        VolumeSpec::from_canonical(canonical).unwrap()
    }

    #[test]
    fn records_round_trip_and_survive_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpecStore::new(dir.path().join("specs"));
        let listed = spec("cms.cern.ch,sft.cern.ch|cms.cern.ch@tag=v2");
        let key = store.record(&listed).unwrap();
        assert_eq!(store.record(&listed).unwrap(), key);
        let fresh = SpecStore::new(dir.path().join("specs"));
        assert_eq!(fresh.load(&key), Some(listed));
        assert_eq!(fresh.load("0000000000000000"), None);
        assert_eq!(fresh.load("../etc/passwd"), None);
    }

    #[test]
    fn a_key_naming_another_text_is_a_collision() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpecStore::new(dir.path().to_owned());
        let listed = spec("cms.cern.ch|");
        let key = SpecStore::key(&listed);
        std::fs::write(dir.path().join(&key), "sft.cern.ch|").unwrap();
        assert!(matches!(
            store.record(&listed),
            Err(SpecError::Collision { .. })
        ));
        // A tampered record is not read as the spec of its key either.
        assert_eq!(store.load(&key), None);
    }

    #[test]
    fn concurrent_records_of_one_spec_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SpecStore::new(dir.path().join("specs")));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || store.record(&spec("cms.cern.ch|")).unwrap())
            })
            .collect();
        let keys: HashSet<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn unused_records_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpecStore::new(dir.path().to_owned());
        let a = store.record(&spec("cms.cern.ch|")).unwrap();
        let b = store.record(&spec("*|")).unwrap();
        assert_eq!(store.retain(&[a.clone()].into()), 1);
        assert!(store.load(&a).is_some());
        assert!(store.load(&b).is_none());
    }
}
