//! The cgroups of a real node: one tree of its own, `/<root>`, in every hierarchy.
//!
//! ```text
//!  /sys/fs/cgroup/<hierarchy>/hepbatch-<pid>-<n>-<random>/
//!      system/      the node's own processes: namespace keeper, containerd (and so every
//!                   container shim it starts), kubelet
//!      kubepods/    created by the kubelet (cgroupRoot), pods and containers below it
//! ```
//!
//! Everything the node runs therefore lives in one tree, whatever it does to escape its
//! process group: stopping the node kills what is left in the tree and removes the
//! directories bottom-up. On cgroup v1 (legacy or hybrid) the tree exists in each
//! controller's hierarchy and runc adds its own directories below the hybrid `unified`
//! mount; on cgroup v2 it is one directory whose `cgroup.subtree_control` enables the
//! controllers the kubelet needs.
//!
//! The root's name carries the pid of the testbed process that made it, so a later
//! testbed can tell the trees of a SIGKILLed run (pid gone) from those of a testbed
//! running beside it, and remove them ([`remove_stale`]).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prefix of every node's cgroup root.
pub const ROOT_PREFIX: &str = "hepbatch-";

/// Name of the child cgroup that holds the node's own processes.
const SYSTEM: &str = "system";

/// Controllers a cgroup v2 tree enables for the kubelet.
const V2_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "pids", "hugetlb"];

/// How this machine mounts cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v1, legacy or hybrid: one mount per hierarchy (a controller, a few
    /// co-mounted controllers or a named hierarchy such as `name=systemd`).
    V1 {
        /// Mount points of the v1 hierarchies.
        hierarchies: Vec<PathBuf>,
        /// The cgroup2 mount of a hybrid setup, where runc also creates directories.
        unified: Option<PathBuf>,
    },
    /// cgroup v2 only: one hierarchy.
    V2 {
        /// Its mount point.
        mount: PathBuf,
    },
}

impl CgroupLayout {
    /// Reads this process's mount table.
    pub fn detect() -> io::Result<Self> {
        let mounts = procfs::process::Process::myself()
            .and_then(|me| me.mountinfo())
            .map_err(io::Error::other)?;
        // The super options name a v1 hierarchy's controllers (or `name=`).
        let v1 = mounts.iter().filter(|m| m.fs_type == "cgroup").map(|m| {
            let options: BTreeSet<String> = m
                .super_options
                .iter()
                .filter(|(key, _)| *key != "rw" && *key != "ro")
                .map(|(key, value)| match value {
                    Some(value) => format!("{key}={value}"),
                    None => key.clone(),
                })
                .collect();
            let options: Vec<String> = options.into_iter().collect();
            (m.mount_point.clone(), options.join(","))
        });
        let v2 = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup2")
            .map(|m| m.mount_point.clone());
        Self::from_mounts(v1, v2)
    }

    /// The layout given the v1 mounts (mount point and a text that tells hierarchies
    /// apart, their super options) and the cgroup2 mounts.
    fn from_mounts(
        v1: impl Iterator<Item = (PathBuf, String)>,
        v2: impl Iterator<Item = PathBuf>,
    ) -> io::Result<Self> {
        let mut seen = BTreeSet::new();
        let mut hierarchies = Vec::new();
        for (point, options) in v1 {
            // A hierarchy mounted twice is one hierarchy.
            if seen.insert(options) {
                hierarchies.push(point);
            }
        }
        let unified: Vec<PathBuf> = v2.collect();
        if !hierarchies.is_empty() {
            return Ok(Self::V1 {
                hierarchies,
                unified: unified.into_iter().next(),
            });
        }
        match unified.into_iter().next() {
            Some(mount) => Ok(Self::V2 { mount }),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup file system is mounted",
            )),
        }
    }

    /// Every mount point a tree has directories in.
    fn mounts(&self) -> Vec<&Path> {
        match self {
            Self::V1 {
                hierarchies,
                unified,
            } => hierarchies
                .iter()
                .chain(unified.iter())
                .map(PathBuf::as_path)
                .collect(),
            Self::V2 { mount } => vec![mount.as_path()],
        }
    }

    /// Short description for logs and docs, e.g. `cgroup v1 (9 hierarchies, hybrid)`.
    pub fn describe(&self) -> String {
        match self {
            Self::V1 {
                hierarchies,
                unified,
            } => format!(
                "cgroup v1 ({} hierarchies{})",
                hierarchies.len(),
                if unified.is_some() { ", hybrid" } else { "" }
            ),
            Self::V2 { .. } => "cgroup v2".to_owned(),
        }
    }
}

/// One node's cgroup tree.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    layout: CgroupLayout,
    root: String,
}

