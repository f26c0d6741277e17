//! The controller's record of provisioned volumes: one small JSON file per volume name.
//!
//! CreateVolume must answer ALREADY_EXISTS when a name comes back with other parameters or
//! another capacity range, and ValidateVolumeCapabilities NOT_FOUND for a volume that does
//! not exist: both need what was created under a name, and nothing else does (the node
//! reads a provisioned volume from its PV's `volume_context`). Files under
//! `<state-dir>/controller/` survive a restart of the plugin and need no API access or
//! RBAC; why that is enough, and how little is lost with them (volume ids are derived from
//! the request, [`crate::provision`]), is in docs/csi.md, "StorageClass provisioning".
//!
//! Layout and safety: `<dir>/<hash of the name>.json`; the volume id carries the same hash,
//! so DeleteVolume and ValidateVolumeCapabilities find the record without a scan. A record
//! is written to a temporary file, synced and renamed into place, so a crash leaves the old
//! record or the new one, never half of one. Operations on one name are serialised by a
//! per-name lock; the external-provisioner's leader election keeps a second controller
//! replica from writing at the same time.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::locks::KeyedLocks;
use crate::provision::{Capacity, Provision, name_hash, name_key};
use crate::volume::{AttributeError, VolumeSpec};

/// A failure of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name exists with other parameters or another capacity range.
    #[error(
        "volume {name:?} already exists with other parameters or capacity (existing: {existing}; requested: {requested})"
    )]
    Conflict {
        /// The volume name.
        name: String,
        /// What the existing volume was created with.
        existing: String,
        /// What the new request asks for.
        requested: String,
    },
    /// Two names with the same 64-bit hash (refused, not merged).
    #[error("volume name {name:?} collides with the recorded name {recorded:?}")]
    Collision {
        /// The requested name.
        name: String,
        /// The name already recorded under the same hash.
        recorded: String,
    },
    /// A record could not be read or written.
    #[error("volume record {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The record directory does not take a file (part of Probe).
    #[error("the volume record directory {} is not writable: {source}", dir.display())]
    NotWritable {
        /// The record directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record that is not valid JSON (or one that could not be encoded).
    #[error("volume record {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A record whose spec does not validate.
    #[error("volume record {path} is corrupt: {source}")]
    InvalidSpec {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: AttributeError,
    },
}

/// What was created under one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The name of the CreateVolume request.
    pub name: String,
    /// The id handed out.
    pub volume_id: String,
    /// The volume's spec in canonical form ([`VolumeSpec::canonical`]).
    pub spec: String,
    /// The requested capacity range.
    pub capacity: Capacity,
}

impl VolumeRecord {
    /// The record's spec.
    pub fn volume_spec(&self) -> Result<VolumeSpec, AttributeError> {
        VolumeSpec::from_canonical(&self.spec)
    }

    fn describe(spec: &str, capacity: &Capacity) -> String {
        format!("spec {spec:?}, capacity {capacity}")
    }
}

/// The records of provisioned volumes in one directory.
#[derive(Debug)]
pub struct VolumeStore {
    dir: PathBuf,
    names: KeyedLocks<String>,
}

