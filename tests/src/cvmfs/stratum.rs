//! A real CernVM-FS stratum 0 for tests: repositories named like production ones
//! (`cms.cern.ch`, `sft.cern.ch`, `unpacked.cern.ch`, ...), tagged revisions published
//! with the real `cvmfs_server`, served over HTTP on 127.0.0.1.
//!
//! `cvmfs_server` keeps its state in fixed places (`/etc/cvmfs/repositories.d`,
//! `/etc/cvmfs/keys`, `/etc/fstab`, `/srv/cvmfs`, `/var/spool/cvmfs`, `/cvmfs`) and
//! decides between systemd and service(8) by the mere presence of `/bin/systemctl`.
//! So every call runs inside one private mount namespace of the stratum's own, in which
//! - `/etc` is an overlay whose upper layer is the stratum's directory: repository
//!   configuration, keys, fstab lines, Apache's module links land there, never in the
//!   host's `/etc`;
//! - `/srv`, `/var/spool` and `/cvmfs` are binds of the stratum's own directories;
//! - the directory of `systemctl` is an overlay carrying a small shim that turns
//!   `start|restart|stop <path>.mount` into mount(8)/umount(8) and everything else into
//!   success (no service manager runs here, and Apache is not needed: the stratum serves
//!   its files itself).
//!
//! Several strata can therefore exist side by side, and removing one is killing the
//! processes of its namespace and deleting its directory, which [`Stratum`]'s `Drop` does
//! (also after a failed test). The published repositories are plain files in
//! `<dir>/srv/cvmfs/<fqrn>`, served by a [`FileServer`] of the stratum at
//! `http://127.0.0.1:<port>/cvmfs/<fqrn>`, the URL clients are configured with.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::content::{Repository, Revision};
use super::http::FileServer;
use crate::testbed::{Registered, register, unregister};

/// A failure to build or use the stratum.
#[derive(Debug, thiserror::Error)]
pub enum StratumError {
    /// The server tools are not installed.
    #[error(
        "the CVMFS server tools are not installed ({0} missing): run tests/cvmfs/build.sh (as root)"
    )]
    NotInstalled(String),
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// Its stdout and stderr.
        output: String,
    },
    /// The manifest could not be read.
    #[error("manifest of {repository}: {reason}")]
    Manifest {
        /// The repository.
        repository: String,
        /// Why.
        reason: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StratumError {
    let what = what.into();
    move |source| StratumError::Io { what, source }
}

/// What a repository's signed manifest (`.cvmfspublished`) says of its current revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The root catalog hash (`C`).
    pub root_hash: String,
    /// The revision number (`S`).
    pub revision: u64,
    /// When it was published, in seconds since the epoch (`T`).
    pub timestamp: u64,
}

/// A named tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Its name.
    pub name: String,
    /// The root hash it names.
    pub root_hash: String,
    /// The revision it names.
    pub revision: u64,
    /// When that revision was published (seconds since the epoch).
    pub timestamp: u64,
}

/// A running stratum 0; dropping it removes everything it made.
#[derive(Debug)]
pub struct Stratum {
    dir: tempfile::TempDir,
    keeper: Child,
    registration: u64,
    namespace_registration: Option<u64>,
    server: FileServer,
    repositories: Vec<String>,
}

/// The `systemctl` the namespace sees.
const SYSTEMCTL_SHIM: &str = r#"#!/bin/sh
# systemctl for cvmfs_server in a test stratum: mount units become mount(8) calls on
# the unescaped path (cvmfs-cms.cern.ch.mount -> /cvmfs/cms.cern.ch), the rest succeeds.
verb=$1
unit=$2
case "$unit" in
  *.mount) ;;
  *) exit 0 ;;
esac
path=$(printf '%s' "${unit%.mount}" | sed -e 's#-#/#g' -e 's#\\x2d#-#g')
path="/$path"
case "$verb" in
  start) /bin/mount "$path" ;;
  restart) /bin/umount "$path" 2>/dev/null; /bin/mount "$path" ;;
  stop) /bin/umount "$path" ;;
  *) exit 0 ;;
esac
"#;

