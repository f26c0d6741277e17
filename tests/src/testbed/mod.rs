//! A real Kubernetes control plane on this machine, for tests and for humans.
//!
//! [`Testbed::start`] brings up, from the binaries `tests/testbed/build.sh` builds:
//!
//! ```text
//!  etcd ◄── kube-apiserver ◄──┬── kube-controller-manager (job, gc, namespace, ttl, sa, …)
//!   (temp dir,  (own CA, RBAC,  ├── kube-scheduler
//!    no fsync)   SA keys)       ├── kwok (plays the kubelet of the fake nodes)
//!                               └── real nodes, if asked for ([`node`]): kubelet +
//!                                   containerd + runc in namespaces of their own
//! ```
//!
//! Every port is chosen at run time, so testbeds can run side by side. Readiness means:
//! the apiserver's `/readyz` answers `ok`, the `default` service account exists (the
//! controller-manager works) and every node is `Ready` and untainted (kwok works, each
//! kubelet works). Dropping the [`Testbed`] stops the real nodes, then every component,
//! and removes its work directory; component logs are removed too unless
//! [`Testbed::keep_logs`] was called (the test harness does so when a test fails, and
//! prints their tails).

mod binaries;
mod kubeconfig;
pub mod node;
mod nodes;
pub mod outcomes;
mod pki;
mod process;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::Api;
use tempfile::TempDir;

use crate::ports::free_port;
use crate::wait::Poll;
pub use binaries::{BIN_DIR_ENV, Binaries, COMPONENTS};
pub use node::{NodeFootprint, RealNode, RealNodeSpec};
pub use nodes::{FakeNode, GpuModel, MANAGED_LABEL, NVIDIA_GPU};
pub use outcomes::{Failure, Failures};
use process::Component;
pub use process::{Registered, RegistrationGuard, register, spawn_registered, tail, unregister};

/// Pod annotations understood by the testbed's kwok stages (`kwok-stages.yaml`).
pub mod annotations {
    /// How long a bound pod stays Pending before it starts, e.g. `"2s"` (default `0s`).
    pub const START_DELAY: &str = "testbed.hepbatch.io/start-delay";
    /// How long a pod runs before it exits, e.g. `"500ms"` (default `1s`).
    pub const RUN_DURATION: &str = "testbed.hepbatch.io/run-duration";
    /// Non-zero exit code the pod fails with; absent means it succeeds.
    pub const EXIT_CODE: &str = "testbed.hepbatch.io/exit-code";
    /// Per-shard outcomes of an Indexed Job's pods, a JSON list of rules written by
    /// [`Failures::annotation`](super::outcomes::Failures::annotation).
    pub const FAILURES: &str = "testbed.hepbatch.io/failures";
}

/// The service IP range of the testbed and the apiserver's address in it.
const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: &str = "10.96.0.1";
const SERVICE_IPV4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// etcd's backend quota: 8 GiB, the most etcd recommends.
const ETCD_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Controllers the controller-manager runs: what Jobs, namespaces, garbage collection,
/// service accounts and the workloads of a Helm chart need, and nothing that expects real
/// nodes or a cloud.
const CONTROLLERS: &[&str] = &[
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "replicaset-controller",
    "deployment-controller",
    "daemonset-controller",
    "statefulset-controller",
    "disruption-controller",
    "resourcequota-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "endpointslice-controller",
    "clusterrole-aggregation-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
];

/// How long each readiness step may take before the start fails.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything that can go wrong while starting or using the testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The component binaries are not built.
    #[error("testbed binaries not found: {0}")]
    NotBuilt(String),
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Generating a certificate or key failed.
    #[error("generating the {what}: {source}")]
    Pki {
        /// Which certificate or key.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: kube::Error,
    },
    /// The kubeconfig could not be turned into a client.
    #[error("building a client from the kubeconfig: {0}")]
    ClientConfig(String),
    /// A component exited while the testbed was starting.
    #[error("{component} exited ({status}) during start; last log lines:\n{log_tail}")]
    ComponentExited {
        /// The component.
        component: String,
        /// How it exited.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A readiness step did not complete in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// A real node did not become Ready.
    #[error(
        "real node {node} did not become Ready and untainted within {timeout:?}; \
             last log lines:\n{log_tail}"
    )]
    NodeNotReady {
        /// The node.
        node: String,
        /// How long we waited.
        timeout: Duration,
        /// The end of its kubelet's and containerd's logs.
        log_tail: String,
    },
}

