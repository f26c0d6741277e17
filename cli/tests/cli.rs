//! The `kubectl hepbatch` commands against the testbed with a running operator.

fn main() {}