impl CgroupTree {
    /// Creates `/<root>` and `/<root>/system` in every hierarchy. On v1 the cpuset
    /// hierarchy gets the parent's CPUs and memory nodes (a new cpuset is empty and
    /// takes no tasks); on v2 the root enables the controllers its parent offers.
    pub fn create(layout: &CgroupLayout, root: &str) -> io::Result<Self> {
        let tree = Self {
            layout: layout.clone(),
            root: root.to_owned(),
        };
        if let Err(error) = tree.make_dirs() {
            // Leave nothing half-made behind.
            let _ = remove(&tree.dirs(), Instant::now() + Duration::from_secs(1));
            return Err(error);
        }
        Ok(tree)
    }

    fn make_dirs(&self) -> io::Result<()> {
        let root = &self.root;
        let context =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        match &self.layout {
            CgroupLayout::V1 { hierarchies, .. } => {
                for hierarchy in hierarchies {
                    let top = hierarchy.join(root);
                    let system = top.join(SYSTEM);
                    for dir in [&top, &system] {
                        fs::create_dir(dir)
                            .map_err(context(format!("creating {}", dir.display())))?;
                        for file in ["cpuset.cpus", "cpuset.mems"] {
                            let parent = dir.parent().map(|p| p.join(file));
                            if let Some(parent) = parent.filter(|p| p.exists()) {
                                let value = fs::read_to_string(&parent)?;
                                fs::write(dir.join(file), value.trim()).map_err(context(
                                    format!("writing {}", dir.join(file).display()),
                                ))?;
                            }
                        }
                    }
                }
            }
            CgroupLayout::V2 { mount } => {
                let offered = fs::read_to_string(mount.join("cgroup.subtree_control"))?;
                let offered: BTreeSet<&str> = offered.split_whitespace().collect();
                for needed in ["cpu", "memory", "pids"] {
                    if !offered.contains(needed) {
                        return Err(io::Error::other(format!(
                            "the {needed} controller is not enabled in {}/cgroup.subtree_control",
                            mount.display()
                        )));
                    }
                }
                let top = mount.join(root);
                fs::create_dir(&top).map_err(context(format!("creating {}", top.display())))?;
                let enable: Vec<String> = V2_CONTROLLERS
                    .iter()
                    .filter(|c| offered.contains(**c))
                    .map(|c| format!("+{c}"))
                    .collect();
                fs::write(top.join("cgroup.subtree_control"), enable.join(" ")).map_err(
                    context(format!("enabling controllers in {}", top.display())),
                )?;
                fs::create_dir(top.join(SYSTEM))?;
            }
        }
        Ok(())
    }

    /// The root's name, without a leading slash.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The kubelet's `cgroupRoot`.
    pub fn kubelet_root(&self) -> String {
        format!("/{}", self.root)
    }

    /// The `cgroup.procs` files that place a process into `<root>/system` (one per
    /// hierarchy; the hybrid unified mount is left to runc).
    pub fn system_procs(&self) -> Vec<PathBuf> {
        match &self.layout {
            CgroupLayout::V1 { hierarchies, .. } => hierarchies
                .iter()
                .map(|h| h.join(&self.root).join(SYSTEM).join("cgroup.procs"))
                .collect(),
            CgroupLayout::V2 { mount } => {
                vec![mount.join(&self.root).join(SYSTEM).join("cgroup.procs")]
            }
        }
    }

    /// The tree's top directory in every mount (also where it does not exist yet, such
    /// as the hybrid unified mount before runc's first container).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .mounts()
            .into_iter()
            .map(|m| m.join(&self.root))
            .collect()
    }

    /// The same directories below `<root>/<child>`, e.g. `kubepods`.
    pub fn child_dirs(&self, child: &str) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join(child)).collect()
    }
}

/// Every process in the cgroup trees `dirs` (all descendants included).
pub fn processes(dirs: &[PathBuf]) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    for dir in dirs {
        walk(dir, &mut |cgroup| {
            let procs = fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
            found.extend(
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<i32>().ok()),
            );
        });
    }
    found
}

