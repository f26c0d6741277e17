//! The hepbatch operator: reconciles each AnalysisJob into one Indexed `batch/v1` Job and
//! reports the Job's progress back as a readable status.
//!
//! Layout (pure core, runtime wiring around it):
//! - [`build`]: AnalysisJob → Job, pure, composed of the HEP translations [`cmssw`]
//!   (the release bootstrap script), [`cvmfs`] (`/cvmfs` volumes), [`gpu`] (device-plugin
//!   resources and placement), [`inputs`] (file lists split over shards), [`selection`]
//!   (a selection of shards under their original indexes) and [`security`] (who the
//!   shards run as, the Pod Security level a pod meets);
//! - [`status`]: Job + failed pods → AnalysisJob status and the Events between two
//!   statuses, pure and deterministic;
//! - [`controller`]: the reconcile loop in four stages (observe, a pure plan, apply,
//!   report), with [`pacing`] of progress-only status writes;
//! - [`k8s`]: typed Kubernetes names (condition types, pod phases, policies) and the
//!   apiserver answers the operator handles;
//! - [`leader`]: Lease-based leader election so only one replica reconciles;
//! - [`metrics`]: Prometheus metrics, served with `/livez`, `/readyz` and `/healthz` by
//!   the admin server of [`hepbatch_runtime`];
//! - [`revision`]: the current revision of CVMFS repositories, read from their signed
//!   manifests and verified, for `consistency: Fleet` AnalysisJobs;
//! - [`config`]: the cluster admin's configuration (platforms, CVMFS provider and
//!   servers, GPU runtime, users and where root is allowed), reloaded when its file
//!   changes;
//! - [`crd`]: waiting for the AnalysisJob CRD to be served before the watches start;
//! - [`cli`]: flags and environment of the binary;
//! - [`process`]: the process around the loop (logging, admin server, CRD, leader, stop).

pub mod build;
pub mod cli;
pub mod cmssw;
pub mod config;
pub mod controller;
pub mod crd;
pub mod cvmfs;
pub mod gpu;
pub mod inputs;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod pacing;
pub mod process;
pub mod revision;
pub mod room;
pub mod security;
pub mod selection;
pub mod status;