/// Options for [`Testbed::start`].
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Fake nodes to create.
    pub nodes: Vec<FakeNode>,
    /// Real kubelet nodes to start (none by default; they need root, containerd, runc
    /// and the CNI plugins, see docs/testbed.md).
    pub real_nodes: Vec<RealNodeSpec>,
    /// Image archives (docker-archive or oci-archive tars, e.g. the operator's and the
    /// CSI plugin's) to import into every real node besides the node images.
    pub images: Vec<PathBuf>,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            nodes: FakeNode::default_set(),
            real_nodes: Vec::new(),
            images: Vec::new(),
        }
    }
}

impl TestbedOptions {
    /// One real node (`node-0`) and no fake nodes: the cluster a suite needs when its
    /// pods must really run.
    pub fn one_real_node() -> Self {
        Self {
            nodes: Vec::new(),
            real_nodes: vec![RealNodeSpec::numbered(0)],
            images: Vec::new(),
        }
    }
}

/// A running testbed cluster. Dropping it stops the cluster.
pub struct Testbed {
    real_nodes: Vec<RealNode>,
    egress: Option<Arc<node::egress::EgressProxy>>,
    components: Vec<Component>,
    binaries: Binaries,
    client: kube::Client,
    kubeconfig: PathBuf,
    server: String,
    nodes: Vec<FakeNode>,
    log_dir: PathBuf,
    keep_logs: AtomicBool,
    registrations: Vec<u64>,
    workdir: Option<TempDir>,
    started_in: Duration,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("server", &self.server)
            .field("kubeconfig", &self.kubeconfig)
            .field("log_dir", &self.log_dir)
            .finish_non_exhaustive()
    }
}

impl Testbed {
    /// Starts a cluster from already built binaries and waits until it is ready.
    pub async fn start(options: TestbedOptions) -> Result<Self, TestbedError> {
        Self::start_with(Binaries::locate()?, options).await
    }

    /// Starts a cluster from the given binaries and waits until it is ready.
    pub async fn start_with(
        binaries: Binaries,
        options: TestbedOptions,
    ) -> Result<Self, TestbedError> {
        let began = Instant::now();
        let io_err = |what: &str| {
            let what = what.to_owned();
            move |source| TestbedError::Io { what, source }
        };
        let workdir = tempfile::Builder::new()
            .prefix("hepbatch-testbed-")
            .tempdir()
            .map_err(io_err("creating the work directory"))?;
        let work = workdir.path().to_path_buf();
        let log_dir = std::env::temp_dir()
            .join("hepbatch-testbed-logs")
            .join(work.file_name().unwrap_or_default());
        std::fs::create_dir_all(&log_dir).map_err(io_err("creating the log directory"))?;
        let registrations = vec![
            register(Registered::Path(work.clone())),
            register(Registered::Path(log_dir.clone())),
        ];

        let (pki, authority) = pki::generate(&work, SERVICE_IP)?;
        // Real nodes: what they need from the machine is checked, their images built and
        // what an earlier, killed run left removed before anything starts.
        let node_setup = if options.real_nodes.is_empty() {
            None
        } else {
            let mut names: Vec<&str> = options
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .chain(options.real_nodes.iter().map(|n| n.name.as_str()))
                .collect();
            names.sort_unstable();
            if let Some(twice) = names.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(TestbedError::Config(format!(
                    "two nodes are named {}",
                    twice[0]
                )));
            }
            let layout = node::preflight()?;
            let removed = node::remove_stale_nodes()?;
            if !removed.is_empty() {
                eprintln!("testbed: removed cgroups of earlier real nodes: {removed:?}");
            }
            let archives = tokio::task::spawn_blocking(node::node_images)
                .await
                .map_err(|e| TestbedError::Config(format!("building the node images: {e}")))??;
            Some((layout, archives))
        };
        let etcd_client = free_port().map_err(io_err("finding a free port"))?;
        let etcd_peer = free_port().map_err(io_err("finding a free port"))?;
        let apiserver_port = free_port().map_err(io_err("finding a free port"))?;
        let kwok_port = free_port().map_err(io_err("finding a free port"))?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = work.join("admin.kubeconfig");
        kubeconfig::write(&kubeconfig, &kubeconfig::render(&server, &pki))?;
        let scheduler_config = work.join("scheduler.yaml");
        std::fs::write(&scheduler_config, scheduler_config_yaml(&kubeconfig))
            .map_err(io_err("writing the scheduler configuration"))?;

