//! The operator's cluster configuration: what differs between clusters and is decided by
//! the cluster admin, not by the physicist.
//!
//! A YAML file (mounted from a ConfigMap by the Helm chart) holds
//! - `platforms`: platform name → light-weight base image (built-in defaults for `cc7`,
//!   `el8` and `el9`, which the file may override or extend),
//! - `cvmfs`: how pods get `/cvmfs` — the `csi` driver (default), an existing `pvc` of a
//!   cvmfs-csi style driver, or a `hostPath`; with `csi`, the servers, proxies and master
//!   keys the repositories' signed manifests are read with (`consistency: Fleet`),
//! - `gpu`: the RuntimeClass NVIDIA GPU pods run with, where `nvidia` is not the default
//!   runtime,
//! - `security`: the user and group shards run as (a default, and per platform: `cc7`
//!   runs as its image's `cmsusr`), and where `spec.runAsRoot` is allowed (namespaces,
//!   platforms; nowhere by default).
//!
//! Design: [`OperatorConfig`] is plain data parsed strictly (unknown keys are errors, so a
//! typo is reported instead of ignored). [`ConfigWatch`] re-reads the file every few seconds
//! and publishes a new `Arc<OperatorConfig>` only when the file's content changed and
//! parses; a broken edit is logged and the last good configuration stays in force, so a
//! running operator is never left without one. Polling the content (rather than inotify)
//! follows ConfigMap volumes, which are updated by swapping a symlink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hepbatch_crds::RunAs;
use hepbatch_crds::security::MAX_ID;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::revision::{Source, SourceError};
use tracing::{error, info};

/// Image of the `cc7` platform: CentOS 7 with the system packages CMSSW needs.
pub const CC7_IMAGE: &str = "gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms:latest";
/// Image of the `el8` platform: the image behind CMS's `cmssw-el8` wrapper.
pub const EL8_IMAGE: &str = "docker.io/cmssw/el8:x86_64";
/// Image of the `el9` platform: the image behind CMS's `cmssw-el9` wrapper.
pub const EL9_IMAGE: &str = "docker.io/cmssw/el9:x86_64";

/// UID and GID of `cmsusr`, the user of the CMS light-weight images
/// (`cms-cloud/cmssw-docker`'s `cc7-cms` creates it as 1000:1000 and runs as it).
pub const CMSUSR: RunAs = RunAs {
    user: 1000,
    group: Some(1000),
};

/// User and group of shards whose spec and platform name none: a common first user of
/// images, and never root (images that run as root by default would be refused by the
/// kubelet under `runAsNonRoot` without one).
pub const DEFAULT_RUN_AS: RunAs = RunAs {
    user: 1000,
    group: Some(1000),
};

/// How often the configuration file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The operator's cluster configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// Platform name → image. The defaults (`cc7`, `el8`, `el9`) are always present unless
    /// overridden here.
    #[serde(default = "default_platforms", deserialize_with = "merge_platforms")]
    pub platforms: BTreeMap<String, String>,
    /// How pods get `/cvmfs`.
    #[serde(default)]
    pub cvmfs: CvmfsProvider,
    /// GPU settings.
    #[serde(default)]
    pub gpu: GpuConfig,
    /// Who shards run as, and where root is allowed.
    #[serde(default)]
    pub security: SecurityConfig,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            platforms: default_platforms(),
            cvmfs: CvmfsProvider::default(),
            gpu: GpuConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

/// Who shards run as when their spec does not say, and where `spec.runAsRoot` is
/// allowed: the cluster admin's decisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityConfig {
    /// User and group of shards whose platform names none (and of shards with an
    /// `image`).
    #[serde(default = "default_run_as")]
    pub run_as: RunAs,
    /// Platform → the user and group its image is made for; merged over the built-in
    /// `cc7` → `cmsusr` (1000:1000). Applies when the shards run the platform's image.
    #[serde(
        default = "default_platform_users",
        deserialize_with = "merge_platform_users"
    )]
    pub platforms: BTreeMap<String, RunAs>,
    /// Where `spec.runAsRoot: true` is allowed; nowhere unless listed.
    #[serde(default)]
    pub allow_root: RootAllowance,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            run_as: default_run_as(),
            platforms: default_platform_users(),
            allow_root: RootAllowance::default(),
        }
    }
}

