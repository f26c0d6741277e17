//! File-system fixtures standing in for CVMFS content in tests.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Builds at `root` a tree standing in for `/cvmfs/cms.cern.ch`: a `cmsset_default.sh` that
/// puts a stub `scram` on the `PATH` (and, like the real one, reads an unset variable and
/// ends with a failing command), and the stub itself. `scram project CMSSW <release>`
/// creates `<release>/src`; `scram runtime -sh` prints exports of `CMSSW_BASE`,
/// `CMSSW_VERSION` and `CMSSW_RUNTIME=ok`; both insist on `SCRAM_ARCH`. With
/// `scram_fails`, every scram call exits 3.
///
/// Paths inside the stubs are relative to the script's own location, so the tree works
/// wherever it is copied (e.g. onto a tmpfs at `/cvmfs/cms.cern.ch`).
pub fn cms_repository(root: &Path, scram_fails: bool) -> io::Result<()> {
    let bin = root.join("common");
    std::fs::create_dir_all(&bin)?;
    std::fs::write(
        root.join("cmsset_default.sh"),
        "here=$(cd \"$(dirname \"${BASH_SOURCE[0]}\")\" && pwd)\n\
         export CMS_PATH=$here\n\
         export PATH=$here/common:$PATH\n\
         : $SOME_UNSET_VARIABLE\n\
         false\n",
    )?;
    let failing = if scram_fails { "exit 3" } else { "" };
    let scram = bin.join("scram");
    std::fs::write(
        &scram,
        format!(
            "#!/bin/bash\nset -eu\n{failing}\n: \"$SCRAM_ARCH\"\ncase \"$1\" in\n  \
             project) mkdir -p \"$3/src\" ;;\n  \
             runtime) base=$(cd .. && pwd); echo \"export CMSSW_BASE=$base; export \
             CMSSW_VERSION=$(basename \"$base\"); export CMSSW_RUNTIME=ok\" ;;\n  \
             *) exit 2 ;;\nesac\n"
        ),
    )?;
    std::fs::set_permissions(&scram, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
