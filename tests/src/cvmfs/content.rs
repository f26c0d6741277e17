//! What the test repositories hold: named like production repositories, each a list of
//! revisions (a file tree, optionally tagged) published in order.

use std::path::Path;

/// One file of a revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct File {
    /// Path relative to the repository root.
    pub path: String,
    /// Content.
    pub content: String,
    /// Whether it is executable.
    pub executable: bool,
}

impl File {
    /// A plain file.
    pub fn new(path: &str, content: &str) -> Self {
        Self {
            path: path.to_owned(),
            content: content.to_owned(),
            executable: false,
        }
    }

    /// An executable file.
    pub fn executable(path: &str, content: &str) -> Self {
        Self {
            executable: true,
            ..Self::new(path, content)
        }
    }
}

/// One published revision: the whole tree (earlier files not listed are removed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision {
    /// The named tag it gets, if any.
    pub tag: Option<String>,
    /// Its files.
    pub files: Vec<File>,
}

impl Revision {
    /// A revision with `files`, tagged `tag`.
    pub fn tagged(tag: &str, files: Vec<File>) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            files,
        }
    }

    /// A revision without a tag of its own.
    pub fn untagged(files: Vec<File>) -> Self {
        Self { tag: None, files }
    }

    /// Writes the tree beneath `root`.
    pub fn write(&self, root: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for file in &self.files {
            let path = root.join(&file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &file.content)?;
            let mode = if file.executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}

/// A repository and its revisions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    /// Its fully qualified name, e.g. `cms.cern.ch`.
    pub name: String,
    /// Revisions, published in this order; the last one is the latest.
    pub revisions: Vec<Revision>,
}

/// The `cmsset_default.sh` and `scram` stubs of a CMS software area, good enough for the
/// CMSSW bootstrap the operator generates: `cmsset_default.sh` puts `scram` on the PATH
/// (and, like the real one, reads an unset variable and ends with a failing command);
/// `scram project CMSSW <release>` creates `<release>/src`; `scram runtime -sh` prints
/// exports of `CMSSW_BASE`, `CMSSW_VERSION` and `CMSSW_RUNTIME=ok`; both insist on
/// `SCRAM_ARCH`. With `scram_fails`, every scram call exits 3.
pub fn cms_software(scram_fails: bool) -> Vec<File> {
    let failing = if scram_fails { "exit 3" } else { "" };
    vec![
        File::new(
            "cmsset_default.sh",
            "here=$(cd \"$(dirname \"${BASH_SOURCE[0]}\")\" && pwd)\n\
             export CMS_PATH=$here\n\
             export PATH=$here/common:$PATH\n\
             : $SOME_UNSET_VARIABLE\n\
             false\n",
        ),
        File::executable(
            "common/scram",
            &format!(
                "#!/bin/bash\nset -eu\n{failing}\n: \"$SCRAM_ARCH\"\ncase \"$1\" in\n  \
                 project) mkdir -p \"$3/src\" ;;\n  \
                 runtime) base=$(cd .. && pwd); echo \"export CMSSW_BASE=$base; export \
                 CMSSW_VERSION=$(basename \"$base\"); export CMSSW_RUNTIME=ok\" ;;\n  \
                 *) exit 2 ;;\nesac\n"
            ),
        ),
    ]
}

/// The repositories most tests use:
/// - `cms.cern.ch`: tag `v1` ("cms v1"), tag `v2` ("cms v2"), then the latest revision
///   ("cms latest", the CMSSW stubs and `bin/cmsRun`);
/// - `sft.cern.ch`, `atlas.cern.ch`: one revision ("sft latest", "atlas latest");
/// - `unpacked.cern.ch`: a small unpacked image tree.
pub fn standard() -> Vec<Repository> {
    let mut cms_latest = vec![
        File::new("version", "cms latest\n"),
        File::executable("bin/cmsRun", "run\n"),
    ];
    cms_latest.extend(cms_software(false));
    vec![
        Repository {
            name: "cms.cern.ch".into(),
            revisions: vec![
                Revision::tagged("v1", vec![File::new("version", "cms v1\n")]),
                Revision::tagged("v2", vec![File::new("version", "cms v2\n")]),
                Revision::untagged(cms_latest),
            ],
        },
        Repository {
            name: "sft.cern.ch".into(),
            revisions: vec![Revision::untagged(vec![File::new(
                "version",
                "sft latest\n",
            )])],
        },
        Repository {
            name: "atlas.cern.ch".into(),
            revisions: vec![Revision::untagged(vec![File::new(
                "version",
                "atlas latest\n",
            )])],
        },
        Repository {
            name: "unpacked.cern.ch".into(),
            revisions: vec![Revision::untagged(vec![
                File::new("version", "unpacked latest\n"),
                File::new(
                    "registry.hub.docker.com/library/debian:bookworm-slim/etc/os-release",
                    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
                ),
                File::executable(
                    "registry.hub.docker.com/library/debian:bookworm-slim/usr/bin/hello",
                    "#!/bin/sh\necho hello from an unpacked image\n",
                ),
            ])],
        },
    ]
}
