//! A real node's own network and mount namespaces, held by a keeper process.
//!
//! The keeper is `unshare --net --mount --propagation private -- sh -c '<setup>; exec
//! sleep infinity'`, started like every other component (its own process group, SIGKILL
//! when the testbed process dies, registered for the signal cleanup). The setup runs
//! inside the new namespaces, so the host's interfaces, mounts and sysctls never change:
//!
//! - `lo` up, the apiserver's service IP on `lo`, a veth pair whose one end carries the
//!   node IP (this kernel has no `dummy` links; both ends stay inside);
//! - `/` made `rshared`: the copy is private from the host already, so this only makes
//!   the node's own mounts shared, which containerd demands for `Bidirectional` and
//!   `HostToContainer` mounts (the CSI plugin's);
//! - a tmpfs on `/run` (containerd's shim sockets in `/run/containerd/s`, the CSI
//!   plugin's `/run/cvmfs`) and an overlay on `/var` whose upper layer is in the node's
//!   work directory (the kubelet's hard-coded `/var/lib/kubelet/device-plugins` and
//!   `/var/log/containers`, libcni's `/var/lib/cni`, hostPath volumes);
//! - small files holding the values the kubelet insists on, bind-mounted over
//!   `/proc/sys/...`: it finds them set and writes nothing.
//!
//! Components enter with `nsenter --net=/proc/<keeper>/ns/net --mount=/proc/<keeper>/ns/mnt
//! -- <binary>`; nsenter execs, so the death signal and the process group still hold.

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::testbed::TestbedError;
use crate::testbed::process::{Component, Registered, register, unregister};

/// The kernel settings the kubelet checks at start (`setupKernelTunables` in
/// `pkg/kubelet/cm/container_manager_linux.go`) and the values it wants. It writes each
/// one that differs, so the node shows it these values instead.
pub const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Name of the veth end that carries the node IP.
pub const NODE_LINK: &str = "hb-node";

/// What the keeper sets up inside the namespaces.
#[derive(Debug, Clone)]
pub struct NamespacePlan {
    /// The node IP and its prefix length.
    pub node_ip: (Ipv4Addr, u8),
    /// The apiserver's service IP (`/32` on `lo`).
    pub service_ip: Ipv4Addr,
    /// Upper and work directories of the overlay on `/var`.
    pub var_overlay: (PathBuf, PathBuf),
    /// Directory for the files shown at `/proc/sys/...`.
    pub sysctl_dir: PathBuf,
    /// File the keeper creates when the setup is complete.
    pub ready: PathBuf,
}

impl NamespacePlan {
    /// The setup script the keeper runs in the new namespaces.
    pub fn script(&self) -> Result<String, TestbedError> {
        let (upper, work) = &self.var_overlay;
        for dir in [upper, work] {
            if dir.starts_with("/var") {
                return Err(TestbedError::Config(format!(
                    "the node work directory {} is below /var, which the node overlays; \
                     set TMPDIR elsewhere (e.g. /tmp)",
                    dir.display()
                )));
            }
            let text = dir.to_string_lossy();
            if text.contains([',', ':', '\n']) {
                return Err(TestbedError::Config(format!(
                    "the node work directory {text} contains a character overlayfs options \
                     cannot carry (',' or ':'); set TMPDIR to a plainer path"
                )));
            }
        }
        let (ip, prefix) = self.node_ip;
        let mut script = format!(
            "set -eu\n\
             ip link set lo up\n\
             ip address add {service}/32 dev lo\n\
             ip link add {NODE_LINK} type veth peer name hb-peer\n\
             ip address add {ip}/{prefix} dev {NODE_LINK}\n\
             ip link set hb-peer up\n\
             ip link set {NODE_LINK} up\n\
             mount --make-rshared /\n\
             mount -t tmpfs -o mode=0755 hepbatch-node-run /run\n\
             mount -t overlay -o {options} hepbatch-node-var /var\n",
            service = self.service_ip,
            options = quote(&format!(
                "lowerdir=/var,upperdir={},workdir={}",
                upper.display(),
                work.display()
            )),
        );
        for (name, _) in KUBELET_SYSCTLS {
            script.push_str(&format!(
                "mount --bind {} /proc/sys/{name}\n",
                quote(&self.sysctl_file(name).to_string_lossy()),
            ));
        }
        script.push_str(&format!(
            ": > {}\nexec sleep infinity\n",
            quote(&self.ready.to_string_lossy())
        ));
        Ok(script)
    }

