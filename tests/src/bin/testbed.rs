//! `testbed`: the hepbatch test cluster for humans.
//!
//! `testbed build` builds the components (once; cached outside the clone).
//! `testbed up` starts a cluster, writes its kubeconfig and stays up until Ctrl-C;
//! `--real-node` adds real kubelet nodes, `--nodes`/`--pods-per-node` shape the fake ones.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hepbatch_tests::chart::Backend;
use hepbatch_tests::cvmfs::{Stratum, content};
use hepbatch_tests::testbed::{
    self, Binaries, FakeNode, RealNodeSpec, Registered, Testbed, TestbedOptions,
};

#[derive(Parser)]
#[command(
    about = "A real Kubernetes control plane with fake (kwok) CPU and GPU nodes and, if asked, real kubelet nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the component binaries if the cache does not have them; print their directory.
    Build,
    /// Start a cluster and keep it running until Ctrl-C.
    Up {
        /// Where to write the admin kubeconfig.
        #[arg(long, env = "HEPBATCH_TESTBED_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Add a real node (kubelet + containerd in namespaces of its own; needs root).
        /// Repeat for more: node-0, node-1, ...
        #[arg(long = "real-node", action = clap::ArgAction::Count)]
        real_nodes: u8,
        /// Fake (kwok) CPU nodes instead of the default set of four CPU and two GPU
        /// nodes; 0 for none.
        #[arg(long)]
        nodes: Option<usize>,
        /// Pod capacity of each fake node.
        #[arg(long, default_value_t = 250)]
        pods_per_node: u32,
        /// An image archive (docker-archive or oci-archive) to import into every real
        /// node; repeatable.
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        /// Write Helm values for installing the chart on the first real node here (JSON):
        /// local images, its kubelet directory and a CVMFS test stratum started by the
        /// testbed (cms.cern.ch with tags v1 and v2, sft.cern.ch, atlas.cern.ch,
        /// unpacked.cern.ch), exposed on the node.
        #[arg(long, requires = "real_nodes")]
        chart_values: Option<PathBuf>,
        /// With --chart-values: the squashfuse stand-in instead of the real CVMFS client.
        #[arg(long, requires = "chart_values")]
        stand_in: bool,
    },
}

fn default_kubeconfig() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("hepbatch/testbed/kubeconfig")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let binaries = match Binaries::ensure_built() {
        Ok(binaries) => binaries,
        Err(error) => {
            eprintln!("testbed: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Build => {
            println!("{}", binaries.dir().display());
            ExitCode::SUCCESS
        }
        Command::Up {
            kubeconfig,
            real_nodes,
            nodes,
            pods_per_node,
            images,
            chart_values,
            stand_in,
        } => {
            let mut fake = match nodes {
                Some(count) => (0..count)
                    .map(|i| FakeNode::cpu(format!("cpu-{i}")))
                    .collect(),
                None => FakeNode::default_set(),
            };
            for node in &mut fake {
                node.pods = pods_per_node;
            }
            let options = TestbedOptions {
                nodes: fake,
                real_nodes: (0..usize::from(real_nodes))
                    .map(RealNodeSpec::numbered)
                    .collect(),
                images,
            };
            let chart = chart_values.map(|path| ChartValues {
                path,
                backend: if stand_in {
                    Backend::Squashfuse
                } else {
                    Backend::Cvmfs
                },
            });
            up(
                binaries,
                options,
                kubeconfig.unwrap_or_else(default_kubeconfig),
                chart,
            )
            .await
        }
    }
}

/// Where to write the chart's values for the first real node, and for which backend.
struct ChartValues {
    path: PathBuf,
    backend: Backend,
}

