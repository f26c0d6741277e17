//! Configuration files of a real node's containerd, CNI network and kubelet: pure
//! functions from the node's layout to text, so every setting is unit-tested here and
//! explained where it is made.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::json;

/// Where one node keeps everything, all below its work directory.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    /// The node's work directory.
    pub root: PathBuf,
}

impl NodeLayout {
    /// containerd's configuration file.
    pub fn containerd_config(&self) -> PathBuf {
        self.root.join("containerd.toml")
    }
    /// containerd's persistent root (content store, snapshots).
    pub fn containerd_root(&self) -> PathBuf {
        self.root.join("containerd/root")
    }
    /// containerd's state directory (task state, CRI fifos, pod network namespaces).
    pub fn containerd_state(&self) -> PathBuf {
        self.root.join("containerd/state")
    }
    /// containerd's gRPC socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.root.join("containerd.sock")
    }
    /// containerd's ttrpc socket.
    pub fn containerd_ttrpc_socket(&self) -> PathBuf {
        self.root.join("containerd.ttrpc.sock")
    }
    /// runc's state directory.
    pub fn runc_root(&self) -> PathBuf {
        self.root.join("runc")
    }
    /// The CNI configuration directory.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni/net.d")
    }
    /// host-local IPAM's allocations.
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.root.join("cni/ipam")
    }
    /// The kubelet's `--root-dir` (pods, volumes, plugin sockets): the chart's
    /// `csi.kubeletDir`.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    /// The kubelet's certificate directory (its self-signed serving certificate).
    pub fn kubelet_cert_dir(&self) -> PathBuf {
        self.root.join("kubelet-pki")
    }
    /// The kubelet's configuration file.
    pub fn kubelet_config(&self) -> PathBuf {
        self.root.join("kubelet.json")
    }
    /// The kubelet's kubeconfig.
    pub fn kubelet_kubeconfig(&self) -> PathBuf {
        self.root.join("kubelet.kubeconfig")
    }
    /// The node's client certificate and key.
    pub fn node_credentials(&self) -> (PathBuf, PathBuf) {
        (self.root.join("node.crt"), self.root.join("node.key"))
    }
    /// Container logs (`podLogsDir`).
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.root.join("pod-logs")
    }
    /// FlexVolume plugins (`volumePluginDir`): none, but the kubelet creates it.
    pub fn volume_plugin_dir(&self) -> PathBuf {
        self.root.join("volume-plugins")
    }
    /// Upper and work directory of the overlay on `/var` inside the node.
    pub fn var_overlay(&self) -> (PathBuf, PathBuf) {
        (self.root.join("var/upper"), self.root.join("var/work"))
    }
    /// The files shown at `/proc/sys/...` inside the node.
    pub fn sysctl_dir(&self) -> PathBuf {
        self.root.join("sysctl")
    }
    /// Created by the namespace keeper when its setup is done.
    pub fn namespaces_ready(&self) -> PathBuf {
        self.root.join("namespaces.ready")
    }
    /// A resolv.conf for pods: no name servers (there is no cluster DNS, and the host's
    /// resolvers are not reachable from the node's network).
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
}

/// A node's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeNetwork {
    /// The node IP (the veth end inside the node's namespace), `10.213.<n>.2`.
    pub node_ip: Ipv4Addr,
    /// Prefix length of the node IP's network.
    pub node_prefix: u8,
    /// The pods' subnet on this node, `10.214.<n>.0/24`; its `.1` is the bridge, the
    /// pods' gateway.
    pub pod_subnet: (Ipv4Addr, u8),
}

impl NodeNetwork {
    /// The addresses of the node with index `index` (below 250).
    pub fn numbered(index: u8) -> Self {
        Self {
            node_ip: Ipv4Addr::new(10, 213, index, 2),
            node_prefix: 24,
            pod_subnet: (Ipv4Addr::new(10, 214, index, 0), 24),
        }
    }

    /// The bridge's address, which pods route through.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.pod_subnet.0.octets();
        Ipv4Addr::new(a, b, c, 1)
    }
}

/// Quotes `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn toml_path(path: &Path) -> String {
    toml_string(&path.to_string_lossy())
}