    fn sysctl_file(&self, name: &str) -> PathBuf {
        self.sysctl_dir.join(name.replace('/', "."))
    }

    /// Writes the value files and creates the overlay directories.
    fn prepare(&self) -> Result<(), TestbedError> {
        let io = |what: String| move |source| TestbedError::Io { what, source };
        for dir in [&self.var_overlay.0, &self.var_overlay.1, &self.sysctl_dir] {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        for (name, value) in KUBELET_SYSCTLS {
            let file = self.sysctl_file(name);
            std::fs::write(&file, format!("{value}\n"))
                .map_err(io(format!("writing {}", file.display())))?;
        }
        Ok(())
    }
}

/// Quotes `text` for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Inode numbers that identify a node's namespaces (`stat -L /proc/<pid>/ns/<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceIds {
    /// The mount namespace.
    pub mount: u64,
    /// The network namespace.
    pub network: u64,
}

/// The running keeper and the namespaces it holds.
///
/// Namespace inode numbers are reused as soon as a namespace is freed, so finding a
/// node's processes by inode is only safe while the namespace cannot be freed: open
/// handles to both namespaces are held as long as this value lives, and the signal
/// cleanup's registration of the mount namespace ends before they close.
#[derive(Debug)]
pub struct Namespaces {
    keeper: Component,
    ids: NamespaceIds,
    registration: u64,
    _handles: [File; 2],
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        unregister(self.registration);
        // Then the fields: the keeper is stopped (if it still runs), the handles close.
    }
}