async fn up(
    binaries: Binaries,
    options: TestbedOptions,
    kubeconfig: PathBuf,
    chart: Option<ChartValues>,
) -> ExitCode {
    // The stratum first: it is independent of the cluster and takes seconds.
    let stratum = match &chart {
        Some(ChartValues {
            backend: Backend::Cvmfs,
            ..
        }) => {
            eprintln!("testbed: starting a CVMFS stratum 0 with the test repositories ...");
            match Stratum::start(&content::standard()) {
                Ok(stratum) => Some(stratum),
                Err(error) => {
                    eprintln!("testbed: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    eprintln!(
        "testbed: starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok{} ...",
        if options.real_nodes.is_empty() {
            ""
        } else {
            " and real nodes (the first start builds their images: minutes)"
        }
    );
    let testbed = match Testbed::start_with(binaries, options).await {
        Ok(testbed) => testbed,
        Err(error) => {
            eprintln!("testbed: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(parent) = kubeconfig.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(error) = std::fs::copy(testbed.kubeconfig(), &kubeconfig) {
        eprintln!("testbed: cannot write {}: {error}", kubeconfig.display());
        return ExitCode::FAILURE;
    }
    let registration = testbed::register(Registered::Path(kubeconfig.clone()));
    if let (Some(chart), Some(node)) = (&chart, testbed.real_nodes().first()) {
        let written = hepbatch_tests::chart::values(node, chart.backend, stratum.as_ref())
            .map_err(|e| e.to_string())
            .and_then(|values| {
                std::fs::write(&chart.path, values.to_string()).map_err(|e| e.to_string())
            });
        if let Err(error) = written {
            eprintln!("testbed: writing {}: {error}", chart.path.display());
            return ExitCode::FAILURE;
        }
        println!(
            "chart values for {} ({:?} backend): {}\n  helm install hepbatch charts/hepbatch -n hepbatch-system --create-namespace -f {}\n",
            node.name(),
            chart.backend,
            chart.path.display(),
            chart.path.display(),
        );
    }
    let nodes: Vec<&str> = testbed
        .nodes()
        .iter()
        .map(|n| n.name.as_str())
        .chain(testbed.real_nodes().iter().map(|n| n.name()))
        .collect();
    println!(
        "testbed ready in {:.1?}: {} with nodes {}\n\n  export KUBECONFIG={}\n  export PATH={}:$PATH\n  kubectl get nodes\n",
        testbed.started_in(),
        testbed.server(),
        if nodes.is_empty() {
            "(none)".to_owned()
        } else {
            nodes.join(", ")
        },
        kubeconfig.display(),
        testbed.binaries().dir().display(),
    );
    for real in testbed.real_nodes() {
        let footprint = real.footprint();
        println!(
            "real node {name}: ip {ip}, pods {subnet}/{prefix}, started in {took:.1?}, Ready after {ready:.1?}\n  \
             work: {work}\n  kubelet dir: {kubelet}\n  cgroup root: /{cgroup}\n  \
             namespaces: mnt {mnt}, net {net}\n  \
             inside: nsenter --net=/proc/{keeper}/ns/net --mount=/proc/{keeper}/ns/mnt -- sh\n  \
             images: ctr --address {socket} -n k8s.io images ls\n",
            name = real.name(),
            ip = real.ip(),
            subnet = real.network().pod_subnet.0,
            prefix = real.network().pod_subnet.1,
            took = real.started_in(),
            ready = real.ready_in().unwrap_or_default(),
            work = real.work_dir().display(),
            kubelet = real.kubelet_dir().display(),
            cgroup = real.cgroup_root(),
            mnt = footprint.namespaces.map_or(0, |ids| ids.mount),
            net = footprint.namespaces.map_or(0, |ids| ids.network),
            keeper = real.pids().first().map_or(0, |(_, pid)| *pid),
            socket = real.containerd_socket().display(),
        );
    }
    println!("components:");
    for (name, pid) in testbed.component_pids() {
        println!("  {name:<28} pid {pid}");
    }
    println!(
        "\nwork directory: {}\nlogs: {}\nCtrl-C stops the cluster and removes its files.",
        testbed.work_dir().display(),
        testbed.log_dir().display(),
    );
    // The testbed's signal handler stops every component and removes every registered
    // file on SIGINT/SIGTERM/SIGHUP; until then, serve.
    let _ = tokio::signal::ctrl_c().await;
    drop(testbed);
    drop(stratum);
    let _ = std::fs::remove_file(&kubeconfig);
    testbed::unregister(registration);
    ExitCode::SUCCESS
}
