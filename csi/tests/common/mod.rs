//! Shared harness of the real-mount tests.
//!
//! Every [`Node`] is a private mount namespace (anchored by a `sleep` process started with
//! `unshare --mount --propagation private`), so nothing a test mounts reaches the host.
//! The plugin runs inside it through `nsenter` with the backend [`TestBackend::chosen`]:
//! by default the real CVMFS client against a real stratum 0 (`hepbatch_tests::cvmfs`)
//! that publishes the fixtures as tagged revisions; with
//! `HEPBATCH_CSI_TEST_BACKEND=squashfuse`, the stand-in serving one squashfs image per
//! repository and revision, built here with `mksquashfs`.
//! A [`Container`] is a further mount namespace that receives a published target as an
//! `rbind` made `rslave`, as the kubelet and the container runtime do for a
//! `HostToContainer` volume. Each namespace gets its own /run, so every node runs its own
//! `automount`. Dropping a node kills every process in its namespace. The mixed load of
//! the load tests and the benchmark is [`mixed`].

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod mixed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use hepbatch_csi::proto::csi::controller_client::ControllerClient;
use hepbatch_csi::proto::csi::identity_client::IdentityClient;
use hepbatch_csi::proto::csi::node_client::NodeClient;
use hepbatch_csi::proto::csi::volume_capability::{
    AccessMode, AccessType, MountVolume, access_mode,
};
use hepbatch_csi::proto::csi::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, ProbeRequest, VolumeCapability,
};
use tonic::transport::{Channel, Endpoint};

/// Fixture content: instance directory name → files (relative path, content).
pub type Fixtures<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)])];

/// Environment variable choosing the backend of the mount tests.
pub const BACKEND_ENV: &str = "HEPBATCH_CSI_TEST_BACKEND";

/// Which client serves the fixture repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// The real CVMFS client against a real stratum 0 (the default).
    Cvmfs,
    /// squashfuse serving squashfs images: where the real client is not installed.
    Squashfuse,
}

impl TestBackend {
    /// The backend `HEPBATCH_CSI_TEST_BACKEND` names (`cvmfs` unless it says
    /// `squashfuse`). The real one must be installed: no silent fallback.
    pub fn chosen() -> Self {
        match std::env::var(BACKEND_ENV).as_deref() {
            Ok("squashfuse") => Self::Squashfuse,
            Ok("cvmfs") | Err(_) => {
                assert!(
                    hepbatch_tests::cvmfs::installed(),
                    "the real CVMFS client is not installed: run tests/cvmfs/build.sh, or set \
                     {BACKEND_ENV}=squashfuse to run these tests with the stand-in"
                );
                Self::Cvmfs
            }
            Ok(other) => panic!("{BACKEND_ENV}={other}: expected cvmfs or squashfuse"),
        }
    }
}

/// The fixtures as stratum repositories: per repository, its tagged instances
/// (`<repo>@tag-<t>`) in the order given, then its latest revision.
pub fn repositories(fixtures: Fixtures<'_>) -> Vec<hepbatch_tests::cvmfs::Repository> {
    use hepbatch_tests::cvmfs::{File, Repository, Revision};
    let mut repositories: Vec<Repository> = Vec::new();
    let mut latest: Vec<(String, Revision)> = Vec::new();
    for (instance, files) in fixtures {
        let files: Vec<File> = files
            .iter()
            .map(|(path, content)| {
                if path.starts_with("bin/") {
                    File::executable(path, content)
                } else {
                    File::new(path, content)
                }
            })
            .collect();
        let Some((name, tag)) = instance.split_once("@tag-") else {
            assert!(
                !instance.contains('@'),
                "{instance}: only tag fixtures have a stratum form"
            );
            latest.push(((*instance).to_owned(), Revision::untagged(files)));
            continue;
        };
        let revision = Revision::tagged(tag, files);
        match repositories.iter_mut().find(|r| r.name == name) {
            Some(repository) => repository.revisions.push(revision),
            None => repositories.push(Repository {
                name: name.to_owned(),
                revisions: vec![revision],
            }),
        }
    }
    for (name, revision) in latest {
        match repositories.iter_mut().find(|r| r.name == name) {
            Some(repository) => repository.revisions.push(revision),
            None => repositories.push(Repository {
                name,
                revisions: vec![revision],
            }),
        }
    }
    repositories
}