impl Namespaces {
    /// Starts the keeper in the cgroups of `cgroup_procs` and waits until its setup is
    /// complete.
    pub async fn start(
        name: &str,
        plan: &NamespacePlan,
        log_dir: &Path,
        cgroup_procs: &[PathBuf],
    ) -> Result<Self, TestbedError> {
        plan.prepare()?;
        let mut command = Command::new("unshare");
        command
            .args(["--net", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c"])
            .arg(plan.script()?);
        let mut keeper = Component::spawn_command(name, command, log_dir, cgroup_procs)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !plan.ready.exists() {
            if let Some(status) = keeper.exited() {
                return Err(TestbedError::ComponentExited {
                    component: name.to_owned(),
                    status,
                    log_tail: keeper.log_tail(20),
                });
            }
            if Instant::now() > deadline {
                return Err(TestbedError::Timeout {
                    what: format!("{name} to set up the node's namespaces"),
                    timeout: Duration::from_secs(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (mount_handle, mount) = hold(keeper.pid(), "mnt")?;
        let (network_handle, network) = hold(keeper.pid(), "net")?;
        let ids = NamespaceIds { mount, network };
        let own_mount = namespace_id(std::process::id(), "mnt")?;
        if ids.mount == own_mount {
            return Err(TestbedError::Config(
                "the keeper shares the testbed's mount namespace".into(),
            ));
        }
        Ok(Self {
            keeper,
            ids,
            registration: register(Registered::MountNamespace(ids.mount)),
            _handles: [mount_handle, network_handle],
        })
    }

    /// The namespaces' identities.
    pub fn ids(&self) -> NamespaceIds {
        self.ids
    }

    /// `/proc/<keeper>/ns/net`.
    pub fn network_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.keeper.pid()))
    }

    /// A command that runs `program` inside the namespaces (through `nsenter`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        enter(self.keeper.pid(), program)
    }

    /// The keeper process.
    pub fn keeper(&self) -> &Component {
        &self.keeper
    }

    /// The keeper process, to check whether it still runs.
    pub fn keeper_mut(&mut self) -> &mut Component {
        &mut self.keeper
    }
}

/// A command that runs `program` in the network and mount namespaces of process `pid`
/// (`nsenter --net=/proc/<pid>/ns/net --mount=/proc/<pid>/ns/mnt -- program`).
pub fn enter(pid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(format!("--mount=/proc/{pid}/ns/mnt"))
        .arg("--")
        .arg(program);
    command
}

/// Opens `/proc/<pid>/ns/<kind>` (which keeps the namespace alive) and returns the
/// handle with the namespace's inode number.
fn hold(pid: u32, kind: &str) -> Result<(File, u64), TestbedError> {
    let path = format!("/proc/{pid}/ns/{kind}");
    let io = |source| TestbedError::Io {
        what: format!("opening {path}"),
        source,
    };
    let file = File::open(&path).map_err(io)?;
    let id = file.metadata().map_err(io)?.ino();
    Ok((file, id))
}

/// Whether process `pid` is one of a node's: in its cgroup tree `/<cgroup_root>`, or
/// with its work directory in its mount table (the node's `/var` overlay). This tells a
/// node's namespace from a later one that got the same inode number.
pub fn belongs_to_node(pid: i32, cgroup_root: &str, work_dir: &Path) -> bool {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    in_cgroup_tree(&cgroups, cgroup_root) || {
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        mounts.contains(&*work_dir.to_string_lossy())
    }
}

/// Whether a `/proc/<pid>/cgroup` text places the process in the tree `/<root>` in
/// some hierarchy.
fn in_cgroup_tree(cgroups: &str, root: &str) -> bool {
    cgroups.lines().any(|line| {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(root))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The inode number of `/proc/<pid>/ns/<kind>`.
pub fn namespace_id(pid: u32, kind: &str) -> Result<u64, TestbedError> {
    let path = format!("/proc/{pid}/ns/{kind}");
    std::fs::metadata(&path)
        .map(|m| m.ino())
        .map_err(|source| TestbedError::Io {
            what: format!("reading {path}"),
            source,
        })
}

/// Processes (not threads) whose `kind` namespace (`mnt`, `net`) is `id`.
pub fn processes_in(kind: &str, id: u64) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).is_ok_and(|m| m.ino() == id)
        })
        .collect()
}

/// Kills every process in the mount namespace `id` until none is left or `deadline`
/// passes; returns those still there. Only call it while the namespace is held
/// ([`Namespaces`] alive): a freed namespace's number may already be another's.
pub fn kill_mount_namespace(id: u64, deadline: Instant) -> Vec<i32> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    loop {
        let left: Vec<i32> = processes_in("mnt", id)
            .into_iter()
            .filter(|pid| *pid != me)
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NamespacePlan {
        NamespacePlan {
            node_ip: (Ipv4Addr::new(10, 213, 0, 2), 24),
            service_ip: Ipv4Addr::new(10, 96, 0, 1),
            var_overlay: ("/w/var/upper".into(), "/w/var/work".into()),
            sysctl_dir: "/w/sysctl".into(),
            ready: "/w/ready".into(),
        }
    }

    #[test]
    fn setup_script_configures_only_the_new_namespaces_and_ends_in_the_keeper() {
        let script = plan().script().unwrap();
        assert!(script.starts_with("set -eu\n"));
        assert!(script.contains("ip address add 10.96.0.1/32 dev lo\n"));
        assert!(script.contains("ip address add 10.213.0.2/24 dev hb-node\n"));
        assert!(script.contains("mount --make-rshared /\n"));
        assert!(script.contains(
            "mount -t overlay -o 'lowerdir=/var,upperdir=/w/var/upper,workdir=/w/var/work' \
             hepbatch-node-var /var\n"
        ));
        assert!(script.contains(
            "mount --bind '/w/sysctl/vm.overcommit_memory' /proc/sys/vm/overcommit_memory\n"
        ));
        assert_eq!(
            script.matches("mount --bind").count(),
            KUBELET_SYSCTLS.len()
        );
        assert!(script.ends_with(": > '/w/ready'\nexec sleep infinity\n"));
        assert!(!script.contains("sysctl "), "no sysctl is ever written");
    }

    #[test]
    fn overlay_paths_with_separators_are_refused() {
        let mut plan = plan();
        plan.var_overlay.0 = "/tmp/a,b/upper".into();
        assert!(matches!(plan.script(), Err(TestbedError::Config(_))));
    }

    #[test]
    fn a_work_directory_below_var_is_refused() {
        let mut plan = plan();
        plan.var_overlay.0 = "/var/tmp/testbed/var/upper".into();
        assert!(matches!(plan.script(), Err(TestbedError::Config(_))));
    }

    #[test]
    fn cgroup_membership_is_read_per_path_component() {
        let text = "9:name=systemd:/hepbatch-1-0-abc/system\n4:memory:/other\n0::/\n";
        assert!(in_cgroup_tree(text, "hepbatch-1-0-abc"));
        assert!(!in_cgroup_tree(text, "hepbatch-1-0-ab"));
        assert!(!in_cgroup_tree(text, "system"));
        assert!(in_cgroup_tree("0::/hepbatch-2-1-x\n", "hepbatch-2-1-x"));
    }

    #[test]
    fn this_process_is_no_nodes() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(!belongs_to_node(
            me,
            "hepbatch-0-0-none",
            Path::new("/no/such/work")
        ));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
