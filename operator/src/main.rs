//! `hepbatch-operator`: turns AnalysisJobs into Indexed Jobs (work in progress).

fn main() {
    println!("hepbatch-operator {}", env!("CARGO_PKG_VERSION"));
}