impl SecurityConfig {
    /// The user and group of shards running `platform`'s image (`None`: an `image`).
    pub fn run_as(&self, platform: Option<&str>) -> RunAs {
        platform
            .and_then(|p| self.platforms.get(p))
            .copied()
            .unwrap_or(self.run_as)
    }
}

/// Where shards may run as root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootAllowance {
    /// Namespaces whose AnalysisJobs may ask for root.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub namespaces: BTreeSet<String>,
    /// Platforms whose image may run as root (e.g. a CernVM root file system started
    /// through its `/init`), wherever the AnalysisJob is.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub platforms: BTreeSet<String>,
}

impl RootAllowance {
    /// Whether shards in `namespace` running `platform`'s image (`None`: an `image`) may
    /// run as root.
    pub fn allows(&self, namespace: &str, platform: Option<&str>) -> bool {
        self.namespaces.contains(namespace) || platform.is_some_and(|p| self.platforms.contains(p))
    }
}

/// How `/cvmfs` reaches a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "camelCase", deny_unknown_fields)]
pub enum CvmfsProvider {
    /// One inline volume of the hepbatch CSI driver carrying the job's repositories and
    /// pins. The servers, proxies and keys are where the operator reads the repositories'
    /// signed manifests to pin `consistency: Fleet` AnalysisJobs (the Helm chart copies
    /// the CSI plugin's settings).
    #[serde(rename_all = "camelCase")]
    Csi {
        /// `CVMFS_SERVER_URL`: `;`-separated `http://` URLs with `@fqrn@`, tried in order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_url: Option<String>,
        /// `CVMFS_HTTP_PROXY`: `;`-separated groups of `|`-separated proxies
        /// (`http://squid:3128`) or `DIRECT`; absent: direct.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http_proxy: Option<String>,
        /// Master public keys by file name, PEM: `<repository>.pub` is used for that
        /// repository, otherwise every key is tried.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        public_keys: BTreeMap<String, String>,
    },
    /// An existing PersistentVolumeClaim of a cvmfs-csi style driver in the job's
    /// namespace, one `subPath` per repository. Cannot pin.
    #[serde(rename_all = "camelCase")]
    Pvc {
        /// Name of the claim in every namespace that runs AnalysisJobs.
        claim_name: String,
    },
    /// `/cvmfs` of the node (nodes that run CVMFS themselves). Cannot pin.
    #[serde(rename_all = "camelCase")]
    HostPath {
        /// The node's CVMFS mount point.
        #[serde(default = "default_host_path")]
        path: String,
    },
}

impl Default for CvmfsProvider {
    fn default() -> Self {
        CvmfsProvider::csi()
    }
}

impl CvmfsProvider {
    /// The csi provider with no servers configured.
    pub fn csi() -> Self {
        CvmfsProvider::Csi {
            server_url: None,
            http_proxy: None,
            public_keys: BTreeMap::new(),
        }
    }

    /// The provider's name as written in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            CvmfsProvider::Csi { .. } => "csi",
            CvmfsProvider::Pvc { .. } => "pvc",
            CvmfsProvider::HostPath { .. } => "hostPath",
        }
    }

    /// Whether the provider can mount a repository at a pinned revision.
    pub fn can_pin(&self) -> bool {
        matches!(self, CvmfsProvider::Csi { .. })
    }

    /// Where the repositories' manifests are read from (only the csi provider, which can
    /// pin, has one); an error names the configuration key at fault.
    pub fn manifest_source(&self) -> Result<Option<Source>, SourceError> {
        match self {
            CvmfsProvider::Csi {
                server_url,
                http_proxy,
                public_keys,
            } => Source::new(server_url.as_deref(), http_proxy.as_deref(), public_keys).map(Some),
            CvmfsProvider::Pvc { .. } | CvmfsProvider::HostPath { .. } => Ok(None),
        }
    }
}

