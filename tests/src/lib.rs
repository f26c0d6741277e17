//! hepbatch's real-cluster testbed and the helpers its integration tests share.
//!
//! - [`testbed`]: starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//!   kwok (with fake CPU and GPU nodes) from the binaries built by `tests/testbed/build.sh`.
//! - [`harness`]: runs a suite of async tests against one shared testbed, each in a fresh
//!   namespace, with libtest-compatible output; prints component logs when a test fails.
//! - [`wait`]: `await_condition` with a timeout and a readable error, and polling.
//! - [`http`]: a bare GET of an admin endpoint and a metric sample out of its answer.
//! - [`ports`]: free loopback ports, never handed out twice.
//! - [`fixtures`]: file trees standing in for CVMFS content (a stub CMS repository).
//! - [`cvmfs`]: a real CVMFS stratum 0 with tagged revisions, served on 127.0.0.1.
//! - [`chart`]: the Helm chart's values for a testbed with real nodes, and installing it.
//! - [`reader`]: a shard reading `/cvmfs` in a loop, and the outages its log shows.

pub mod chart;
pub mod cvmfs;
pub mod fixtures;
pub mod harness;
pub mod http;
pub mod objects;
pub mod ports;
pub mod reader;
pub mod testbed;
pub mod wait;
pub mod workspace;