/// One stratum per fixture set, shared by the tests of a binary that run at the same time
/// and removed when the last of them is done.
pub fn stratum(fixtures: Fixtures<'_>) -> Arc<hepbatch_tests::cvmfs::Stratum> {
    static STRATA: OnceLock<Mutex<HashMap<String, Weak<hepbatch_tests::cvmfs::Stratum>>>> =
        OnceLock::new();
    let key = format!("{fixtures:?}");
    let mut strata = STRATA
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap();
    if let Some(stratum) = strata.get(&key).and_then(Weak::upgrade) {
        return stratum;
    }
    let stratum = Arc::new(
        hepbatch_tests::cvmfs::Stratum::start(&repositories(fixtures))
            .unwrap_or_else(|e| panic!("starting the test stratum: {e}")),
    );
    strata.insert(key, Arc::downgrade(&stratum));
    stratum
}

/// The fixture repositories most tests use: two revisions of cms (latest and tag v1, v2),
/// sft latest, atlas latest.
pub const STANDARD: Fixtures<'static> = &[
    (
        "cms.cern.ch",
        &[("version", "cms latest\n"), ("bin/cmsRun", "run\n")],
    ),
    ("cms.cern.ch@tag-v1", &[("version", "cms v1\n")]),
    ("cms.cern.ch@tag-v2", &[("version", "cms v2\n")]),
    ("sft.cern.ch", &[("version", "sft latest\n")]),
    ("atlas.cern.ch", &[("version", "atlas latest\n")]),
];

pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds one squashfs image per fixture instance in `images`.
pub fn build_images(dir: &Path, fixtures: Fixtures<'_>) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (instance, files) in fixtures {
        let source = dir.join("fixtures").join(instance);
        for (path, content) in *files {
            let file = source.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, content).unwrap();
        }
        run_ok(
            Command::new("mksquashfs")
                .arg(&source)
                .arg(images.join(format!("{instance}.squashfs")))
                .args(["-noappend", "-quiet", "-no-progress", "-no-xattrs"]),
        );
    }
    images
}

/// A private mount namespace with the plugin running in it.
pub struct Node {
    pub backend: TestBackend,
    /// The stratum serving the fixtures (real backend only).
    pub stratum: Option<Arc<hepbatch_tests::cvmfs::Stratum>>,
    pub dir: tempfile::TempDir,
    pub keeper: Child,
    pub plugin: Option<Child>,
    pub kubelet: PathBuf,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub images: PathBuf,
    pub extra_args: Vec<String>,
    /// Milliseconds between healing passes of the plugin.
    pub heal_interval_ms: u64,
    containers: Vec<Child>,
}

impl Node {
    /// Starts a namespace and the plugin with the [`STANDARD`] fixtures.
    pub async fn start() -> Self {
        Self::start_with(STANDARD, &[]).await
    }

    pub async fn start_with(fixtures: Fixtures<'_>, extra_args: &[&str]) -> Self {
        let backend = TestBackend::chosen();
        Self::start_on(backend, fixtures, None, extra_args).await
    }

    /// Starts a node with the real client against `stratum` (a test's own stratum).
    pub async fn start_with_stratum(
        stratum: Arc<hepbatch_tests::cvmfs::Stratum>,
        extra_args: &[&str],
    ) -> Self {
        Self::start_on(TestBackend::Cvmfs, &[], Some(stratum), extra_args).await
    }

    /// Starts a node with the stand-in serving `fixtures`, whatever the environment says
    /// (for tests that need what only the stand-in can do cheaply).
    pub async fn start_with_stand_in(fixtures: Fixtures<'_>, extra_args: &[&str]) -> Self {
        Self::start_on(TestBackend::Squashfuse, fixtures, None, extra_args).await
    }

