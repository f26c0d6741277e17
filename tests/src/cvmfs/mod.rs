//! Real CernVM-FS for tests: the client and server tools (built by `tests/cvmfs/build.sh`),
//! a stratum 0 with repositories named like production ones ([`stratum`]), the trees they
//! hold ([`content`]) and the HTTP server that serves them ([`http`]).

pub mod content;
pub mod http;
pub mod stratum;

pub use content::{File, Repository, Revision};
pub use stratum::{Manifest, Stratum, StratumError, Tag};

/// Whether the CVMFS client (`cvmfs2`) and server tools are installed.
pub fn installed() -> bool {
    ["/usr/bin/cvmfs2", "/usr/bin/cvmfs_server"]
        .iter()
        .all(|p| std::path::Path::new(p).exists())
}