        let mut testbed = Self {
            real_nodes: Vec::new(),
            egress: None,
            components: Vec::new(),
            client: client_from(&kubeconfig).await?,
            binaries,
            kubeconfig,
            server,
            nodes: options.nodes,
            log_dir,
            // Until the start succeeds: a failed start keeps its logs.
            keep_logs: AtomicBool::new(true),
            registrations,
            workdir: Some(workdir),
            started_in: Duration::ZERO,
        };
        let arg = |name: &str, value: &dyn std::fmt::Display| format!("--{name}={value}");
        let path = |p: &Path| p.display().to_string();

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        testbed.spawn(
            "etcd",
            vec![
                arg("name", &"testbed"),
                arg("data-dir", &path(&work.join("etcd"))),
                arg("listen-client-urls", &etcd_url),
                arg("advertise-client-urls", &etcd_url),
                arg("listen-peer-urls", &peer_url),
                arg("initial-advertise-peer-urls", &peer_url),
                arg("initial-cluster", &format!("testbed={peer_url}")),
                "--unsafe-no-fsync".into(),
                // Room for a benchmark's 100,000 finished pods and their history between
                // the apiserver's compactions; etcd's default quota is 2 GiB.
                arg("quota-backend-bytes", &ETCD_QUOTA_BYTES),
                arg("log-level", &"warn"),
            ],
        )?;
        let mut apiserver_args = Vec::new();
        if node_setup.is_some() {
            // The apiserver reaches the real nodes' kubelets (logs, exec) through the
            // testbed's egress proxy, and authenticates to them as the admin.
            let socket = work.join("egress.sock");
            let proxy =
                node::egress::EgressProxy::start(&socket, tokio::runtime::Handle::current())
                    .map_err(io_err("serving the egress proxy socket"))?;
            let selector = work.join("egress-selector.json");
            std::fs::write(&selector, node::egress::selector_config(&socket))
                .map_err(io_err("writing the egress selector configuration"))?;
            testbed.egress = Some(Arc::new(proxy));
            apiserver_args.extend([
                arg("egress-selector-config-file", &path(&selector)),
                arg("kubelet-client-certificate", &path(&pki.admin_cert)),
                arg("kubelet-client-key", &path(&pki.admin_key)),
                arg("kubelet-preferred-address-types", &"InternalIP,Hostname"),
            ]);
        }
        testbed.spawn(
            "kube-apiserver",
            [
                vec![
                    arg("etcd-servers", &etcd_url),
                    arg("bind-address", &"127.0.0.1"),
                    arg("advertise-address", &"127.0.0.1"),
                    arg("endpoint-reconciler-type", &"none"),
                    arg("secure-port", &apiserver_port),
                    arg("tls-cert-file", &path(&pki.serving_cert)),
                    arg("tls-private-key-file", &path(&pki.serving_key)),
                    arg("client-ca-file", &path(&pki.ca_cert)),
                    arg(
                        "service-account-issuer",
                        &"https://kubernetes.default.svc.cluster.local",
                    ),
                    arg("service-account-key-file", &path(&pki.service_account_pub)),
                    arg(
                        "service-account-signing-key-file",
                        &path(&pki.service_account_key),
                    ),
                    arg("service-cluster-ip-range", &SERVICE_CIDR),
                    arg("authorization-mode", &"Node,RBAC"),
                    arg("allow-privileged", &true),
                    // Off unless asked for: `/debug/pprof` then answers to the admin
                    // kubeconfig (`kubectl get --raw /debug/pprof/profile?seconds=60`).
                    arg("profiling", &profiling_requested()),
                ],
                apiserver_args,
            ]
            .concat(),
        )?;
        testbed.wait_for_apiserver().await?;

        let kubeconfig_path = path(&testbed.kubeconfig);
        testbed.spawn(
            "kube-controller-manager",
            vec![
                arg("kubeconfig", &kubeconfig_path),
                arg("authentication-kubeconfig", &kubeconfig_path),
                arg("authorization-kubeconfig", &kubeconfig_path),
                arg("bind-address", &"127.0.0.1"),
                arg("secure-port", &0),
                arg("leader-elect", &false),
                arg("controllers", &CONTROLLERS.join(",")),
                arg(
                    "service-account-private-key-file",
                    &path(&pki.service_account_key),
                ),
                arg("root-ca-file", &path(&pki.ca_cert)),
                arg("use-service-account-credentials", &false),
                arg("kube-api-qps", &200),
                arg("kube-api-burst", &400),
            ],
        )?;
        testbed.spawn(
            "kube-scheduler",
            vec![
                arg("config", &path(&scheduler_config)),
                arg("authentication-kubeconfig", &kubeconfig_path),
                arg("authorization-kubeconfig", &kubeconfig_path),
                arg("bind-address", &"127.0.0.1"),
                arg("secure-port", &0),
            ],
        )?;
        let stages = Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/kwok-stages.yaml");
        testbed.spawn(
            "kwok",
            vec![
                arg("kubeconfig", &kubeconfig_path),
                arg("config", &path(&stages)),
                arg("manage-all-nodes", &false),
                arg(
                    "manage-nodes-with-label-selector",
                    &format!("{}={}", MANAGED_LABEL.0, MANAGED_LABEL.1),
                ),
                arg("server-address", &format!("127.0.0.1:{kwok_port}")),
                arg("cidr", &"10.244.0.1/16"),
                arg("node-ip", &"10.0.0.1"),
                arg("node-lease-duration-seconds", &40),
            ],
        )?;