    async fn start_on(
        backend: TestBackend,
        fixtures: Fixtures<'_>,
        own_stratum: Option<Arc<hepbatch_tests::cvmfs::Stratum>>,
        extra_args: &[&str],
    ) -> Self {
        assert_eq!(
            nix::unistd::geteuid().as_raw(),
            0,
            "the mount tests need root (they mount in a private mount namespace)"
        );
        let dir = tempfile::Builder::new()
            .prefix("hepbatch-csi-")
            .tempdir()
            .unwrap();
        let (images, stratum) = match (backend, own_stratum) {
            (TestBackend::Squashfuse, _) => (build_images(dir.path(), fixtures), None),
            (TestBackend::Cvmfs, Some(own)) => (dir.path().join("images"), Some(own)),
            (TestBackend::Cvmfs, None) => (dir.path().join("images"), Some(stratum(fixtures))),
        };
        let kubelet = dir.path().join("kubelet");
        std::fs::create_dir_all(kubelet.join("pods")).unwrap();
        // A private /run too (FUSE helpers and the client keep sockets there).
        let keeper = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o mode=0755 hepbatch-test-run /run && exec sleep infinity")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the keeper has entered its own namespace.
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{}/ns/mnt", keeper.id())).ok() == Some(own.clone())
            || !std::fs::read_to_string(format!("/proc/{}/cmdline", keeper.id()))
                .unwrap_or_default()
                .starts_with("sleep")
        {
            assert!(Instant::now() < deadline, "namespace keeper did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut node = Self {
            backend,
            stratum,
            root: dir.path().join("root"),
            socket: dir.path().join("csi.sock"),
            dir,
            keeper,
            plugin: None,
            kubelet,
            images,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            heal_interval_ms: 200,
            containers: Vec::new(),
        };
        node.start_plugin().await;
        node
    }

    /// A command run inside the node's mount namespace.
    pub fn in_ns(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.keeper.id().to_string())
            .args(["-m", "--", program]);
        command
    }