impl Stratum {
    /// Creates and publishes `repositories` (each revision in order, tags as given).
    pub fn start(repositories: &[Repository]) -> Result<Self, StratumError> {
        for program in [
            "/usr/bin/cvmfs_server",
            "/usr/bin/cvmfs2",
            "/usr/bin/cvmfs_swissknife",
        ] {
            if !Path::new(program).exists() {
                return Err(StratumError::NotInstalled(program.to_owned()));
            }
        }
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("hepbatch-stratum-")
            .tempdir()
            .map_err(io("creating the stratum directory"))?;
        let root = dir.path().to_owned();
        for sub in [
            "etc-upper",
            "etc-work",
            "bin-upper",
            "bin-work",
            "srv/cvmfs",
            "spool",
            "cvmfs",
            "keys",
            "trees",
        ] {
            std::fs::create_dir_all(root.join(sub)).map_err(io(format!("creating {sub}")))?;
        }
        let shim = root.join("bin-upper/systemctl");
        std::fs::write(&shim, SYSTEMCTL_SHIM).map_err(io("writing the systemctl shim"))?;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
            .map_err(io("making the shim executable"))?;
        // Mount points the namespace binds over; /cvmfs is created as the client package
        // would, left empty.
        for point in ["/srv", "/var/spool", "/cvmfs"] {
            std::fs::create_dir_all(point).map_err(io(format!("creating {point}")))?;
        }
        let server =
            FileServer::start(root.join("srv/cvmfs"), "/cvmfs").map_err(io("starting HTTP"))?;
        let keeper = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io("starting the namespace"))?;
        let registration = register(Registered::Process(keeper.id()));
        let mut stratum = Self {
            dir,
            keeper,
            registration,
            namespace_registration: None,
            server,
            repositories: Vec::new(),
        };
        stratum.wait_for_namespace()?;
        // A run stopped by a signal kills what cvmfs_server started in the namespace too.
        if let Ok(ns) = std::fs::metadata(format!("/proc/{}/ns/mnt", stratum.keeper.id())) {
            stratum.namespace_registration = Some(register(Registered::MountNamespace(
                std::os::unix::fs::MetadataExt::ino(&ns),
            )));
        }
        stratum.prepare_namespace()?;
        for repository in repositories {
            stratum.create(repository)?;
        }
        tracing::info!(
            took = ?began.elapsed(),
            repositories = repositories.len(),
            url = %stratum.server_url(),
            "stratum 0 ready"
        );
        Ok(stratum)
    }

    fn wait_for_namespace(&self) -> Result<(), StratumError> {
        let own = std::fs::read_link("/proc/self/ns/mnt").map_err(io("reading our namespace"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = self.keeper.id();
        loop {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if theirs.is_some_and(|ns| ns != own) && cmdline.starts_with("sleep") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StratumError::Io {
                    what: "waiting for the stratum's namespace".into(),
                    source: std::io::Error::other("the namespace keeper did not start"),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn prepare_namespace(&self) -> Result<(), StratumError> {
        let root = self.dir.path();
        let bin = std::fs::canonicalize("/bin").map_err(io("resolving /bin"))?;
        let overlay = |lower: &Path, upper: &str, work: &str| {
            format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                root.join(upper).display(),
                root.join(work).display()
            )
        };
        self.run(&[
            "mount",
            "-t",
            "overlay",
            "stratum-etc",
            "-o",
            &overlay(Path::new("/etc"), "etc-upper", "etc-work"),
            "/etc",
        ])?;
        self.run(&[
            "mount",
            "-t",
            "overlay",
            "stratum-bin",
            "-o",
            &overlay(&bin, "bin-upper", "bin-work"),
            &bin.display().to_string(),
        ])?;
        for (source, target) in [
            ("srv", "/srv"),
            ("spool", "/var/spool"),
            ("cvmfs", "/cvmfs"),
        ] {
            self.run(&[
                "mount",
                "--bind",
                &root.join(source).display().to_string(),
                target,
            ])?;
        }
        // cvmfs_server only checks that Apache's configuration directory exists and that
        // `systemctl status` says it runs (the shim does); clients read files we serve.
        self.run(&["mkdir", "-p", "/etc/httpd", "/etc/cvmfs/keys"])?;
        Ok(())
    }

    /// Runs `args` inside the stratum's namespace; returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, StratumError> {
        let output = Command::new("nsenter")
            .arg("-t")
            .arg(self.keeper.id().to_string())
            .args(["-m", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("running {}", args.join(" "))))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(StratumError::Command {
            command: args.join(" "),
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }

    fn create(&mut self, repository: &Repository) -> Result<(), StratumError> {
        let name = repository.name.as_str();
        let url = format!("http://{}/cvmfs/{name}", self.server.address());
        // -p: no Apache configuration; -g: no automatic tags, so the tags are ours (and
        // the undo tags trunk and trunk-previous).
        self.run(&[
            "cvmfs_server",
            "mkfs",
            "-o",
            "root",
            "-w",
            &url,
            "-p",
            "-g",
            name,
        ])?;
        self.repositories.push(name.to_owned());
        for revision in &repository.revisions {
            self.publish(name, revision)?;
        }
        let key = self
            .dir
            .path()
            .join("etc-upper/cvmfs/keys")
            .join(format!("{name}.pub"));
        std::fs::copy(&key, self.keys_dir().join(format!("{name}.pub")))
            .map_err(io(format!("copying the public key of {name}")))?;
        Ok(())
    }

    /// Publishes `revision` as the new latest revision of `repository` (its tree replaces
    /// the previous one).
    pub fn publish(&self, repository: &str, revision: &Revision) -> Result<Manifest, StratumError> {
        let tree = tempfile::Builder::new()
            .prefix(&format!("{repository}-"))
            .tempdir_in(self.dir.path().join("trees"))
            .map_err(io("creating a revision tree"))?;
        revision
            .write(tree.path())
            .map_err(io(format!("writing a revision of {repository}")))?;
        self.run(&["cvmfs_server", "transaction", repository])?;
        let mount = format!("/cvmfs/{repository}");
        let copy = format!(
            "find '{mount}' -mindepth 1 -maxdepth 1 -exec rm -rf {{}} + && cp -a '{}/.' '{mount}/'",
            tree.path().display()
        );
        if let Err(e) = self.run(&["sh", "-c", &copy]) {
            let _ = self.run(&["cvmfs_server", "abort", "-f", repository]);
            return Err(e);
        }
        let mut publish = vec!["cvmfs_server", "publish", "-m", "test revision"];
        if let Some(tag) = &revision.tag {
            publish.extend(["-a", tag.as_str()]);
        }
        publish.push(repository);
        self.run(&publish)?;
        self.manifest(repository)
    }

    /// What `repository`'s manifest says now.
    pub fn manifest(&self, repository: &str) -> Result<Manifest, StratumError> {
        let path = self
            .dir
            .path()
            .join("srv/cvmfs")
            .join(repository)
            .join(".cvmfspublished");
        let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
        parse_manifest(repository, &bytes)
    }

    /// The named tags of `repository`, newest first.
    pub fn tags(&self, repository: &str) -> Result<Vec<Tag>, StratumError> {
        let listing = self.run(&["cvmfs_server", "tag", "-l", "-x", repository])?;
        Ok(parse_tags(&listing))
    }

    /// `CVMFS_SERVER_URL` for clients of this stratum.
    pub fn server_url(&self) -> String {
        format!("http://{}/cvmfs/@fqrn@", self.server.address())
    }

    /// Where the server listens.
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    /// A directory with the public key `<fqrn>.pub` of every repository
    /// (`CVMFS_KEYS_DIR` for clients).
    pub fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// How many HTTP requests the stratum answered so far.
    pub fn requests(&self) -> u64 {
        self.server.requests()
    }

    /// The URL paths requested so far (e.g. to count content objects, `/data/`).
    pub fn requested_paths(&self) -> Vec<String> {
        self.server.paths()
    }

    /// The repositories it serves.
    pub fn repositories(&self) -> &[String] {
        &self.repositories
    }

    fn namespace_processes(&self) -> Vec<i32> {
        let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/mnt", self.keeper.id())) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .collect()
    }
}

impl Drop for Stratum {
    fn drop(&mut self) {
        // The namespace (and with it every mount cvmfs_server made) ends with its last
        // process: the keeper and the read-only clients cvmfs_server started.
        for pid in self.namespace_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.keeper.kill();
        let _ = self.keeper.wait();
        unregister(self.registration);
        if let Some(id) = self.namespace_registration {
            unregister(id);
        }
    }
}

/// Reads the `C`, `S` and `T` fields of a manifest (the text before the `--` line).
pub fn parse_manifest(repository: &str, bytes: &[u8]) -> Result<Manifest, StratumError> {
    let bad = |reason: &str| StratumError::Manifest {
        repository: repository.to_owned(),
        reason: reason.to_owned(),
    };
    let mut root_hash = None;
    let mut revision = None;
    let mut timestamp = None;
    for line in bytes.split(|b| *b == b'\n') {
        if line == b"--" {
            break;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        match line.split_at_checked(1) {
            Some(("C", value)) => root_hash = Some(value.to_owned()),
            Some(("S", value)) => revision = value.parse().ok(),
            Some(("T", value)) => timestamp = value.parse().ok(),
            _ => {}
        }
    }
    Ok(Manifest {
        root_hash: root_hash.ok_or_else(|| bad("no root hash (C)"))?,
        revision: revision.ok_or_else(|| bad("no revision (S)"))?,
        timestamp: timestamp.ok_or_else(|| bad("no timestamp (T)"))?,
    })
}

/// Reads `cvmfs_server tag -l -x`: `name hash size revision timestamp branch description`.
pub fn parse_tags(listing: &str) -> Vec<Tag> {
    listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(Tag {
                name: (*fields.first()?).to_owned(),
                root_hash: (*fields.get(1)?).to_owned(),
                revision: fields.get(3)?.parse().ok()?,
                timestamp: fields.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_tag_listings_are_read() {
        let manifest = b"C0123456789abcdef0123456789abcdef01234567\nB1234\nRd41d8cd98f00b204e9800998ecf8427e\nD240\nS3\nGno\nAno\nNcms.cern.ch\nT1764576000\n--\nabcdef\n\x01\x02";
        let parsed = parse_manifest("cms.cern.ch", manifest).unwrap();
        assert_eq!(parsed.root_hash, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(parsed.revision, 3);
        assert_eq!(parsed.timestamp, 1_764_576_000);
        assert!(parse_manifest("x", b"S1\n--\n").is_err());
        let tags = parse_tags(
            "trunk 0123 4096 4 1764576100 (default) current HEAD\nv1 abcd 4096 2 1764576000 (default) test revision\n",
        );
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[1].name, "v1");
        assert_eq!(tags[1].revision, 2);
    }
}