        nodes::create(&testbed.client, &testbed.nodes).await?;
        testbed.wait_for_default_service_account().await?;
        testbed.wait_for_nodes_ready().await?;
        if let (Some((layout, archives)), Some(egress)) = (&node_setup, testbed.egress.clone()) {
            let apiserver = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), apiserver_port);
            for (index, spec) in options.real_nodes.iter().enumerate() {
                let context = node::NodeContext {
                    index,
                    work_dir: &work,
                    log_dir: &testbed.log_dir,
                    binaries: &testbed.binaries,
                    authority: &authority,
                    ca_cert: &pki.ca_cert,
                    apiserver,
                    service_ip: SERVICE_IPV4,
                    images: &options.images,
                    cgroups: layout,
                    egress: &egress,
                };
                let real = RealNode::start(spec, archives, context).await?;
                testbed.real_nodes.push(real);
            }
            testbed.wait_for_real_nodes_ready().await?;
        }
        testbed.started_in = began.elapsed();
        testbed.keep_logs.store(false, Ordering::Relaxed);
        Ok(testbed)
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) -> Result<(), TestbedError> {
        let component = Component::spawn(name, &self.binaries.path(name), &args, &self.log_dir)?;
        self.components.push(component);
        Ok(())
    }

    /// A client with cluster-admin rights.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Name and process id of each running component (etcd, kube-apiserver, ..., and
    /// each real node's `<node>-namespaces`, `<node>-containerd`, `<node>-kubelet`), e.g.
    /// to read what CPU each one used.
    pub fn component_pids(&self) -> Vec<(&str, u32)> {
        self.components
            .iter()
            .map(|c| (c.name(), c.pid()))
            .chain(self.real_nodes.iter().flat_map(RealNode::pids))
            .collect()
    }

    /// The real nodes of this cluster (see [`node`]).
    pub fn real_nodes(&self) -> &[RealNode] {
        &self.real_nodes
    }

    /// The real node named `name`.
    pub fn real_node(&self, name: &str) -> Option<&RealNode> {
        self.real_nodes.iter().find(|n| n.name() == name)
    }

    /// Path of the admin kubeconfig (inside the work directory: valid while the testbed runs).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// URL of the apiserver.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The fake nodes of this cluster.
    pub fn nodes(&self) -> &[FakeNode] {
        &self.nodes
    }

    /// The component binaries (kubectl, helm, csi-sanity, ...).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A `kubectl` command already pointed at this cluster.
    pub fn kubectl(&self) -> std::process::Command {
        let mut command = std::process::Command::new(self.binaries.path("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// How long [`Testbed::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The cluster's work directory (certificates, kubeconfig, etcd data).
    pub fn work_dir(&self) -> &Path {
        self.workdir
            .as_ref()
            .map_or(Path::new(""), |dir| dir.path())
    }

    /// Directory holding one log file per component.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Keeps the component logs after the testbed stops (for a failed test).
    pub fn keep_logs(&self) {
        self.keep_logs.store(true, Ordering::Relaxed);
    }

    /// The last `lines` lines of every component's log, each under a header.
    pub fn log_tails(&self, lines: usize) -> String {
        let control_plane: String = self
            .components
            .iter()
            .map(|c| {
                format!(
                    "----- {} ({}) -----\n{}\n",
                    c.name(),
                    c.log().display(),
                    c.log_tail(lines)
                )
            })
            .collect();
        let nodes: String = self.real_nodes.iter().map(|n| n.log_tails(lines)).collect();
        control_plane + &nodes
    }

    /// Fails if a component has exited.
    fn check_alive(&mut self) -> Result<(), TestbedError> {
        for real in &mut self.real_nodes {
            real.check_alive()?;
        }
        for component in &mut self.components {
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

    /// Polls `ready` every 100 ms until it yields true, a component dies or time is up.
    async fn poll<F, Fut>(&mut self, what: &str, mut ready: F) -> Result<(), TestbedError>
    where
        F: FnMut(kube::Client) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut poll = Poll::new(what, START_TIMEOUT, Duration::from_millis(100));
        loop {
            self.check_alive()?;
            if ready(self.client.clone()).await {
                return Ok(());
            }
            poll.next()
                .await
                .map_err(|timed_out| TestbedError::Timeout {
                    what: timed_out.what,
                    timeout: timed_out.timeout,
                })?;
        }
    }

    async fn wait_for_apiserver(&mut self) -> Result<(), TestbedError> {
        self.poll("kube-apiserver /readyz", |client| async move {
            let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
                return false;
            };
            matches!(client.request_text(request).await, Ok(body) if body.trim() == "ok")
        })
        .await
    }

    async fn wait_for_default_service_account(&mut self) -> Result<(), TestbedError> {
        self.poll("the default service account", |client| async move {
            let api: Api<ServiceAccount> = Api::namespaced(client, "default");
            matches!(api.get_opt("default").await, Ok(Some(_)))
        })
        .await
    }

    async fn wait_for_real_nodes_ready(&mut self) -> Result<(), TestbedError> {
        let names: Vec<String> = self
            .real_nodes
            .iter()
            .map(|n| n.name().to_owned())
            .collect();
        for name in names {
            let wanted = name.clone();
            let outcome = self
                .poll(&format!("real node {name} to become Ready"), move |client| {
                    let wanted = wanted.clone();
                    async move {
                        let api: Api<Node> = Api::all(client);
                        matches!(api.get_opt(&wanted).await, Ok(Some(node)) if node_is_ready(&node))
                    }
                })
                .await;
            if let Err(TestbedError::Timeout { timeout, .. }) = outcome {
                let log_tail = self
                    .real_node(&name)
                    .map(|n| n.log_tails(30))
                    .unwrap_or_default();
                return Err(TestbedError::NodeNotReady {
                    node: name,
                    timeout,
                    log_tail,
                });
            }
            outcome?;
            if let Some(real) = self.real_nodes.iter_mut().find(|n| n.name() == name) {
                real.mark_ready();
            }
        }
        Ok(())
    }

    async fn wait_for_nodes_ready(&mut self) -> Result<(), TestbedError> {
        let expected = self.nodes.len();
        self.poll("fake nodes to become Ready", move |client| async move {
            let api: Api<Node> = Api::all(client);
            let Ok(list) = api.list(&Default::default()).await else {
                return false;
            };
            list.items.iter().filter(|node| node_is_ready(node)).count() >= expected
        })
        .await
    }
}

/// True when the node's `Ready` condition is `True` and the node lifecycle controller
/// has lifted the `node.kubernetes.io/not-ready` taint every new node starts with.
pub fn node_is_ready(node: &Node) -> bool {
    let tainted_not_ready = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| {
            taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/not-ready")
        });
    !tainted_not_ready
        && node
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Real nodes first, while the apiserver still answers their kubelets.
        self.real_nodes.clear();
        if let Some(egress) = self.egress.take() {
            egress.stop();
        }
        process::stop_all(&mut self.components);
        self.components.clear();
        if let Some(workdir) = self.workdir.take() {
            let _ = workdir.close();
        }
        for id in self.registrations.drain(..) {
            unregister(id);
        }
        if self.keep_logs.load(Ordering::Relaxed) {
            eprintln!("testbed: component logs kept in {}", self.log_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client, TestbedError> {
    let text = std::fs::read_to_string(kubeconfig).map_err(|source| TestbedError::Io {
        what: format!("reading {}", kubeconfig.display()),
        source,
    })?;
    let parsed = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| TestbedError::ClientConfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| TestbedError::ClientConfig(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| TestbedError::ClientConfig(e.to_string()))
}

/// Whether `HEPBATCH_TESTBED_PROFILING` asks for the apiserver's `/debug/pprof` endpoints
/// (`1` or `true`), to see where its CPU goes during a benchmark.
pub const PROFILING_ENV: &str = "HEPBATCH_TESTBED_PROFILING";

fn profiling_requested() -> bool {
    std::env::var(PROFILING_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn scheduler_config_yaml(kubeconfig: &Path) -> String {
    format!(
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {}
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
",
        kubeconfig.display()
    )
}