    pub async fn start_plugin(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut command = self.in_ns(env!("CARGO_BIN_EXE_hepbatch-csi"));
        command
            .arg("--endpoint")
            .arg(&self.socket)
            .arg("--kubelet-dir")
            .arg(&self.kubelet)
            .arg("--mount-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--node-id", "test-node"])
            .args(self.backend_args())
            .arg("--heal-interval-ms")
            .arg(self.heal_interval_ms.to_string())
            .args(["--idle-delay-seconds", "1"])
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        // The plugin's log goes to a file in the node's directory (shown if start-up fails).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("plugin.log"))
            .unwrap();
        command.stdout(log.try_clone().unwrap()).stderr(log);
        self.plugin = Some(command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists()
                && let Ok(channel) = self.try_channel().await
                && IdentityClient::new(channel)
                    .probe(ProbeRequest {})
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugin did not become ready; its log:\n{}",
                std::fs::read_to_string(self.dir.path().join("plugin.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The plugin's backend arguments: the stand-in's images, or the stratum's URL, keys
    /// and proxy (a flag the test passes itself, e.g. another `--server-url`, wins).
    pub fn backend_args(&self) -> Vec<String> {
        let given = |flag: &str| self.extra_args.iter().any(|a| a == flag);
        match &self.stratum {
            None => vec![
                "--backend".into(),
                "squashfuse".into(),
                "--squashfuse-images".into(),
                self.images.display().to_string(),
            ],
            Some(stratum) => {
                let mut args = vec!["--backend".to_owned(), "cvmfs".to_owned()];
                for (flag, value) in [
                    ("--server-url", stratum.server_url()),
                    ("--http-proxy", "DIRECT".to_owned()),
                    ("--keys-dir", stratum.keys_dir().display().to_string()),
                ] {
                    if !given(flag) {
                        args.extend([flag.to_owned(), value]);
                    }
                }
                args
            }
        }
    }

    /// The volume condition NodeGetVolumeStats reports for `volume` at `target`.
    pub async fn condition(
        &self,
        client: &mut NodeClient<Channel>,
        volume: &str,
        target: &Path,
    ) -> (bool, String) {
        let stats = client
            .node_get_volume_stats(hepbatch_csi::proto::csi::NodeGetVolumeStatsRequest {
                volume_id: volume.to_owned(),
                volume_path: target.display().to_string(),
                staging_target_path: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let condition = stats.volume_condition.unwrap();
        (condition.abnormal, condition.message)
    }

    /// The plugin's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where the node mounts `instance` (e.g. `cms.cern.ch@tag-v2`).
    pub fn instance_dir(&self, instance: &str) -> PathBuf {
        self.root.join("repos").join(instance)
    }

    /// Sends SIGTERM to the plugin and waits for it to exit; returns how long that took
    /// (panics after `limit`).
    pub fn terminate_plugin(&mut self, limit: Duration) -> Duration {
        let mut plugin = self.plugin.take().expect("the plugin runs");
        let started = Instant::now();
        let pid = plugin.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for target in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
            .chain([pid as i32])
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(target),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        loop {
            if plugin.try_wait().unwrap().is_some() {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                kill_tree(pid);
                let _ = plugin.wait();
                panic!(
                    "the plugin did not exit within {limit:?} of SIGTERM\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the plugin process (SIGKILL: no clean shutdown).
    pub fn kill_plugin(&mut self) {
        if let Some(mut plugin) = self.plugin.take() {
            // nsenter forks the plugin as its child; kill both.
            kill_tree(plugin.id());
            let _ = plugin.wait();
        }
    }

    async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        unix_channel(self.socket.clone()).await
    }

    pub async fn node_client(&self) -> NodeClient<Channel> {
        NodeClient::new(self.try_channel().await.unwrap())
    }

    pub async fn controller_client(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.try_channel().await.unwrap())
    }

    pub async fn identity_client(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.try_channel().await.unwrap())
    }

    /// A target path as the kubelet would choose it.
    pub fn target(&self, name: &str) -> PathBuf {
        self.kubelet
            .join("pods")
            .join(name)
            .join("volumes/kubernetes.io~csi/cvmfs/mount")
    }

    pub async fn publish(
        &self,
        client: &mut NodeClient<Channel>,
        volume: &str,
        target: &Path,
        attributes: &[(&str, &str)],
    ) -> Result<(), tonic::Status> {
        // The kubelet creates the parent of the target.
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        client
            .node_publish_volume(publish_request(volume, target, attributes))
            .await
            .map(|_| ())
    }

    pub async fn unpublish(
        &self,
        client: &mut NodeClient<Channel>,
        volume: &str,
        target: &Path,
    ) -> Result<(), tonic::Status> {
        client
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.to_owned(),
                target_path: target.display().to_string(),
            })
            .await
            .map(|_| ())
    }

    /// Publishes `volume` with `attributes` at its target ([`Node::target`]) and starts a
    /// [`Container`] holding the target; returns both.
    pub async fn publish_in_container(
        &mut self,
        client: &mut NodeClient<Channel>,
        volume: &str,
        attributes: &[(&str, &str)],
    ) -> (PathBuf, Container) {
        let target = self.target(volume);
        self.publish(client, volume, &target, attributes)
            .await
            .unwrap_or_else(|e| panic!("publish {volume}: {e:?}"));
        let container = self.container(&target);
        (target, container)
    }

    /// Reads a file inside the node's namespace.
    pub fn read(&self, path: &Path) -> Result<String, String> {
        let output = run(self.in_ns("cat").arg(path));
        stdout_or_stderr(&output)
    }

    /// Lists a directory inside the node's namespace.
    pub fn list(&self, path: &Path) -> Result<Vec<String>, String> {
        let output = run(self.in_ns("ls").arg("-1A").arg(path));
        stdout_or_stderr(&output).map(|text| text.lines().map(str::to_owned).collect())
    }

    /// The end of the plugin's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let path = self.dir.path().join("plugin.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- {} ---\n{tail}\n", path.display())
    }

    /// The node namespace's mountinfo lines.
    pub fn mountinfo(&self) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.keeper.id()))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many client mounts serve `instance` on the node (mounts at its directory).
    pub fn client_mounts(&self, instance: &str) -> usize {
        let dir = self.instance_dir(instance).display().to_string();
        self.mountinfo()
            .iter()
            .filter(|line| line.split(' ').nth(4) == Some(dir.as_str()))
            .count()
    }

    /// Starts a "container": a new mount namespace that binds `target` at its own
    /// directory `rbind` + `rslave`, the way the kubelet passes a HostToContainer volume.
    pub fn container(&mut self, target: &Path) -> Container {
        let mount = self
            .dir
            .path()
            .join(format!("container-{}", self.containers.len()));
        std::fs::create_dir_all(&mount).unwrap();
        let script = format!(
            "mount --rbind '{t}' '{m}' && mount --make-rslave '{m}' && exec sleep infinity",
            t = target.display(),
            m = mount.display()
        );
        let child = self
            .in_ns("unshare")
            .args([
                "--mount",
                "--propagation",
                "slave",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.containers.push(child);
        let container = Container { pid, mount };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .starts_with("sleep")
        {
            assert!(Instant::now() < deadline, "container did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        container
    }

    /// The live client processes (squashfuse or cvmfs2) serving `instance`: those started
    /// with its mount directory as an argument.
    pub fn clients(&self, instance: &str) -> Vec<i32> {
        let dir = self.instance_dir(instance).display().to_string();
        self.processes()
            .into_iter()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline.split(|b| *b == 0).any(|a| a == dir.as_bytes())
            })
            .collect()
    }

    /// Kills the client serving `instance` (SIGKILL), as a crash would.
    pub fn kill_client(&self, instance: &str) {
        let clients = self.clients(instance);
        assert!(!clients.is_empty(), "no client serves {instance}");
        for pid in clients {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Every process in the node's mount namespace.
    pub fn processes(&self) -> Vec<i32> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", self.keeper.id())).ok();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == ns && ns.is_some() {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_plugin();
        for container in &mut self.containers {
            kill_tree(container.id());
            let _ = container.wait();
        }
        for pid in self.processes() {
            if pid != self.keeper.id() as i32 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.keeper.kill();
        let _ = self.keeper.wait();
    }
}

/// SIGKILLs `pid` and its direct children.
fn kill_tree(pid: u32) {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// What a program printed: its standard output when it succeeded, else its standard
/// error (what tests match failures against, e.g. "No space left on device").
fn stdout_or_stderr(output: &Output) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// A process in its own mount namespace holding an rslave copy of a target.
pub struct Container {
    pub pid: u32,
    pub mount: PathBuf,
}

impl Container {
    /// Reads `relative` beneath the container's copy of the target.
    pub fn read(&self, relative: &str) -> Result<String, String> {
        let output = run(Command::new("nsenter")
            .arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "--", "cat"])
            .arg(self.mount.join(relative)));
        stdout_or_stderr(&output)
    }

    /// Reads `relative` as an unprivileged user (uid/gid 65534), as most pods run.
    pub fn read_unprivileged(&self, relative: &str) -> Result<String, String> {
        let output = run(Command::new("nsenter")
            .arg("-t")
            .arg(self.pid.to_string())
            .args([
                "-m",
                "--",
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "cat",
            ])
            .arg(self.mount.join(relative)));
        stdout_or_stderr(&output)
    }

    /// Polls until `relative` reads `expected`; returns how long it took.
    pub fn wait_for(&self, relative: &str, expected: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            match self.read(relative) {
                Ok(content) if content == expected => return started.elapsed(),
                last => assert!(
                    started.elapsed() < limit,
                    "{relative} did not read {expected:?} within {limit:?}; last: {last:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A file-system capability with access mode `mode`.
pub fn capability(mode: access_mode::Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

pub fn publish_request(
    volume: &str,
    target: &Path,
    attributes: &[(&str, &str)],
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.to_owned(),
        target_path: target.display().to_string(),
        volume_capability: Some(capability(access_mode::Mode::MultiNodeReaderOnly)),
        readonly: true,
        volume_context: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

/// A gRPC channel to a server listening on the unix socket `socket`.
pub async fn unix_channel(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::try_from("http://[::1]:1")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// Calls the gRPC method `path` (e.g. `/csi.v1.Identity/GetPluginInfo`) on the unix socket
/// `socket` over raw HTTP/2, with `authority` as the `:authority` pseudo-header exactly as
/// given (grpc-go's passthrough dialling sends the socket path, grpc-core a percent-encoded
/// one), and returns the response message bytes, or why there is none (an
/// `RST_STREAM`, a non-zero grpc-status).
pub async fn call_with_authority(
    socket: &Path,
    authority: &str,
    path: &str,
    message: &[u8],
) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
    fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
        // Literal without indexing, new name, no Huffman (lengths < 127).
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        assert!(value.len() < 127, "value too long for this test client");
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, name, value);
    }
    let mut grpc = vec![0u8];
    grpc.extend_from_slice(&(message.len() as u32).to_be_bytes());
    grpc.extend_from_slice(message);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4, 1, &block));
    out.extend(frame(0x0, 0x1, 1, &grpc));
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut data = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut header = [0u8; 9];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut header))
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|e| format!("connection closed: {e}"))?;
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        match kind {
            0x4 if flags & 0x1 == 0 => {
                stream
                    .write_all(&frame(0x4, 0x1, 0, &[]))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            0x3 => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                return Err(format!("RST_STREAM with error code {code}"));
            }
            0x0 => data.extend_from_slice(&payload),
            0x1 => {
                let fields = decoder
                    .decode(&payload)
                    .map_err(|e| format!("HPACK: {e:?}"))?;
                let status = fields
                    .iter()
                    .find(|(n, _)| n == b"grpc-status")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                if let Some(status) = status {
                    if status != "0" {
                        return Err(format!("grpc-status {status}"));
                    }
                    return Ok(data.get(5..).unwrap_or_default().to_vec());
                }
            }
            _ => {}
        }
    }
}
