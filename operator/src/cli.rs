//! Flags and environment of `hepbatch-operator`; the process around them is
//! [`crate::process`].

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;

use clap::Parser;
pub use hepbatch_runtime::logging::LogFormat;

use crate::controller::DEFAULT_MAX_CONCURRENT_RECONCILES;

/// Flags of `hepbatch-operator`; each has an environment variable too.
#[derive(Debug, Parser)]
#[command(
    name = "hepbatch-operator",
    version,
    about = "Runs AnalysisJobs as Indexed Jobs"
)]
pub struct Args {
    /// Kubeconfig file; absent: in-cluster config or the default kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; absent: all namespaces.
    #[arg(long, env = "HEPBATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// AnalysisJobs reconciled at once (in each watched namespace); bounds the operator's
    /// connections and memory when many AnalysisJobs change together.
    #[arg(
        long,
        env = "HEPBATCH_MAX_CONCURRENT_RECONCILES",
        default_value_t = DEFAULT_MAX_CONCURRENT_RECONCILES
    )]
    pub max_concurrent_reconciles: NonZeroU16,
    /// Log format.
    #[arg(long, env = "HEPBATCH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Address of `/livez`, `/readyz` and `/metrics`.
    #[arg(long, env = "HEPBATCH_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Disables leader election (only for a single replica).
    #[arg(long, env = "HEPBATCH_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "HEPBATCH_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "HEPBATCH_LEASE_NAME", default_value = "hepbatch-operator")]
    pub lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, env = "HEPBATCH_LEASE_DURATION_SECONDS", default_value_t = 10)]
    pub lease_duration_seconds: u64,
    /// Identity in the Lease; absent: `$POD_NAME`, else host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Cluster configuration file (platforms, CVMFS provider, GPU runtime); re-read when it
    /// changes. Absent: the built-in defaults.
    #[arg(long, env = "HEPBATCH_CONFIG")]
    pub config: Option<PathBuf>,
}