/// containerd (1.6, configuration version 2) for one node: every directory and socket
/// of its own, runc with cgroupfs, overlayfs, CNI from the system's plugin directory and
/// a configuration directory of ours, and no plugin that would touch the host.
pub fn containerd(layout: &NodeLayout, sandbox_image: &str, cni_bin_dir: &Path) -> String {
    format!(
        r#"# containerd of a hepbatch testbed node (generated).
version = 2
root = {root}
state = {state}
oom_score = 0
# Snapshotters we do not use, the `opt` plugin (it creates /opt/containerd on the host)
# and tracing. (The v1 runtime stays: 1.6's tasks service, and so the CRI, needs it.)
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.native",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox}
  # The bounding set of this kind of machine lacks CAP_SYS_RESOURCE: lowering a
  # container's oom_score_adj below ours fails, so keep it at least ours.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  # Pod network namespaces are mounted below the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    # Images are imported, never pulled; keep the snapshot labels off.
    disable_snapshot_annotations = true

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = {runc_root}
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
    max_conf_num = 1
"#,
        root = toml_path(&layout.containerd_root()),
        state = toml_path(&layout.containerd_state()),
        grpc = toml_path(&layout.containerd_socket()),
        ttrpc = toml_path(&layout.containerd_ttrpc_socket()),
        sandbox = toml_string(sandbox_image),
        runc_root = toml_path(&layout.runc_root()),
        cni_bin = toml_path(cni_bin_dir),
        cni_conf = toml_path(&layout.cni_conf_dir()),
    )
}