/// GPU settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuConfig {
    /// RuntimeClass of pods that use NVIDIA GPUs (e.g. `nvidia`); absent: the node's
    /// default runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvidia_runtime_class_name: Option<String>,
}

fn default_host_path() -> String {
    "/cvmfs".to_owned()
}

fn default_platforms() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cc7".to_owned(), CC7_IMAGE.to_owned()),
        ("el8".to_owned(), EL8_IMAGE.to_owned()),
        ("el9".to_owned(), EL9_IMAGE.to_owned()),
    ])
}

fn default_run_as() -> RunAs {
    DEFAULT_RUN_AS
}

fn default_platform_users() -> BTreeMap<String, RunAs> {
    BTreeMap::from([("cc7".to_owned(), CMSUSR)])
}

fn merge_platform_users<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, RunAs>, D::Error> {
    let mut platforms = default_platform_users();
    platforms.extend(BTreeMap::<String, RunAs>::deserialize(deserializer)?);
    Ok(platforms)
}

fn merge_platforms<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let mut platforms = default_platforms();
    platforms.extend(BTreeMap::<String, String>::deserialize(deserializer)?);
    Ok(platforms)
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading the configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("parsing the configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line and column included).
        message: String,
    },
    /// The CVMFS servers, proxies or keys cannot work.
    #[error("the configuration {path} is invalid: {source}")]
    Cvmfs {
        /// The file.
        path: PathBuf,
        /// The setting at fault.
        source: SourceError,
    },
    /// A value is out of place.
    #[error("the configuration {path} is invalid: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        source: Invalid,
    },
}

/// A value of a parsed configuration that cannot work, with the key at fault and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    /// A platform name that no AnalysisJob could name.
    #[error("platform name {name:?} must be a DNS label (lower-case letters, digits, '-')")]
    PlatformName {
        /// The name.
        name: String,
    },
    /// A platform without a usable image.
    #[error("platform {name} has image {image:?}; give an image reference")]
    PlatformImage {
        /// The platform.
        name: String,
        /// Its image as written.
        image: String,
    },
    /// The pvc provider without a claim.
    #[error("cvmfs.claimName must name the PersistentVolumeClaim")]
    ClaimName,
    /// The hostPath provider with a relative path.
    #[error("cvmfs.path must be an absolute host path, not {path:?}")]
    HostPath {
        /// The path as written.
        path: String,
    },
    /// An empty RuntimeClass name.
    #[error("gpu.nvidiaRuntimeClassName must not be empty; remove it instead")]
    RuntimeClass,
    /// A default user that is root: root is only ever asked for by `spec.runAsRoot`.
    #[error(
        "{key}.user must not be 0: shards run as root only when they ask for it          (spec.runAsRoot) where security.allowRoot allows it"
    )]
    RootUser {
        /// The key of the user and group, e.g. `security.platforms.cc7`.
        key: String,
    },
    /// A user or group ID out of range.
    #[error("{key} must be between 0 and {MAX_ID}, not {value}")]
    IdRange {
        /// The key, e.g. `security.runAs.group`.
        key: String,
        /// The value as written.
        value: i64,
    },
    /// A name of `security.allowRoot` that cannot be a namespace or platform.
    #[error("security.allowRoot.{list} entry {name:?} must be a DNS label")]
    AllowRootName {
        /// `namespaces` or `platforms`.
        list: &'static str,
        /// The entry.
        name: String,
    },
}

