//! `hepbatch-csi`: the CVMFS CSI node plugin (work in progress).

fn main() {
    println!("hepbatch-csi {}", env!("CARGO_PKG_VERSION"));
}
