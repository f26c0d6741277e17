//! Binaries of this workspace that tests start as processes (the operator, for suites
//! outside its own crate, which get no `CARGO_BIN_EXE_` for it).

use std::path::{Path, PathBuf};

/// The operator binary, built next to the calling test binary (`cargo test --workspace`
/// builds it for the operator's own tests); `HEPBATCH_OPERATOR_BIN` overrides.
pub fn operator_binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("HEPBATCH_OPERATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    let binary = profile_dir.join("hepbatch-operator");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: build it first (cargo build -p hepbatch-operator) or set \
             HEPBATCH_OPERATOR_BIN",
            binary.display()
        ))
    }
}
