//! Command-line configuration of the plugin (every flag also reads an environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::backend::Backend;
use crate::backend::cvmfs::{CvmfsBackend, CvmfsSettings};
use crate::backend::squashfuse::SquashfuseBackend;

/// Which program serves repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The CVMFS client (one `cvmfs2` per repository and pin).
    Cvmfs,
    /// Squashfs images served by squashfuse: a stand-in for tests and demos.
    Squashfuse,
}

/// Which CSI services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Services {
    /// Identity and Node: the per-node DaemonSet (mounts, healing, kubelet registration).
    Node,
    /// Identity and Controller: StorageClass provisioning in a small Deployment next to the
    /// external-provisioner. Touches no mount, needs no root and no `--node-id`.
    Controller,
    /// Everything in one process (tests, single-node clusters).
    All,
}

impl Services {
    /// Whether the Node service (and with it mounts, healing, registration) runs.
    pub fn node(self) -> bool {
        matches!(self, Self::Node | Self::All)
    }

    /// Whether the Controller service is enabled.
    pub fn controller(self) -> bool {
        matches!(self, Self::Controller | Self::All)
    }
}

pub use hepbatch_runtime::logging::LogFormat;

/// The plugin's configuration.
#[derive(Debug, Clone, Parser)]
#[command(name = "hepbatch-csi", version, about = "CVMFS CSI plugin")]
pub struct Config {
    /// The CSI services to run: `node` (the DaemonSet), `controller` (StorageClass
    /// provisioning) or `all`.
    #[arg(long, env = "CSI_SERVICES", value_enum, default_value = "node")]
    pub services: Services,
    /// Unix socket the CSI services listen on.
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "/var/lib/kubelet/plugins/cvmfs.hepbatch.io/csi.sock"
    )]
    pub endpoint: PathBuf,
    /// The kubelet's root directory; targets must lie beneath it.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Host directory (shared mount) where repositories are mounted.
    #[arg(long, env = "MOUNT_ROOT", default_value = "/var/lib/hepbatch/cvmfs")]
    pub mount_root: PathBuf,
    /// Directory for caches, workspaces and generated client configuration (node), and
    /// the records of provisioned volumes under `controller/` (controller); kept across
    /// restarts.
    #[arg(long, env = "STATE_DIR", default_value = "/var/lib/hepbatch/state")]
    pub state_dir: PathBuf,
    /// This node's name, reported as the CSI node id (required with the node service).
    #[arg(long, env = "NODE_NAME")]
    pub node_id: Option<String>,
    /// The mount backend.
    #[arg(long, env = "BACKEND", value_enum, default_value = "cvmfs")]
    pub backend: BackendKind,
    /// Image directory of the squashfuse backend.
    #[arg(
        long,
        env = "SQUASHFUSE_IMAGES",
        default_value = "/var/lib/hepbatch/images"
    )]
    pub squashfuse_images: PathBuf,
    /// CVMFS configuration directory.
    #[arg(long, env = "CVMFS_CONFIG_DIR", default_value = "/etc/cvmfs")]
    pub cvmfs_config_dir: PathBuf,
    /// `CVMFS_HTTP_PROXY` for every client.
    #[arg(long, env = "CVMFS_HTTP_PROXY")]
    pub http_proxy: Option<String>,
    /// `CVMFS_SERVER_URL` for every client.
    #[arg(long, env = "CVMFS_SERVER_URL")]
    pub server_url: Option<String>,
    /// `CVMFS_QUOTA_LIMIT` in MiB for every client.
    #[arg(long, env = "CVMFS_QUOTA_LIMIT")]
    pub quota_limit_mib: Option<u64>,
    /// `CVMFS_KEYS_DIR` for every client: a directory of repository public keys.
    #[arg(long, env = "CVMFS_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Seconds a repository stays mounted after its last user left.
    #[arg(long, env = "IDLE_DELAY_SECONDS", default_value_t = 300)]
    pub idle_delay_seconds: u64,
    /// Offer volumes without a `repositories` attribute (every repository, mounted on
    /// first access through an autofs mount the plugin serves itself).
    #[arg(long, env = "ON_DEMAND", default_value_t = true, action = clap::ArgAction::Set)]
    pub on_demand: bool,
    /// Milliseconds between healing passes.
    #[arg(long, env = "HEAL_INTERVAL_MS", default_value_t = 1000)]
    pub heal_interval_ms: u64,
    /// Register with the kubelet in-process (turn off when using node-driver-registrar).
    #[arg(long, env = "KUBELET_REGISTRATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub kubelet_registration: bool,
    /// The CSI socket path as the kubelet sees it (defaults to `--endpoint`).
    #[arg(long, env = "KUBELET_ENDPOINT")]
    pub kubelet_endpoint: Option<PathBuf>,
    /// Address of the /healthz and /metrics server; unset: no server.
    #[arg(long, env = "ADMIN_ADDRESS")]
    pub admin_address: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    /// Builds the configured backend.
    pub fn backend(&self) -> Arc<dyn Backend> {
        match self.backend {
            BackendKind::Cvmfs => Arc::new(CvmfsBackend::new(
                self.cvmfs_config_dir.clone(),
                self.state_dir.clone(),
                CvmfsSettings {
                    http_proxy: self.http_proxy.clone(),
                    server_url: self.server_url.clone(),
                    keys_dir: self.keys_dir.clone(),
                    quota_limit_mib: self.quota_limit_mib,
                },
            )),
            BackendKind::Squashfuse => {
                Arc::new(SquashfuseBackend::new(self.squashfuse_images.clone()))
            }
        }
    }

    /// The idle delay.
    pub fn idle_delay(&self) -> Duration {
        Duration::from_secs(self.idle_delay_seconds)
    }

    /// The healing interval.
    pub fn heal_interval(&self) -> Duration {
        Duration::from_millis(self.heal_interval_ms.max(50))
    }

    /// Where the controller keeps its records of provisioned volumes.
    pub fn controller_dir(&self) -> PathBuf {
        self.state_dir.join("controller")
    }

    /// Where the registration socket goes.
    pub fn registration_socket(&self) -> PathBuf {
        self.kubelet_dir
            .join("plugins_registry")
            .join(format!("{}-reg.sock", hepbatch_crds::CSI_DRIVER_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_node_daemonset() {
        let config = Config::try_parse_from(["hepbatch-csi", "--node-id", "n1"]).unwrap();
        assert_eq!(config.services, Services::Node);
        assert!(config.services.node() && !config.services.controller());
    }

    #[test]
    fn the_controller_needs_no_node_id() {
        let config = Config::try_parse_from(["hepbatch-csi", "--services", "controller"]).unwrap();
        assert!(config.services.controller() && !config.services.node());
        assert_eq!(config.node_id, None);
        assert!(Services::All.node() && Services::All.controller());
        assert!(Config::try_parse_from(["hepbatch-csi", "--services", "both"]).is_err());
    }
}