/// The node's one CNI network: a bridge that is the pods' gateway (so pods reach the
/// node's own addresses: the apiserver's service IP and exposed host services), no
/// masquerading (no iptables), host-local IPAM with its own data directory.
pub fn cni(layout: &NodeLayout, network: &NodeNetwork) -> String {
    let (subnet, prefix) = network.pod_subnet;
    let config = json!({
        "cniVersion": "1.0.0",
        "name": "hepbatch-node",
        "plugins": [{
            "type": "bridge",
            "bridge": "hb-cni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": layout.cni_ipam_dir(),
                "ranges": [[{ "subnet": format!("{subnet}/{prefix}"), "gateway": network.gateway() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        }],
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// What the kubelet configuration depends on besides the layout.
#[derive(Debug, Clone)]
pub struct KubeletSettings {
    /// The node's cgroup root, e.g. `/hepbatch-123-0-abcdef`.
    pub cgroup_root: String,
    /// The cgroup driver's view: v1 needs `failCgroupV1: false`.
    pub cgroup_v1: bool,
    /// The testbed CA, which signs the certificates of clients the kubelet accepts.
    pub client_ca: PathBuf,
    /// Most pods on the node.
    pub max_pods: u32,
    /// The node IP, the kubelet server's address.
    pub address: Ipv4Addr,
}

/// The KubeletConfiguration (as JSON, which the kubelet's YAML loader reads).
pub fn kubelet(layout: &NodeLayout, settings: &KubeletSettings) -> String {
    let config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": format!("unix://{}", layout.containerd_socket().display()),
        "podLogsDir": layout.pod_logs_dir(),
        "volumePluginDir": layout.volume_plugin_dir(),
        "address": settings.address.to_string(),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": settings.cgroup_root,
        "cgroupsPerQOS": true,
        "enforceNodeAllocatable": ["pods"],
        "failCgroupV1": !settings.cgroup_v1,
        "failSwapOn": false,
        // Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this kind of machine
        // lacks; the hard RLIMIT_NOFILE is 20000.
        "oomScoreAdj": 0,
        "maxOpenFiles": 20000,
        "maxPods": settings.max_pods,
        // A small, shared disk: evict only when it is really full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        // Imported images cannot be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "87600h",
        "serializeImagePulls": false,
        "makeIPTablesUtilChains": false,
        "protectKernelDefaults": false,
        "registerNode": true,
        "resolvConf": layout.resolv_conf(),
        "clusterDomain": "cluster.local",
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": false },
            "x509": { "clientCAFile": settings.client_ca },
        },
        // Only clients with a certificate of the testbed CA get this far (the
        // apiserver's kubelet client certificate, the admin's).
        "authorization": { "mode": "AlwaysAllow" },
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// A kubeconfig (as JSON) for the apiserver at `server` with file-based credentials.
pub fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "testbed", "cluster": { "server": server, "certificate-authority": ca } }],
        "users": [{ "name": user, "user": { "client-certificate": cert, "client-key": key } }],
        "contexts": [{ "name": "testbed", "context": { "cluster": "testbed", "user": user } }],
        "current-context": "testbed",
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> NodeLayout {
        NodeLayout {
            root: PathBuf::from("/w/node-0"),
        }
    }

    #[test]
    fn containerd_keeps_everything_in_the_node_directory() {
        let text = containerd(
            &layout(),
            "localhost/hepbatch-pause:1",
            Path::new("/usr/lib/cni"),
        );
        for line in [
            r#"root = "/w/node-0/containerd/root""#,
            r#"state = "/w/node-0/containerd/state""#,
            r#"address = "/w/node-0/containerd.sock""#,
            r#"address = "/w/node-0/containerd.ttrpc.sock""#,
            r#"Root = "/w/node-0/runc""#,
            "SystemdCgroup = false",
            r#"snapshotter = "overlayfs""#,
            "restrict_oom_score_adj = true",
            r#"sandbox_image = "localhost/hepbatch-pause:1""#,
            r#"bin_dir = "/usr/lib/cni""#,
            r#"conf_dir = "/w/node-0/cni/net.d""#,
            r#""io.containerd.internal.v1.opt","#,
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("/var/lib/containerd") && !text.contains("/run/containerd"));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn cni_bridge_is_the_pods_gateway_without_masquerading() {
        let network = NodeNetwork::numbered(3);
        assert_eq!(network.node_ip, Ipv4Addr::new(10, 213, 3, 2));
        assert_eq!(network.gateway(), Ipv4Addr::new(10, 214, 3, 1));
        let config: serde_json::Value = serde_json::from_str(&cni(&layout(), &network)).unwrap();
        let bridge = &config["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["dataDir"], "/w/node-0/cni/ipam");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.214.3.0/24");
    }

    #[test]
    fn kubelet_trusts_only_the_testbed_ca_and_stays_in_its_cgroup_root() {
        let settings = KubeletSettings {
            cgroup_root: "/hepbatch-1-0-abc".into(),
            cgroup_v1: true,
            client_ca: "/w/ca.crt".into(),
            max_pods: 110,
            address: Ipv4Addr::new(10, 213, 0, 2),
        };
        let config: serde_json::Value =
            serde_json::from_str(&kubelet(&layout(), &settings)).unwrap();
        assert_eq!(
            config["containerRuntimeEndpoint"],
            "unix:///w/node-0/containerd.sock"
        );
        assert_eq!(config["cgroupDriver"], "cgroupfs");
        assert_eq!(config["cgroupRoot"], "/hepbatch-1-0-abc");
        assert_eq!(config["failCgroupV1"], false);
        assert_eq!(config["readOnlyPort"], 0);
        assert_eq!(config["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(
            config["authentication"]["x509"]["clientCAFile"],
            "/w/ca.crt"
        );
        assert_eq!(config["authorization"]["mode"], "AlwaysAllow");
        assert_eq!(config["podLogsDir"], "/w/node-0/pod-logs");
        assert_eq!(config["volumePluginDir"], "/w/node-0/volume-plugins");
        assert_eq!(config["makeIPTablesUtilChains"], false);
        assert_eq!(config["imageGCHighThresholdPercent"], 100);
        let v2 = KubeletSettings {
            cgroup_v1: false,
            ..settings
        };
        let config: serde_json::Value = serde_json::from_str(&kubelet(&layout(), &v2)).unwrap();
        assert_eq!(config["failCgroupV1"], true);
    }

    #[test]
    fn kubeconfig_points_at_files() {
        let config: serde_json::Value = serde_json::from_str(&kubeconfig(
            "https://10.96.0.1:443",
            Path::new("/w/ca.crt"),
            Path::new("/w/n.crt"),
            Path::new("/w/n.key"),
            "system:node:node-0",
        ))
        .unwrap();
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://10.96.0.1:443"
        );
        assert_eq!(config["users"][0]["user"]["client-certificate"], "/w/n.crt");
    }
}
