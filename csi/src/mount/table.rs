//! A snapshot of this mount namespace's mount table, parsed from `/proc/self/mountinfo`.
//!
//! Every publish, unpublish and lookup reads the table, so the parser is lean: one read
//! of the file, one pass over its lines, only the fields the plugin reasons about and
//! four strings per mount (docs/benchmarks.md has the measurement that made it ours).
//! The format is proc(5)'s: `id parent major:minor root mount-point options
//! [optional fields] - fs-type source super-options`, with space, tab, newline and
//! backslash in paths escaped as `\ooo`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::coalesce::Coalesced;

/// Failure to read the mount table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Read(#[from] std::io::Error),
    /// A line does not have the shape proc(5) gives it.
    #[error("cannot parse /proc/self/mountinfo line {line}: {text:?}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// The start of the line.
        text: String,
    },
}

/// One mount, with the fields the plugin reasons about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Kernel mount id.
    pub id: i32,
    /// Mount id of the parent mount.
    pub parent: i32,
    /// `major:minor` of the filesystem: equal for a mount and every bind of it.
    pub device: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `tmpfs` or `fuse.squashfuse`.
    pub fs_type: String,
    /// Mount source as given to mount(2).
    pub source: String,
    /// Peer group id if the mount is shared.
    pub shared: Option<u32>,
    /// For autofs: the daemon's pipe as the kernel shows it (`fd=`); -1 once the mount is
    /// catatonic (its daemon is gone).
    pub autofs_pipe: Option<i64>,
}

/// All mounts of this mount namespace, in mountinfo order (parents before children).
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    /// The current mount table: a read that started after this call, shared with the
    /// callers that asked at the same time ([`super::coalesce`]).
    pub fn read() -> Result<Arc<Self>, TableError> {
        static SHARED: Coalesced<MountTable> = Coalesced::new();
        SHARED.get(|| Self::parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
    }

    /// Parses the text of a mountinfo file.
    pub fn parse(text: &str) -> Result<Self, TableError> {
        let mounts = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.is_empty())
            .map(|(number, line)| {
                parse_line(line).ok_or_else(|| TableError::Malformed {
                    line: number + 1,
                    text: line.chars().take(120).collect(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { mounts })
    }

    /// Every mount.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The topmost mount at `path`, if `path` is a mount point.
    pub fn at(&self, path: &Path) -> Option<&Mount> {
        self.mounts.iter().rev().find(|m| m.mount_point == path)
    }

    /// The mounts directly beneath mount `id`.
    pub fn children(&self, id: i32) -> impl Iterator<Item = &Mount> {
        self.mounts.iter().filter(move |m| m.parent == id)
    }

    /// Mounts whose mount point lies strictly beneath `dir`.
    pub fn beneath<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = &'a Mount> {
        self.mounts
            .iter()
            .filter(move |m| m.mount_point != dir && m.mount_point.starts_with(dir))
    }

    /// Mounts of the filesystem `device` (a mount and all its binds).
    pub fn of_device<'a>(&'a self, device: &'a str) -> impl Iterator<Item = &'a Mount> {
        self.mounts.iter().filter(move |m| m.device == device)
    }

    /// Number of mounts (the baseline the tests compare against).
    pub fn len(&self) -> usize {
        self.mounts.len()
    }

    /// Whether the table is empty (never, in a live namespace).
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }
}

/// One line of mountinfo, or `None` if it lacks a field.
fn parse_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let device = fields.next()?.to_owned();
    let _root = fields.next()?;
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let _options = fields.next()?;
    let mut shared = None;
    for field in fields.by_ref() {
        if field == "-" {
            break;
        }
        if let Some(group) = field.strip_prefix("shared:") {
            shared = group.parse().ok();
        }
    }
    let fs_type = fields.next()?.to_owned();
    let source = unescape(fields.next()?);
    let super_options = fields.next().unwrap_or_default();
    let autofs_pipe = (fs_type == "autofs")
        .then(|| {
            super_options
                .split(',')
                .find_map(|option| option.strip_prefix("fd="))
                .and_then(|fd| fd.parse().ok())
        })
        .flatten();
    Some(Mount {
        id,
        parent,
        device,
        mount_point,
        fs_type,
        source,
        shared,
        autofs_pipe,
    })
}

/// Undoes the kernel's `\ooo` escapes of a path or source.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .map(|d| (d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_root_mount() {
        let table = MountTable::read().unwrap();
        assert!(table.at(Path::new("/")).is_some());
        assert!(!table.is_empty());
    }

    #[test]
    fn parses_propagation_escapes_and_autofs_pipes() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:31 / /var/lib/with\\040space rw master:1 shared:7 - tmpfs hepbatch-cvmfs:ab:cd ro
36 22 0:32 / /cvmfs rw,relatime - autofs hepbatch-cvmfs:ef:01 rw,fd=7,pgrp=1,timeout=0
37 22 0:33 / /gone rw - autofs x rw,fd=-1,pgrp=1
";
        let table = MountTable::parse(text).unwrap();
        assert_eq!(table.len(), 4);
        let spaced = table.at(Path::new("/var/lib/with space")).unwrap();
        assert_eq!(
            (spaced.id, spaced.parent, spaced.device.as_str()),
            (35, 22, "0:31")
        );
        assert_eq!(spaced.shared, Some(7));
        assert_eq!(spaced.source, "hepbatch-cvmfs:ab:cd");
        assert_eq!(spaced.autofs_pipe, None);
        assert_eq!(table.at(Path::new("/")).unwrap().shared, Some(1));
        assert_eq!(table.at(Path::new("/cvmfs")).unwrap().autofs_pipe, Some(7));
        assert_eq!(table.at(Path::new("/gone")).unwrap().autofs_pipe, Some(-1));
    }

    #[test]
    fn agrees_with_procfs_on_this_machine() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let ours = MountTable::parse(&text).unwrap();
        let reference: procfs::process::MountInfos =
            procfs::FromBufRead::from_buf_read(text.as_bytes()).unwrap();
        assert_eq!(ours.len(), reference.0.len());
        for (mine, theirs) in ours.mounts().iter().zip(reference.0) {
            assert_eq!(mine.id, theirs.mnt_id);
            assert_eq!(mine.parent, theirs.pid);
            assert_eq!(mine.device, theirs.majmin);
            assert_eq!(mine.mount_point, theirs.mount_point);
            assert_eq!(mine.fs_type, theirs.fs_type);
            assert_eq!(mine.source, theirs.mount_source.unwrap_or_default());
            let shared = theirs.opt_fields.into_iter().find_map(|f| match f {
                procfs::process::MountOptFields::Shared(id) => Some(id),
                _ => None,
            });
            assert_eq!(mine.shared, shared);
        }
    }

    #[test]
    fn refuses_a_truncated_line() {
        let error = MountTable::parse("22 1 8:1 / / rw shared:1\n").unwrap_err();
        assert!(
            matches!(error, TableError::Malformed { line: 1, .. }),
            "{error}"
        );
        assert_eq!(unescape("a\\134b\\9"), "a\\b\\9");
    }
}
