//! Talking to the cluster: the user's kubeconfig, and the AnalysisJob with its pods.
//!
//! The only module that calls the apiserver besides the commands' thin drivers in
//! `main.rs`; everything it returns is plain API objects for the pure modules.

use std::path::PathBuf;

use hepbatch_crds::AnalysisJob;
use hepbatch_crds::analysis_job::ANALYSIS_JOB_LABEL;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Why the cluster could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read.
    #[error("reading the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// No configuration could be inferred (no kubeconfig, not in a cluster).
    #[error("finding a cluster configuration (KUBECONFIG, ~/.kube/config or in-cluster)")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The AnalysisJob does not exist.
    #[error("analysisjob {name} not found in namespace {namespace}")]
    NotFound {
        /// Its name.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// A request failed.
    #[error("{what}")]
    Request {
        /// What was asked.
        what: String,
        /// The apiserver's or the transport's error.
        #[source]
        source: kube::Error,
    },
}

/// Where to connect: the kubectl flags a plugin is expected to honour.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Target {
    /// Path of the kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// A client and the namespace to work in.
pub struct Connection {
    /// The client.
    pub client: Client,
    /// The namespace from the flag or the context.
    pub namespace: String,
}

impl Target {
    /// Connects as kubectl would with the same flags.
    pub async fn connect(&self) -> Result<Connection, ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                // KUBECONFIG may list several files; kube merges them.
                let paths = std::env::split_paths(path);
                let mut merged: Option<Kubeconfig> = None;
                for path in paths {
                    let file = Kubeconfig::read_from(&path).map_err(ClusterError::Kubeconfig)?;
                    merged = Some(match merged {
                        None => file,
                        Some(m) => m.merge(file).map_err(ClusterError::Kubeconfig)?,
                    });
                }
                let kubeconfig = merged.unwrap_or_default();
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(ClusterError::Kubeconfig)?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(ClusterError::Kubeconfig)?,
            None => Config::infer().await.map_err(ClusterError::Infer)?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(ClusterError::Client)?;
        Ok(Connection { client, namespace })
    }
}

impl Connection {
    /// The AnalysisJobs of the namespace.
    pub fn analysis_jobs(&self) -> Api<AnalysisJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The AnalysisJob `name`.
    pub async fn analysis_job(&self, name: &str) -> Result<AnalysisJob, ClusterError> {
        self.analysis_jobs()
            .get_opt(name)
            .await
            .map_err(|source| ClusterError::Request {
                what: format!("reading analysisjob {name}"),
                source,
            })?
            .ok_or_else(|| ClusterError::NotFound {
                name: name.to_owned(),
                namespace: self.namespace.clone(),
            })
    }

    /// The Job of the AnalysisJob `name` (same name), if it exists.
    pub async fn job(&self, name: &str) -> Result<Option<Job>, ClusterError> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        jobs.get_opt(name)
            .await
            .map_err(|source| ClusterError::Request {
                what: format!("reading job {name}"),
                source,
            })
    }

    /// The names of the AnalysisJobs labelled `selector`.
    pub async fn analysis_job_names(&self, selector: &str) -> Result<Vec<String>, ClusterError> {
        Ok(self
            .analysis_jobs()
            .list_metadata(&kube::api::ListParams::default().labels(selector))
            .await
            .map_err(|source| ClusterError::Request {
                what: format!("listing analysisjobs {selector}"),
                source,
            })?
            .items
            .into_iter()
            .filter_map(|m| m.metadata.name)
            .collect())
    }

    /// The pods of the AnalysisJob `name`, found by the label the operator puts on them.
    pub async fn pods(&self, name: &str) -> Result<Vec<Pod>, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("{ANALYSIS_JOB_LABEL}={name}");
        Ok(pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|source| ClusterError::Request {
                what: format!("listing the pods of analysisjob {name}"),
                source,
            })?
            .items)
    }
}
