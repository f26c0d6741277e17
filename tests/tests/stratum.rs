//! The test stratum 0 with the real `cvmfs_server`: repositories named like production
//! ones with tagged revisions, served on 127.0.0.1, and nothing left on the host after it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use hepbatch_tests::cvmfs::{self, Revision, Stratum, content};

#[test]
fn a_stratum_publishes_tagged_revisions_and_leaves_nothing_behind() {
    assert!(
        cvmfs::installed(),
        "the CVMFS client and server tools are not installed: run tests/cvmfs/build.sh"
    );
    let fstab_before = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
    let started = Instant::now();
    let stratum = Stratum::start(&content::standard()).unwrap();
    eprintln!(
        "stratum with {} repositories in {:?}",
        stratum.repositories().len(),
        started.elapsed()
    );
    assert_eq!(
        stratum.repositories(),
        [
            "cms.cern.ch",
            "sft.cern.ch",
            "atlas.cern.ch",
            "unpacked.cern.ch"
        ]
    );
    let tags = stratum.tags("cms.cern.ch").unwrap();
    let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    for expected in ["v1", "v2", "trunk"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let v1 = tags.iter().find(|t| t.name == "v1").unwrap();
    let v2 = tags.iter().find(|t| t.name == "v2").unwrap();
    assert!(v1.revision < v2.revision);
    let latest = stratum.manifest("cms.cern.ch").unwrap();
    assert!(latest.revision > v2.revision);
    assert_ne!(latest.root_hash, v2.root_hash);
    for repository in stratum.repositories() {
        assert!(
            stratum
                .keys_dir()
                .join(format!("{repository}.pub"))
                .is_file()
        );
    }
    // A new revision moves the manifest on.
    let next = stratum
        .publish(
            "sft.cern.ch",
            &Revision::tagged("later", vec![cvmfs::File::new("version", "sft later\n")]),
        )
        .unwrap();
    assert!(next.revision > 1);
    // The host's configuration is untouched.
    assert_eq!(
        std::fs::read_to_string("/etc/fstab").unwrap_or_default(),
        fstab_before
    );
    assert!(!std::path::Path::new("/etc/cvmfs/repositories.d/cms.cern.ch").exists());
    assert!(!std::path::Path::new("/srv/cvmfs/cms.cern.ch").exists());
    drop(stratum);
}