impl VolumeStore {
    /// A store keeping its records in `dir` (created by [`VolumeStore::prepare`]).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            names: KeyedLocks::default(),
        }
    }

    /// The record directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the record directory.
    pub fn prepare(&self) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))
    }

    /// Checks that records can be written (part of Probe): writes and removes a file.
    pub fn check(&self) -> Result<(), StoreError> {
        let probe = self.dir.join(".probe");
        std::fs::write(&probe, b"ok")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|source| StoreError::NotWritable {
                dir: self.dir.clone(),
                source,
            })
    }

    /// Records `provision` and returns its record; a repeated identical request returns the
    /// existing record (idempotence), a different one under the same name is a conflict.
    pub fn create(&self, provision: &Provision) -> Result<VolumeRecord, StoreError> {
        let key = name_hash(&provision.name);
        let _guard = self.names.lock(key.clone());
        let spec = provision.spec.canonical();
        if let Some(existing) = self.read(&key)? {
            if existing.name != provision.name {
                return Err(StoreError::Collision {
                    name: provision.name.clone(),
                    recorded: existing.name,
                });
            }
            if existing.spec == spec && existing.capacity == provision.capacity {
                return Ok(existing);
            }
            return Err(StoreError::Conflict {
                name: provision.name.clone(),
                existing: VolumeRecord::describe(&existing.spec, &existing.capacity),
                requested: VolumeRecord::describe(&spec, &provision.capacity),
            });
        }
        let record = VolumeRecord {
            name: provision.name.clone(),
            volume_id: provision.volume_id(),
            spec,
            capacity: provision.capacity,
        };
        self.write(&key, &record)?;
        Ok(record)
    }

    /// The record of `volume_id`, if this store handed it out and it was not deleted.
    pub fn get(&self, volume_id: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let Some(key) = name_key(volume_id) else {
            return Ok(None);
        };
        let _guard = self.names.lock(key.to_owned());
        Ok(self.read(key)?.filter(|r| r.volume_id == volume_id))
    }

    /// Forgets `volume_id`; true if it was recorded (an unknown id is not an error).
    pub fn delete(&self, volume_id: &str) -> Result<bool, StoreError> {
        let Some(key) = name_key(volume_id) else {
            return Ok(false);
        };
        let _guard = self.names.lock(key.to_owned());
        match self.read(key)? {
            Some(record) if record.volume_id == volume_id => {
                let path = self.path(key);
                std::fs::remove_file(&path).map_err(self.io(&path))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn io<'a>(&self, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn read(&self, key: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let path = self.path(key);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path)(e)),
        };
        let record: VolumeRecord =
            serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?;
        record
            .volume_spec()
            .map_err(|source| StoreError::InvalidSpec {
                path: path.clone(),
                source,
            })?;
        Ok(Some(record))
    }

    fn write(&self, key: &str, record: &VolumeRecord) -> Result<(), StoreError> {
        let path = self.path(key);
        let temporary = self.dir.join(format!(".{key}.json.tmp"));
        let text = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut file = std::fs::File::create(&temporary).map_err(self.io(&temporary))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(self.io(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(self.io(&path))?;
        // Make the rename itself durable.
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(self.io(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::csi::CreateVolumeRequest;
    use crate::proto::csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
    use crate::proto::csi::{CapacityRange, VolumeCapability};

    fn provision(name: &str, repositories: &str, required_bytes: i64) -> Provision {
        Provision::from_request(&CreateVolumeRequest {
            name: name.to_owned(),
            volume_capabilities: vec![VolumeCapability {
                access_mode: Some(AccessMode {
                    mode: access_mode::Mode::MultiNodeReaderOnly as i32,
                }),
                access_type: Some(AccessType::Mount(MountVolume::default())),
            }],
            parameters: [("repositories".to_owned(), repositories.to_owned())].into(),
            capacity_range: Some(CapacityRange {
                required_bytes,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap()
    }

    fn store() -> (tempfile::TempDir, VolumeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(dir.path().join("controller"));
        store.prepare().unwrap();
        (dir, store)
    }

    #[test]
    fn create_is_idempotent_by_name_and_refuses_changes() {
        let (_dir, store) = store();
        let first = store.create(&provision("pvc-1", "a.ch,b.ch", 10)).unwrap();
        let again = store.create(&provision("pvc-1", "b.ch,a.ch", 10)).unwrap();
        assert_eq!(first, again);
        assert!(matches!(
            store.create(&provision("pvc-1", "a.ch", 10)),
            Err(StoreError::Conflict { .. })
        ));
        assert!(matches!(
            store.create(&provision("pvc-1", "a.ch,b.ch", 20)),
            Err(StoreError::Conflict { .. })
        ));
        let other = store.create(&provision("pvc-2", "a.ch,b.ch", 10)).unwrap();
        assert_ne!(other.volume_id, first.volume_id);
    }

    #[test]
    fn records_survive_a_new_store_and_delete_is_idempotent() {
        let (_dir, store) = store();
        let record = store.create(&provision("pvc-1", "a.ch", 0)).unwrap();
        let reopened = VolumeStore::new(store.dir().to_owned());
        assert_eq!(
            reopened.get(&record.volume_id).unwrap(),
            Some(record.clone())
        );
        assert_eq!(reopened.get("pv-static").unwrap(), None);
        // Same name hash, other content: not this volume.
        let (prefix, content) = record.volume_id.rsplit_once('-').unwrap();
        let other = if content == "0000000000000000" {
            "1111111111111111"
        } else {
            "0000000000000000"
        };
        let sibling = format!("{prefix}-{other}");
        assert_eq!(reopened.get(&sibling).unwrap(), None);
        assert!(!reopened.delete(&sibling).unwrap());
        assert!(reopened.delete(&record.volume_id).unwrap());
        assert!(!reopened.delete(&record.volume_id).unwrap());
        assert!(!reopened.delete("garbage").unwrap());
        assert_eq!(reopened.get(&record.volume_id).unwrap(), None);
        // Gone means gone: the name can be created again, with other parameters too.
        reopened.create(&provision("pvc-1", "b.ch", 0)).unwrap();
    }

    #[test]
    fn corrupt_records_are_reported_not_overwritten() {
        let (_dir, store) = store();
        let key = name_hash("pvc-1");
        std::fs::write(store.dir().join(format!("{key}.json")), "{").unwrap();
        let err = store.create(&provision("pvc-1", "a.ch", 0)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let record = store.create(&provision("pvc-2", "a.ch", 0)).unwrap();
        let path = store.dir().join(format!("{}.json", name_hash("pvc-2")));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(&record.spec, "not a spec")).unwrap();
        let err = store.get(&record.volume_id).unwrap_err();
        assert!(matches!(err, StoreError::InvalidSpec { .. }), "{err}");
        assert!(err.to_string().contains("is corrupt: "), "{err}");
    }

    #[test]
    fn probe_fails_without_the_directory() {
        let (dir, store) = store();
        store.check().unwrap();
        std::fs::remove_dir_all(dir.path().join("controller")).unwrap();
        let err = store.check().unwrap_err();
        assert!(matches!(err, StoreError::NotWritable { .. }), "{err}");
        assert!(err.to_string().starts_with(&format!(
            "the volume record directory {} is not writable: ",
            store.dir().display()
        )));
    }
}