impl OperatorConfig {
    /// Parses and checks a configuration file's content.
    pub fn parse(path: &Path, text: &str) -> Result<OperatorConfig, ConfigError> {
        let config: OperatorConfig = if text.trim().is_empty() {
            OperatorConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|error| ConfigError::Parse {
                path: path.to_owned(),
                message: error.to_string(),
            })?
        };
        config.check().map_err(|source| ConfigError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        config
            .cvmfs
            .manifest_source()
            .map_err(|source| ConfigError::Cvmfs {
                path: path.to_owned(),
                source,
            })?;
        Ok(config)
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<OperatorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        OperatorConfig::parse(path, &text)
    }

    fn check(&self) -> Result<(), Invalid> {
        for (name, image) in &self.platforms {
            if !is_dns_label(name) {
                return Err(Invalid::PlatformName { name: name.clone() });
            }
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(Invalid::PlatformImage {
                    name: name.clone(),
                    image: image.clone(),
                });
            }
        }
        match &self.cvmfs {
            CvmfsProvider::Pvc { claim_name } if claim_name.is_empty() => Err(Invalid::ClaimName),
            CvmfsProvider::HostPath { path } if !path.starts_with('/') => {
                Err(Invalid::HostPath { path: path.clone() })
            }
            _ => Ok(()),
        }?;
        if let Some(class) = &self.gpu.nvidia_runtime_class_name
            && class.is_empty()
        {
            return Err(Invalid::RuntimeClass);
        }
        self.security.check()
    }

    /// The image of `platform`, if the platform is configured.
    pub fn platform_image(&self, platform: &str) -> Option<&str> {
        self.platforms.get(platform).map(String::as_str)
    }
}