/// Kills every process in the trees `dirs` until none is left or `deadline` passes.
/// Returns the processes still there at the deadline.
pub fn kill_all(dirs: &[PathBuf], deadline: Instant) -> BTreeSet<i32> {
    loop {
        let left = processes(dirs);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        for dir in dirs {
            // cgroup v2 kills a whole tree at once (Linux ≥ 5.14); v1 has no such file.
            let _ = fs::write(dir.join("cgroup.kill"), "1");
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the trees `dirs` bottom-up; directories that do not exist are fine. Retries
/// until `deadline` while a cgroup is busy (a killed process not yet gone).
pub fn remove(dirs: &[PathBuf], deadline: Instant) -> io::Result<()> {
    loop {
        let mut busy = None;
        for dir in dirs {
            let mut cgroups = Vec::new();
            walk(dir, &mut |cgroup| cgroups.push(cgroup.to_path_buf()));
            // `walk` lists parents before children: remove in reverse.
            for cgroup in cgroups.iter().rev() {
                match fs::remove_dir(cgroup) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        busy = Some(io::Error::new(
                            e.kind(),
                            format!("removing cgroup {}: {e}", cgroup.display()),
                        ))
                    }
                }
            }
        }
        match busy {
            None => return Ok(()),
            Some(error) if Instant::now() > deadline => return Err(error),
            Some(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Kills what is in the trees `dirs` and removes them (the signal cleanup and the
/// removal of stale trees).
pub fn kill_and_remove(dirs: &[PathBuf], deadline: Instant) -> io::Result<()> {
    let left = kill_all(dirs, deadline);
    if !left.is_empty() {
        return Err(io::Error::other(format!(
            "processes {left:?} survived SIGKILL in {}",
            dirs.first()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        )));
    }
    remove(dirs, deadline)
}

/// Calls `visit` on `dir` and every cgroup below it, parents first.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    visit(dir);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), visit);
        }
    }
}

/// The name of a new node's cgroup root: the testbed's pid, the node's index and a
/// random suffix (several testbeds may run in one process).
pub fn root_name(index: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    let suffix = Alphanumeric
        .sample_string(&mut rand::rng(), 6)
        .to_ascii_lowercase();
    format!("{ROOT_PREFIX}{}-{index}-{suffix}", std::process::id())
}

/// The pid a root name carries, if it is one of ours.
fn owner_of(root: &str) -> Option<i32> {
    root.strip_prefix(ROOT_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Removes the cgroup trees of nodes whose testbed process is gone (a SIGKILLed run
/// leaves its containers and shims behind in them): kills what runs there and removes
/// the directories. Returns the roots removed.
pub fn remove_stale(layout: &CgroupLayout) -> io::Result<Vec<String>> {
    let mut stale = BTreeSet::new();
    for mount in layout.mounts() {
        let Ok(entries) = fs::read_dir(mount) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_of(&name)
                && !Path::new("/proc").join(pid.to_string()).exists()
            {
                stale.insert(name);
            }
        }
    }
    for root in &stale {
        let dirs: Vec<PathBuf> = layout.mounts().iter().map(|m| m.join(root)).collect();
        kill_and_remove(&dirs, Instant::now() + Duration::from_secs(10))?;
    }
    Ok(stale.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_v1_lists_each_hierarchy_once_and_the_unified_mount() {
        let v1 = [
            ("/sys/fs/cgroup/cpu", "cpu"),
            ("/sys/fs/cgroup/memory", "memory"),
            ("/sys/fs/cgroup/systemd", "name=systemd"),
            ("/mnt/again/memory", "memory"),
        ]
        .map(|(p, o)| (PathBuf::from(p), o.to_owned()));
        let layout = CgroupLayout::from_mounts(
            v1.into_iter(),
            [PathBuf::from("/sys/fs/cgroup/unified")].into_iter(),
        )
        .unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V1 {
                hierarchies: ["cpu", "memory", "systemd"]
                    .map(|h| PathBuf::from("/sys/fs/cgroup").join(h))
                    .to_vec(),
                unified: Some(PathBuf::from("/sys/fs/cgroup/unified")),
            }
        );
        let tree = CgroupTree {
            layout,
            root: "hepbatch-1-0-x".into(),
        };
        assert_eq!(tree.dirs().len(), 4, "three hierarchies and unified");
        assert_eq!(tree.system_procs().len(), 3, "unified is left to runc");
        assert_eq!(tree.kubelet_root(), "/hepbatch-1-0-x");
    }

    #[test]
    fn only_cgroup2_is_v2() {
        let layout = CgroupLayout::from_mounts(
            std::iter::empty(),
            [PathBuf::from("/sys/fs/cgroup")].into_iter(),
        )
        .unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V2 {
                mount: PathBuf::from("/sys/fs/cgroup")
            }
        );
        assert!(CgroupLayout::from_mounts(std::iter::empty(), std::iter::empty()).is_err());
    }

    #[test]
    fn root_names_carry_their_owner() {
        let name = root_name(3);
        assert!(name.starts_with(ROOT_PREFIX));
        assert_eq!(owner_of(&name), i32::try_from(std::process::id()).ok());
        assert_eq!(owner_of("hepbatch-x"), None);
        assert_eq!(owner_of("system.slice"), None);
    }
}
