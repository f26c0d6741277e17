//! Real kubelet nodes next to kwok's fake ones.
//!
//! A real node is a kubelet (built from the same Kubernetes module as the control
//! plane), Debian's containerd and runc, and the system's CNI plugins, each started by
//! the testbed inside namespaces of the node's own:
//!
//! ```text
//!  host (untouched)                │ node network + mount namespace (keeper: unshare … sleep)
//!                                  │   lo: 10.96.0.1/32     hb-node: 10.213.<n>.2/24
//!  kube-apiserver 127.0.0.1:<port> ◄══ forwarder ◄── 10.96.0.1:443 ◄── kubelet, pods
//!        │ egress (HTTP CONNECT)   │                                     │
//!        └─► <work>/egress.sock ═══════► 10.213.<n>.2:10250 ── kubelet ──┤ CRI
//!                                  │                          containerd ─ shims ─ pods
//!  cgroups /<hierarchy>/hepbatch-<pid>-<n>-<id>/{system,kubepods}    │ bridge hb-cni0
//!                                  │                                 pods 10.214.<n>.0/24
//! ```
//!
//! - `namespaces`: the keeper process and its setup (addresses, `/run` tmpfs, `/var`
//!   overlay, sysctl values), `nsenter` into it;
//! - `cgroups`: the node's cgroup tree, the kill-and-remove that stops it, and the
//!   removal of trees a SIGKILLed run left;
//! - `forward` and `egress`: TCP between host and node without any host route;
//! - `config`: containerd, CNI and kubelet configuration (pure, unit-tested);
//! - `images`: the images of `images/node-images.sh`, imported with `ctr`;
//! - `tasks`: forwarder tasks stopped synchronously, so no socket keeps a namespace.
//!
//! Start order: cgroups → namespaces → forwarder → credentials → containerd → images →
//! kubelet; the testbed then waits for the Node to be Ready and untainted. Stopping runs
//! backwards and also kills what escaped its process group (daemonized shims) through
//! the cgroup tree and the mount namespace; the same happens from the signal cleanup.

pub(crate) mod cgroups;
mod config;
pub(crate) mod egress;
mod forward;
mod images;
pub(crate) mod namespaces;
mod pods;
mod tasks;

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

pub use cgroups::CgroupLayout;
use cgroups::CgroupTree;
pub use config::NodeNetwork;
use config::{KubeletSettings, NodeLayout};
use egress::EgressProxy;
pub use images::{ANALYSIS_BASE_IMAGE, ImageArchive, PAUSE_IMAGE};
pub use namespaces::NamespaceIds;
use namespaces::{NamespacePlan, Namespaces};
pub use pods::{MEASURED_LABEL, PodShape, PodStart, measure_pod_starts, measure_pod_starts_of};
use tasks::TaskSet;

use super::pki::Authority;
use super::process::{Component, Registered, register, unregister};
use super::{Binaries, TestbedError};

/// Label every real node carries (set by its kubelet), e.g. for a `nodeSelector`.
pub const REAL_NODE_LABEL: (&str, &str) = ("testbed.hepbatch.io/node", "real");

/// Where the CNI plugins live (Debian's `containernetworking-plugins`).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// How long a node's process gets after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long containerd may take to serve its socket.
const CONTAINERD_START: Duration = Duration::from_secs(30);

/// Host programs a real node runs.
const HOST_PROGRAMS: &[&str] = &[
    "containerd",
    "ctr",
    "runc",
    "unshare",
    "nsenter",
    "ip",
    "mount",
];

/// A real node to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealNodeSpec {
    /// Node name (the kubelet's `--hostname-override`).
    pub name: String,
    /// Most pods the kubelet runs.
    pub max_pods: u32,
}

impl RealNodeSpec {
    /// A node named `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_pods: 110,
        }
    }

    /// The `index`-th default node, `node-<index>`.
    pub fn numbered(index: usize) -> Self {
        Self::named(format!("node-{index}"))
    }

    /// Node names are DNS labels here (lower-case letters, digits, `-`; at most 63),
    /// which also keeps them safe as directory and log file names.
    fn validate(&self) -> Result<(), TestbedError> {
        let name = &self.name;
        let label = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if label {
            Ok(())
        } else {
            Err(TestbedError::Config(format!(
                "real node name {name:?} is not a DNS label (a-z, 0-9, '-', at most 63)"
            )))
        }
    }
}