impl SecurityConfig {
    fn check(&self) -> Result<(), Invalid> {
        check_run_as("security.runAs", &self.run_as)?;
        for (platform, run_as) in &self.platforms {
            if !is_dns_label(platform) {
                return Err(Invalid::PlatformName {
                    name: platform.clone(),
                });
            }
            check_run_as(&format!("security.platforms.{platform}"), run_as)?;
        }
        for (list, names) in [
            ("namespaces", &self.allow_root.namespaces),
            ("platforms", &self.allow_root.platforms),
        ] {
            if let Some(name) = names.iter().find(|name| !is_dns_label(name)) {
                return Err(Invalid::AllowRootName {
                    list,
                    name: name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A configured user and group: IDs in range, and the user not root.
fn check_run_as(key: &str, run_as: &RunAs) -> Result<(), Invalid> {
    for (field, value) in [("user", run_as.user), ("group", run_as.group())] {
        if !(0..=MAX_ID).contains(&value) {
            return Err(Invalid::IdRange {
                key: format!("{key}.{field}"),
                value,
            });
        }
    }
    if run_as.user == 0 {
        return Err(Invalid::RootUser {
            key: key.to_owned(),
        });
    }
    Ok(())
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The configuration in force, kept current from its file.
#[derive(Clone, Debug)]
pub struct ConfigWatch {
    /// Shared by every clone; the reloading task holds only a weak reference, so it ends
    /// when the last clone is dropped, and a fixed configuration's channel never closes.
    sender: Arc<watch::Sender<Arc<OperatorConfig>>>,
}

impl ConfigWatch {
    /// A configuration that never changes (no file given).
    pub fn fixed(config: OperatorConfig) -> ConfigWatch {
        ConfigWatch {
            sender: Arc::new(watch::Sender::new(Arc::new(config))),
        }
    }

    /// Loads `path` (an error if it is missing or invalid) and re-reads it every
    /// [`RELOAD_INTERVAL`] on the current Tokio runtime.
    pub fn start(path: PathBuf) -> Result<ConfigWatch, ConfigError> {
        let initial = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config = OperatorConfig::parse(&path, &initial)?;
        info!(path = %path.display(), platforms = ?config.platforms.keys().collect::<Vec<_>>(),
            cvmfs = config.cvmfs.name(), "configuration loaded");
        let sender = Arc::new(watch::Sender::new(Arc::new(config)));
        let reloading = Arc::downgrade(&sender);
        tokio::spawn(async move {
            let mut last = initial;
            loop {
                tokio::time::sleep(RELOAD_INTERVAL).await;
                let Some(sender) = reloading.upgrade() else {
                    return;
                };
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(error) => {
                        error!(path = %path.display(), %error,
                            "cannot read the configuration; keeping the last good one");
                        continue;
                    }
                };
                if text == last {
                    continue;
                }
                match OperatorConfig::parse(&path, &text) {
                    Ok(config) => {
                        info!(path = %path.display(), "configuration changed; reloaded");
                        sender.send_replace(Arc::new(config));
                    }
                    Err(error) => {
                        error!(%error, "configuration rejected; keeping the last good one");
                    }
                }
                last = text;
            }
        });
        Ok(ConfigWatch { sender })
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<OperatorConfig> {
        self.sender.borrow().clone()
    }

    /// A receiver that wakes on every reload.
    pub fn subscribe(&self) -> watch::Receiver<Arc<OperatorConfig>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OperatorConfig, ConfigError> {
        OperatorConfig::parse(Path::new("operator.yaml"), text)
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = parse("").expect("valid");
        assert_eq!(config, OperatorConfig::default());
        assert_eq!(config.platform_image("cc7"), Some(CC7_IMAGE));
        assert_eq!(config.cvmfs, CvmfsProvider::csi());
    }

    #[test]
    fn platforms_extend_and_override_the_defaults() {
        let config = parse(
            "platforms:\n  el9: registry.example/el9:1\n  alma10: registry.example/alma10:1\n",
        )
        .expect("valid");
        assert_eq!(config.platform_image("el9"), Some("registry.example/el9:1"));
        assert_eq!(
            config.platform_image("alma10"),
            Some("registry.example/alma10:1")
        );
        assert_eq!(config.platform_image("cc7"), Some(CC7_IMAGE));
    }

    #[test]
    fn providers_parse() {
        assert_eq!(
            parse("cvmfs:\n  provider: pvc\n  claimName: cvmfs\n")
                .expect("valid")
                .cvmfs,
            CvmfsProvider::Pvc {
                claim_name: "cvmfs".into()
            }
        );
        assert_eq!(
            parse("cvmfs:\n  provider: hostPath\n")
                .expect("valid")
                .cvmfs,
            CvmfsProvider::HostPath {
                path: "/cvmfs".into()
            }
        );
        assert!(!CvmfsProvider::HostPath { path: "/x".into() }.can_pin());
        assert!(CvmfsProvider::csi().can_pin());
    }

    #[test]
    fn the_csi_provider_names_the_servers_manifests_are_read_from() {
        let config = parse(
            "cvmfs:\n  provider: csi\n  serverUrl: http://s1/cvmfs/@fqrn@;http://s2/cvmfs/@fqrn@\n  \
             httpProxy: http://squid:3128;DIRECT\n",
        )
        .expect("valid");
        let CvmfsProvider::Csi {
            server_url,
            http_proxy,
            public_keys,
        } = &config.cvmfs
        else {
            panic!("csi expected");
        };
        assert_eq!(
            server_url.as_deref(),
            Some("http://s1/cvmfs/@fqrn@;http://s2/cvmfs/@fqrn@")
        );
        assert_eq!(http_proxy.as_deref(), Some("http://squid:3128;DIRECT"));
        assert!(public_keys.is_empty());
        let source = config
            .cvmfs
            .manifest_source()
            .expect("valid")
            .expect("csi has a source");
        assert_eq!(
            source.urls_of("cms.cern.ch")[1],
            "http://s2/cvmfs/cms.cern.ch"
        );
        let pvc = parse("cvmfs:\n  provider: pvc\n  claimName: c\n").expect("valid");
        assert!(matches!(pvc.cvmfs.manifest_source(), Ok(None)));
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        for (text, expected) in [
            ("platfroms: {}\n", "platfroms"),
            ("cvmfs:\n  provider: nfs\n", "nfs"),
            ("cvmfs:\n  provider: pvc\n", "claimName"),
            ("cvmfs:\n  provider: hostPath\n  path: cvmfs\n", "absolute"),
            ("platforms:\n  EL9: x\n", "DNS label"),
            ("platforms:\n  el9: ''\n", "image reference"),
            ("gpu:\n  nvidiaRuntimeClassName: ''\n", "must not be empty"),
            (
                "cvmfs:\n  provider: csi\n  serverUrl: ftp://s1/cvmfs/@fqrn@\n",
                "must be an http:// URL",
            ),
            (
                "cvmfs:\n  provider: csi\n  httpProxy: squid\n",
                "cvmfs.httpProxy",
            ),
            (
                "cvmfs:\n  provider: csi\n  publicKeys:\n    cms.cern.ch.pub: nope\n",
                "cvmfs.publicKeys",
            ),
            (
                "cvmfs:\n  provider: pvc\n  claimName: c\n  serverUrl: http://s1\n",
                "serverUrl",
            ),
            (
                "security:\n  runAs: {user: 0}\n",
                "security.runAs.user must not be 0",
            ),
            (
                "security:\n  platforms:\n    cernvm: {user: 0, group: 0}\n",
                "security.platforms.cernvm.user must not be 0",
            ),
            (
                "security:\n  runAs: {user: 1000, group: -1}\n",
                "security.runAs.group must be between 0 and 2147483647, not -1",
            ),
            (
                "security:\n  allowRoot:\n    namespaces: [CernVM]\n",
                "security.allowRoot.namespaces entry \"CernVM\"",
            ),
            ("security:\n  allowRoot: {users: [a]}\n", "users"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn shards_run_as_the_platforms_user_else_the_default_and_root_nowhere() {
        let defaults = parse("").expect("valid").security;
        assert_eq!(defaults.run_as(Some("cc7")), CMSUSR);
        assert_eq!(defaults.run_as(Some("el9")), DEFAULT_RUN_AS);
        assert_eq!(defaults.run_as(None), DEFAULT_RUN_AS);
        assert!(!defaults.allow_root.allows("physics", Some("cc7")));

        let config = parse(
            "security:\n  runAs: {user: 2000}\n  platforms:\n    alma9: {user: 500, group: 100}\n  \
             allowRoot:\n    namespaces: [cernvm-tests]\n    platforms: [cernvm]\n",
        )
        .expect("valid")
        .security;
        let default = config.run_as(None);
        assert_eq!((default.user, default.group()), (2000, 2000));
        assert_eq!(config.run_as(Some("alma9")), RunAs::new(500, 100));
        assert_eq!(config.run_as(Some("cc7")), CMSUSR, "built-ins stay");
        let allowed = &config.allow_root;
        assert!(allowed.allows("cernvm-tests", None));
        assert!(allowed.allows("physics", Some("cernvm")));
        assert!(!allowed.allows("physics", Some("el9")));
        assert!(!allowed.allows("physics", None));
    }

    #[tokio::test]
    async fn changes_to_the_file_are_picked_up_and_bad_edits_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("operator.yaml");
        std::fs::write(&path, "").expect("write");
        let watch = ConfigWatch::start(path.clone()).expect("loads");
        let mut changes = watch.subscribe();
        assert_eq!(watch.current().platform_image("alma10"), None);

        std::fs::write(&path, "platforms: [not, a, map]\n").expect("write");
        tokio::time::sleep(RELOAD_INTERVAL * 2).await;
        assert_eq!(*watch.current(), OperatorConfig::default());

        std::fs::write(&path, "platforms:\n  alma10: registry.example/alma10:1\n").expect("write");
        tokio::time::timeout(RELOAD_INTERVAL * 3, changes.changed())
            .await
            .expect("reloaded in time")
            .expect("open");
        assert_eq!(
            watch.current().platform_image("alma10"),
            Some("registry.example/alma10:1")
        );
    }
}
