//! `kubectl-hepbatch`: the kubectl plugin binary.

fn main() {}
