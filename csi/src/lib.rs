//! The hepbatch CVMFS CSI plugin (`cvmfs.hepbatch.io`).
//!
//! Pods mount one CSI volume at `/cvmfs` and find each repository at `/cvmfs/<repo>`.
//! The design in one paragraph: repositories are mounted by a [`backend`] under a shared
//! mount root on the host; a published target is a small read-only tmpfs *holder* that never
//! dies, with each repository bound read-only *beneath* it ([`topology`]); the kubelet binds
//! the target into containers `rslave`, so when the [`watchdog`] replaces a broken repository
//! mount and its binds, running containers see the repository again without any republish.
//! All state (what is mounted, published, referenced or broken) is read back from the
//! kernel's mount table ([`mount::table`]).
//!
//! StorageClass provisioning is a thin [`controller`]: a provisioned volume is its validated
//! parameters ([`provision`]) captured into the volume context, recorded in a small
//! [`store`].
//!
//! On-demand volumes (every repository, mounted on first access) are autofs mounts that
//! the plugin serves itself ([`autofs`]).
//!
//! Modules: [`volume`] (typed volume attributes), [`node`], [`identity`] and
//! [`controller`] (CSI services), [`provision`] and [`store`] (provisioning),
//! [`registration`] (kubelet plugin registration), [`server`] (sockets and wiring),
//! [`metrics`], [`config`].

pub mod autofs;
pub mod backend;
pub mod config;
pub mod controller;
pub mod hash;
pub mod identity;
pub mod locks;
pub mod metrics;
pub mod mount;
pub mod node;
pub mod proto;
pub mod provision;
pub mod registration;
pub mod rpc;
pub mod server;
pub mod store;
pub mod topology;
pub mod volume;
pub mod watchdog;