/// What a node needs from its testbed.
pub(crate) struct NodeContext<'a> {
    pub index: usize,
    pub work_dir: &'a Path,
    pub log_dir: &'a Path,
    pub binaries: &'a Binaries,
    pub authority: &'a Authority,
    pub ca_cert: &'a Path,
    pub apiserver: SocketAddr,
    pub service_ip: Ipv4Addr,
    pub images: &'a [PathBuf],
    pub cgroups: &'a CgroupLayout,
    pub egress: &'a Arc<EgressProxy>,
}

/// Checks what a real node needs from this machine before anything starts.
pub(crate) fn preflight() -> Result<CgroupLayout, TestbedError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(TestbedError::Config(
            "real nodes need root (namespaces, cgroups, mounts)".into(),
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in HOST_PROGRAMS {
        if !std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
            return Err(TestbedError::NotBuilt(format!(
                "{program} is not installed (real nodes need the Debian packages containerd, \
                 runc, containernetworking-plugins, util-linux and iproute2)"
            )));
        }
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            return Err(TestbedError::NotBuilt(format!(
                "the CNI plugin {CNI_BIN_DIR}/{plugin} is missing (containernetworking-plugins)"
            )));
        }
    }
    CgroupLayout::detect().map_err(|source| TestbedError::Io {
        what: "reading the cgroup mounts".into(),
        source,
    })
}

/// Removes the cgroup trees (and with them the containers and shims) of real nodes
/// whose testbed process is gone, e.g. after a SIGKILL. Returns the roots removed. The
/// testbed calls this itself before it starts real nodes.
pub fn remove_stale_nodes() -> Result<Vec<String>, TestbedError> {
    let layout = CgroupLayout::detect().map_err(|source| TestbedError::Io {
        what: "reading the cgroup mounts".into(),
        source,
    })?;
    cgroups::remove_stale(&layout).map_err(|source| TestbedError::Io {
        what: "removing the cgroups of earlier real nodes".into(),
        source,
    })
}

/// Builds the node images if needed and returns their archives (see
/// `images/node-images.sh`).
pub fn node_images() -> Result<Vec<ImageArchive>, TestbedError> {
    images::ensure_built()
}

/// A running real node. Dropping it stops it and removes everything it made.
pub struct RealNode {
    spec: RealNodeSpec,
    network: NodeNetwork,
    layout: NodeLayout,
    cgroups: CgroupTree,
    namespaces: Option<Namespaces>,
    /// The keeper's pid (set with `namespaces`; a started node always has both).
    keeper_pid: u32,
    containerd: Option<Component>,
    kubelet: Option<Component>,
    tasks: TaskSet,
    egress: Arc<EgressProxy>,
    images: Vec<String>,
    registrations: Vec<u64>,
    began: Instant,
    started_in: Duration,
    ready_in: Option<Duration>,
}

impl std::fmt::Debug for RealNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealNode")
            .field("name", &self.spec.name)
            .field("ip", &self.network.node_ip)
            .field("work_dir", &self.layout.root)
            .finish_non_exhaustive()
    }
}

