//! `kubectl hepbatch`: the physicist's daily commands for AnalysisJobs.
//!
//! Design: every decision and every piece of output is a pure function of API objects
//! (an [`hepbatch_crds::AnalysisJob`] and its pods), unit-tested without a cluster; the
//! thin [`cluster`]-facing layer in `main.rs` only fetches those objects and prints.

pub mod attempt;
pub mod cluster;
pub mod logs;
pub mod progress;
pub mod report;
pub mod resubmit;
pub mod status;
pub mod submit;
