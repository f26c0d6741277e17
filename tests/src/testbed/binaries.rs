//! Finding the component binaries that `tests/testbed/build.sh` builds into its cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestbedError;

/// Environment variable that points at a directory of prebuilt components instead.
pub const BIN_DIR_ENV: &str = "HEPBATCH_TESTBED_BIN";

/// Every binary the build script produces.
pub const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kwok",
    "csi-sanity",
    "helm",
];

/// The directory holding the testbed's component binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Path of the build script in this repository.
    pub fn build_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/build.sh")
    }

    /// Finds already built binaries (`$HEPBATCH_TESTBED_BIN`, else the build cache).
    /// Fails with a hint when they are not built yet.
    pub fn locate() -> Result<Self, TestbedError> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return Self::checked(PathBuf::from(dir));
        }
        Self::run_script(&["--bin-dir"])
    }

    /// Builds the binaries if the cache does not have them (takes long the first time),
    /// then locates them.
    pub fn ensure_built() -> Result<Self, TestbedError> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return Self::checked(PathBuf::from(dir));
        }
        Self::run_script(&[])
    }

    fn run_script(args: &[&str]) -> Result<Self, TestbedError> {
        let script = Self::build_script();
        let output = Command::new("bash")
            .arg(&script)
            .args(args)
            .stderr(if args.is_empty() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::piped()
            })
            .output()
            .map_err(|source| TestbedError::Io {
                what: format!("running {}", script.display()),
                source,
            })?;
        if !output.status.success() {
            return Err(TestbedError::NotBuilt(format!(
                "{} (build them with `make testbed` or `bash {}`)",
                String::from_utf8_lossy(&output.stderr).trim(),
                script.display()
            )));
        }
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Self::checked(PathBuf::from(dir))
    }

    fn checked(dir: PathBuf) -> Result<Self, TestbedError> {
        for component in COMPONENTS {
            if !dir.join(component).is_file() {
                return Err(TestbedError::NotBuilt(format!(
                    "{component} is missing from {}",
                    dir.display()
                )));
            }
        }
        Ok(Self { dir })
    }

    /// Path of one component binary.
    pub fn path(&self, component: &str) -> PathBuf {
        self.dir.join(component)
    }

    /// The directory itself (to put on `PATH`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