impl RealNode {
    /// Starts the node's processes; the testbed then waits for its Node to be Ready.
    pub(crate) async fn start(
        spec: &RealNodeSpec,
        archives: &[ImageArchive],
        ctx: NodeContext<'_>,
    ) -> Result<Self, TestbedError> {
        let began = Instant::now();
        spec.validate()?;
        let index = u8::try_from(ctx.index)
            .ok()
            .filter(|i| *i < 250)
            .ok_or_else(|| TestbedError::Config("at most 250 real nodes".into()))?;
        let io = |what: String| move |source| TestbedError::Io { what, source };
        let layout = NodeLayout {
            root: ctx.work_dir.join("nodes").join(&spec.name),
        };
        for dir in [
            layout.root.clone(),
            layout.kubelet_dir(),
            layout.kubelet_cert_dir(),
            layout.pod_logs_dir(),
            layout.volume_plugin_dir(),
            layout.cni_conf_dir(),
            layout.cni_ipam_dir(),
            layout.containerd_root(),
            layout.containerd_state(),
            layout.runc_root(),
        ] {
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let tree = CgroupTree::create(ctx.cgroups, &cgroups::root_name(ctx.index))
            .map_err(io(format!("creating the cgroups of node {}", spec.name)))?;
        let mut node = Self {
            spec: spec.clone(),
            network: NodeNetwork::numbered(index),
            registrations: vec![register(Registered::CgroupTree(tree.dirs()))],
            layout,
            cgroups: tree,
            namespaces: None,
            keeper_pid: 0,
            containerd: None,
            kubelet: None,
            tasks: TaskSet::new(Handle::current()),
            egress: ctx.egress.clone(),
            images: Vec::new(),
            began,
            started_in: Duration::ZERO,
            ready_in: None,
        };
        // From here on, dropping `node` undoes whatever has been started.
        node.start_namespaces(&ctx).await?;
        node.start_containerd(&ctx).await?;
        node.import_images(archives, ctx.images).await?;
        node.start_kubelet(&ctx)?;
        node.started_in = began.elapsed();
        Ok(node)
    }

    async fn start_namespaces(&mut self, ctx: &NodeContext<'_>) -> Result<(), TestbedError> {
        let plan = NamespacePlan {
            node_ip: (self.network.node_ip, self.network.node_prefix),
            service_ip: ctx.service_ip,
            var_overlay: self.layout.var_overlay(),
            sysctl_dir: self.layout.sysctl_dir(),
            ready: self.layout.namespaces_ready(),
        };
        let namespaces = Namespaces::start(
            &self.component_name("namespaces"),
            &plan,
            ctx.log_dir,
            &self.cgroups.system_procs(),
        )
        .await?;
        let netns = namespaces.network_path();
        self.keeper_pid = namespaces.keeper().pid();
        self.namespaces = Some(namespaces);
        forward::expose_in(
            &netns,
            SocketAddr::new(IpAddr::V4(ctx.service_ip), 443),
            ctx.apiserver,
            &self.tasks,
        )
        .map_err(|source| TestbedError::Io {
            what: format!(
                "forwarding {}:443 in node {}",
                ctx.service_ip, self.spec.name
            ),
            source,
        })?;
        self.egress.add_node(egress::NodeRoute {
            name: self.spec.name.clone(),
            ip: self.network.node_ip,
            pod_subnet: self.network.pod_subnet,
            netns,
        });
        Ok(())
    }

    async fn start_containerd(&mut self, ctx: &NodeContext<'_>) -> Result<(), TestbedError> {
        let io = |what: String| move |source| TestbedError::Io { what, source };
        let config = self.layout.containerd_config();
        std::fs::write(
            &config,
            config::containerd(&self.layout, PAUSE_IMAGE, Path::new(CNI_BIN_DIR)),
        )
        .map_err(io(format!("writing {}", config.display())))?;
        let cni = self.layout.cni_conf_dir().join("10-hepbatch-node.conflist");
        std::fs::write(&cni, config::cni(&self.layout, &self.network))
            .map_err(io(format!("writing {}", cni.display())))?;
        let mut command = self.namespaces()?.command("containerd");
        command.arg("--config").arg(&config);
        let containerd = Component::spawn_command(
            &self.component_name("containerd"),
            command,
            ctx.log_dir,
            &self.cgroups.system_procs(),
        )?;
        self.containerd = Some(containerd);
        let socket = self.layout.containerd_socket();
        let deadline = Instant::now() + CONTAINERD_START;
        loop {
            self.check_alive()?;
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestbedError::Timeout {
                    what: format!("containerd of node {} to serve its socket", self.spec.name),
                    timeout: CONTAINERD_START,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn import_images(
        &mut self,
        archives: &[ImageArchive],
        extra: &[PathBuf],
    ) -> Result<(), TestbedError> {
        let socket = self.layout.containerd_socket();
        let paths: Vec<PathBuf> = archives
            .iter()
            .map(|a| a.path.clone())
            .chain(extra.iter().cloned())
            .collect();
        let imported = tokio::task::spawn_blocking(move || {
            let mut names = Vec::new();
            for path in &paths {
                names.extend(images::import(&socket, path)?);
            }
            Ok::<_, TestbedError>(names)
        })
        .await
        .map_err(|e| TestbedError::Config(format!("importing images: {e}")))??;
        if !imported.iter().any(|name| name == PAUSE_IMAGE) {
            return Err(TestbedError::Config(format!(
                "the sandbox image {PAUSE_IMAGE} is not in node {}'s containerd after import \
                 (it holds {imported:?})",
                self.spec.name
            )));
        }
        self.images = imported;
        Ok(())
    }

    fn start_kubelet(&mut self, ctx: &NodeContext<'_>) -> Result<(), TestbedError> {
        let io = |what: String| move |source| TestbedError::Io { what, source };
        let (cert, key) = self.layout.node_credentials();
        ctx.authority.issue_client(
            &format!("system:node:{}", self.spec.name),
            &["system:nodes"],
            &cert,
            &key,
        )?;
        let kubeconfig = self.layout.kubelet_kubeconfig();
        super::kubeconfig::write(
            &kubeconfig,
            &config::kubeconfig(
                &format!("https://{}:443", ctx.service_ip),
                ctx.ca_cert,
                &cert,
                &key,
                &format!("system:node:{}", self.spec.name),
            ),
        )?;
        let settings = KubeletSettings {
            cgroup_root: self.cgroups.kubelet_root(),
            cgroup_v1: matches!(ctx.cgroups, CgroupLayout::V1 { .. }),
            client_ca: ctx.ca_cert.to_path_buf(),
            max_pods: self.spec.max_pods,
            address: self.network.node_ip,
        };
        let kubelet_config = self.layout.kubelet_config();
        std::fs::write(&kubelet_config, config::kubelet(&self.layout, &settings))
            .map_err(io(format!("writing {}", kubelet_config.display())))?;
        std::fs::write(self.layout.resolv_conf(), "")
            .map_err(io("writing the node's resolv.conf".into()))?;
        let path = |p: PathBuf| p.display().to_string();
        let mut command = self.namespaces()?.command(ctx.binaries.path("kubelet"));
        command.args([
            format!("--config={}", path(kubelet_config)),
            format!("--kubeconfig={}", path(kubeconfig)),
            format!("--root-dir={}", path(self.layout.kubelet_dir())),
            format!("--cert-dir={}", path(self.layout.kubelet_cert_dir())),
            format!("--node-ip={}", self.network.node_ip),
            format!("--hostname-override={}", self.spec.name),
            format!("--node-labels={}={}", REAL_NODE_LABEL.0, REAL_NODE_LABEL.1),
            "--v=1".to_owned(),
        ]);
        let kubelet = Component::spawn_command(
            &self.component_name("kubelet"),
            command,
            ctx.log_dir,
            &self.cgroups.system_procs(),
        )?;
        self.kubelet = Some(kubelet);
        Ok(())
    }

    fn component_name(&self, part: &str) -> String {
        format!("{}-{part}", self.spec.name)
    }

    fn namespaces(&self) -> Result<&Namespaces, TestbedError> {
        self.namespaces
            .as_ref()
            .ok_or_else(|| TestbedError::Config("the node's namespaces are not running".into()))
    }

    fn components(&self) -> impl Iterator<Item = &Component> {
        self.namespaces
            .as_ref()
            .map(Namespaces::keeper)
            .into_iter()
            .chain(self.containerd.iter())
            .chain(self.kubelet.iter())
    }

    /// Fails if one of the node's processes has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), TestbedError> {
        let namespaces = self.namespaces.as_mut().map(Namespaces::keeper_mut);
        for component in namespaces
            .into_iter()
            .chain(self.containerd.iter_mut())
            .chain(self.kubelet.iter_mut())
        {
            if let Some(status) = component.exited() {
                return Err(TestbedError::ComponentExited {
                    component: component.name().to_owned(),
                    status,
                    log_tail: component.log_tail(30),
                });
            }
        }
        Ok(())
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The node IP (`10.213.<n>.2`); it exists only inside the node's network namespace.
    pub fn ip(&self) -> Ipv4Addr {
        self.network.node_ip
    }

    /// The node's addresses (node IP, pod subnet, the pods' gateway).
    pub fn network(&self) -> NodeNetwork {
        self.network
    }

    /// The node's work directory (configuration, containerd's root, kubelet directory,
    /// the upper layer of its `/var`).
    pub fn work_dir(&self) -> &Path {
        &self.layout.root
    }

    /// The kubelet's root directory: what the chart's `csi.kubeletDir` must be set to
    /// (plugin registration in `plugins_registry/`, plugin sockets in `plugins/`, pod
    /// volumes in `pods/`).
    pub fn kubelet_dir(&self) -> PathBuf {
        self.layout.kubelet_dir()
    }

    /// Where the host's `/var` shows the node's own writes: a hostPath below `/var`
    /// inside the node (e.g. the CSI plugin's `/var/lib/hepbatch`) is
    /// `var_upper_dir()/<path below /var>` on the host.
    pub fn var_upper_dir(&self) -> PathBuf {
        self.layout.var_overlay().0
    }

    /// containerd's socket (for `ctr --address`).
    pub fn containerd_socket(&self) -> PathBuf {
        self.layout.containerd_socket()
    }

    /// A `ctr` command for this node's containerd in the CRI's `k8s.io` namespace.
    pub fn ctr(&self) -> Command {
        images::ctr(&self.layout.containerd_socket())
    }

    /// The cgroup root of the node in every hierarchy, e.g. `hepbatch-123-0-abcdef`.
    pub fn cgroup_root(&self) -> &str {
        self.cgroups.root()
    }

    /// A command that runs `program` inside the node's network and mount namespaces
    /// (`nsenter --net=… --mount=… -- program`), e.g. to look at its mounts or
    /// addresses. It runs as root in the host's cgroups.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        namespaces::enter(self.keeper_pid, program)
    }

    /// Name and pid of each of the node's processes (namespace keeper, containerd,
    /// kubelet).
    pub fn pids(&self) -> Vec<(&str, u32)> {
        self.components().map(|c| (c.name(), c.pid())).collect()
    }

    /// The images imported into the node's containerd.
    pub fn images(&self) -> &[String] {
        &self.images
    }

    /// How long the node's processes took to start (images imported, kubelet spawned).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// How long from the start of the node until its Node object was Ready and
    /// untainted (set once the testbed has seen it).
    pub fn ready_in(&self) -> Option<Duration> {
        self.ready_in
    }

    /// Records that the node was just seen Ready.
    pub(crate) fn mark_ready(&mut self) {
        self.ready_in = Some(self.began.elapsed());
    }

    /// Makes the host's loopback TCP service `127.0.0.1:<host_port>` reachable inside
    /// the node at the returned address (the node IP, same port), from the node's
    /// processes and from its pods (through the bridge gateway). The forwarder runs in
    /// the testbed process until the node stops.
    pub fn expose(&self, host_port: u16) -> Result<SocketAddr, TestbedError> {
        let netns = self.namespaces()?.network_path();
        forward::expose_in(
            &netns,
            SocketAddr::new(IpAddr::V4(self.network.node_ip), host_port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), host_port),
            &self.tasks,
        )
        .map_err(|source| TestbedError::Io {
            what: format!("exposing 127.0.0.1:{host_port} on node {}", self.spec.name),
            source,
        })
    }

    /// What the node leaves on the machine while it runs, to check after it stopped
    /// that nothing is left ([`NodeFootprint::leftovers`]).
    pub fn footprint(&self) -> NodeFootprint {
        NodeFootprint {
            node: self.spec.name.clone(),
            cgroup_root: self.cgroups.root().to_owned(),
            cgroup_dirs: self.cgroups.dirs(),
            namespaces: self.namespaces.as_ref().map(Namespaces::ids),
            work_dir: self.layout.root.clone(),
        }
    }

    /// The last `lines` lines of each of the node's logs, each under a header.
    pub fn log_tails(&self, lines: usize) -> String {
        self.components()
            .map(|c| {
                format!(
                    "----- {} ({}) -----\n{}\n",
                    c.name(),
                    c.log().display(),
                    c.log_tail(lines)
                )
            })
            .collect()
    }

    /// Stops everything, in order: kubelet; pods; containerd; whatever is left in the
    /// cgroup tree or the mount namespace (shims); the forwarders; the cgroup tree; the
    /// work directory. Problems are reported on stderr (this runs in `Drop`).
    fn stop(&mut self) {
        let report = |what: &str| eprintln!("testbed: node {}: {what}", self.spec.name);
        if let Some(kubelet) = self.kubelet.take() {
            drop(kubelet);
        }
        let pods = self.cgroups.child_dirs("kubepods");
        cgroups::kill_all(&pods, Instant::now() + STOP_GRACE);
        if let Some(containerd) = self.containerd.take() {
            drop(containerd);
        }
        let left = cgroups::kill_all(&self.cgroups.dirs(), Instant::now() + STOP_GRACE);
        if !left.is_empty() {
            report(&format!(
                "processes {left:?} survived SIGKILL in its cgroups"
            ));
        }
        if let Some(namespaces) = self.namespaces.take() {
            let id = namespaces.ids().mount;
            let left = namespaces::kill_mount_namespace(id, Instant::now() + STOP_GRACE);
            if !left.is_empty() {
                report(&format!(
                    "processes {left:?} survived in its mount namespace"
                ));
            }
            // Ends the signal cleanup's registration, then lets the namespaces go.
            drop(namespaces);
        }
        self.egress.remove_node(&self.spec.name);
        let live = self.tasks.shutdown(Duration::from_secs(2));
        if live > 0 {
            report(&format!("{live} forwarder tasks did not stop"));
        }
        if let Err(error) = cgroups::remove(&self.cgroups.dirs(), Instant::now() + STOP_GRACE) {
            report(&error.to_string());
        }
        if let Err(error) = std::fs::remove_dir_all(&self.layout.root)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            report(&format!("removing {}: {error}", self.layout.root.display()));
        }
        for id in self.registrations.drain(..) {
            unregister(id);
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a real node occupied on the machine, recorded while it ran.
#[derive(Debug, Clone)]
pub struct NodeFootprint {
    /// The node's name.
    pub node: String,
    /// Its cgroup root's name (`hepbatch-<pid>-<n>-<id>`).
    pub cgroup_root: String,
    /// Its cgroup tree's top directory in every hierarchy.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Its namespaces (absent if the node never got that far).
    pub namespaces: Option<NamespaceIds>,
    /// Its work directory.
    pub work_dir: PathBuf,
}

impl NodeFootprint {
    /// Everything of the node still present: processes (or threads of this process) in
    /// its namespaces, cgroup directories, mounts below its work directory in the
    /// host's mount table, the work directory. Empty once the node is fully gone.
    /// Processes in a namespace with the node's inode number count only if they are
    /// the node's (its cgroups or its mounts): freed namespace numbers are reused.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Some(ids) = self.namespaces {
            for (kind, id) in [("mnt", ids.mount), ("net", ids.network)] {
                let pids: Vec<i32> = namespaces::processes_in(kind, id)
                    .into_iter()
                    .filter(|pid| {
                        namespaces::belongs_to_node(*pid, &self.cgroup_root, &self.work_dir)
                    })
                    .collect();
                if !pids.is_empty() {
                    left.push(format!("processes {pids:?} in the node's {kind} namespace"));
                }
            }
            if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
                for task in tasks.flatten() {
                    let ns = task.path().join("ns/net");
                    if std::fs::metadata(&ns)
                        .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == ids.network)
                    {
                        left.push(format!(
                            "thread {:?} in the node's net namespace",
                            task.file_name()
                        ));
                    }
                }
            }
        }
        for dir in &self.cgroup_dirs {
            if dir.exists() {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
        let needle = self.work_dir.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines().filter(|l| l.contains(&needle)) {
            left.push(format!("mount {line}"));
        }
        if self.work_dir.exists() {
            left.push(format!("work directory {}", self.work_dir.display()));
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_name_what_is_still_there_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cgroup-dir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&cgroup).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let footprint = NodeFootprint {
            node: "node-0".into(),
            cgroup_root: "hepbatch-0-0-test".into(),
            cgroup_dirs: vec![cgroup.clone()],
            // Namespace inode numbers start far above these: no process is in them.
            namespaces: Some(NamespaceIds {
                mount: 1,
                network: 2,
            }),
            work_dir: work.clone(),
        };
        let left = footprint.leftovers();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left[0].starts_with("cgroup "), "{left:?}");
        assert!(left[1].starts_with("work directory "), "{left:?}");
        std::fs::remove_dir(&cgroup).unwrap();
        std::fs::remove_dir(&work).unwrap();
        assert!(footprint.leftovers().is_empty());
    }

    #[test]
    fn node_names_must_be_dns_labels() {
        for good in ["node-0", "worker", "a1"] {
            assert!(RealNodeSpec::named(good).validate().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Node-0",
            "node_0",
            "-x",
            "x-",
            "../etc",
            &"n".repeat(64),
        ] {
            assert!(RealNodeSpec::named(bad).validate().is_err(), "{bad:?}");
        }
    }
}
