//! The fields of a repository manifest (`.cvmfspublished`) that name its current
//! revision, read from a letter whose hash was checked ([`super::letter`]).
//!
//! Each line of the text is a letter and a value (`manifest::Manifest::Load` of CVMFS).
//! Read here: `C` root catalog hash, `R` the MD5 of the root path, `S` revision, `T`
//! publish time in Unix seconds, `X` the certificate's hash, `N` the repository name.

use super::letter::{self, Letter};

/// `R` of a manifest describing a repository's root: the MD5 of the empty path.
pub const ROOT_PATH_HASH: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// What a manifest says, before its signature is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `C`: the root catalog hash, hex with an optional `-rmd160` or `-shake128`.
    pub root_hash: String,
    /// `S`: the revision number.
    pub revision: u64,
    /// `T`: publish time, Unix seconds.
    pub published: i64,
    /// `X`: the SHA-1 of the compressed certificate, hex.
    pub certificate: String,
}

/// Why a manifest cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A field is missing or malformed.
    #[error("the manifest has no valid {field} line ({what})")]
    Field {
        /// The field's letter.
        field: char,
        /// What it holds.
        what: &'static str,
    },
    /// The manifest is for another repository.
    #[error("the manifest is of repository {found:?}")]
    NameMismatch {
        /// The `N` it names.
        found: String,
    },
    /// The manifest describes a nested catalog, not the repository.
    #[error("the manifest does not describe the repository's root (R is {found})")]
    NotRoot {
        /// The `R` it gives.
        found: String,
    },
    /// The certificate is named by another hash than SHA-1.
    #[error("the manifest's certificate is hashed with {0}, which this operator does not verify")]
    UnsupportedCertificateHash(String),
}

impl Manifest {
    /// Reads the fields of `letter`, the manifest of `repository`.
    pub fn read(repository: &str, letter: &Letter<'_>) -> Result<Manifest, ManifestError> {
        let text = String::from_utf8_lossy(letter.text);
        let field = |key: char| {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::to_owned)
        };
        let missing = |field: char, what: &'static str| ManifestError::Field { field, what };
        // A manifest of another repository served under this one's URL (a wrong server
        // URL, a mix-up on the way) would pin the shards to software they never asked for.
        let name = field('N').ok_or(missing('N', "repository name"))?;
        if name != repository {
            return Err(ManifestError::NameMismatch { found: name });
        }
        // A manifest of a nested catalog names a subtree's revision, not the repository's.
        let root_path = field('R').ok_or(missing('R', "root path hash"))?;
        if root_path != ROOT_PATH_HASH {
            return Err(ManifestError::NotRoot { found: root_path });
        }
        let root_hash = field('C')
            .filter(|value| is_content_hash(value))
            .ok_or(missing('C', "root catalog hash"))?;
        let revision = field('S')
            .and_then(|value| value.parse().ok())
            .ok_or(missing('S', "revision"))?;
        let published = field('T')
            .and_then(|value| value.parse().ok())
            .ok_or(missing('T', "publish time"))?;
        let certificate = field('X')
            .filter(|value| is_content_hash(value))
            .ok_or(missing('X', "certificate hash"))?;
        if let Some((_, algorithm)) = certificate.split_once('-') {
            return Err(ManifestError::UnsupportedCertificateHash(
                algorithm.to_owned(),
            ));
        }
        Ok(Manifest {
            root_hash,
            revision,
            published,
            certificate,
        })
    }

    /// Path of the certificate below the repository's URL: `data/<2 hex>/<rest>X`.
    pub fn certificate_path(&self) -> String {
        let (first, rest) = self.certificate.split_at(2);
        format!("data/{first}/{rest}X")
    }
}

/// Whether `value` is a content hash as CVMFS prints it: 40 lower-case hex digits,
/// optionally `-rmd160` or `-shake128`.
fn is_content_hash(value: &str) -> bool {
    let (hex, suffix) = value.split_once('-').unwrap_or((value, ""));
    letter::is_sha1_hex(hex)
        && hex.bytes().all(|b| !b.is_ascii_uppercase())
        && matches!(suffix, "" | "rmd160" | "shake128")
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";
    const X: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn standard() -> Vec<String> {
        vec![
            format!("C{C}"),
            "B4096".into(),
            format!("R{ROOT_PATH_HASH}"),
            "D240".into(),
            "S7".into(),
            "Gno".into(),
            "Ano".into(),
            "Ncms.cern.ch".into(),
            format!("X{X}"),
            "T1764576000".into(),
        ]
    }

    fn read(lines: &[String]) -> Result<Manifest, ManifestError> {
        let text = text(lines);
        let letter = Letter {
            text: text.as_bytes(),
            hash: "",
            signature: b"",
        };
        Manifest::read("cms.cern.ch", &letter)
    }

    #[test]
    fn the_revision_fields_are_read() {
        let manifest = read(&standard()).expect("valid");
        assert_eq!(
            manifest,
            Manifest {
                root_hash: C.into(),
                revision: 7,
                published: 1_764_576_000,
                certificate: X.into(),
            }
        );
        assert_eq!(
            manifest.certificate_path(),
            "data/89/abcdef0123456789abcdef0123456789abcdefX"
        );
    }

    #[test]
    fn which_checks_fail() {
        let with = |letter: char, value: Option<&str>| {
            let mut lines: Vec<String> = standard()
                .into_iter()
                .filter(|l| !l.starts_with(letter))
                .collect();
            if let Some(value) = value {
                lines.push(format!("{letter}{value}"));
            }
            read(&lines)
        };
        assert_eq!(
            with('N', Some("atlas.cern.ch")),
            Err(ManifestError::NameMismatch {
                found: "atlas.cern.ch".into()
            })
        );
        assert!(matches!(
            with('R', Some("00000000000000000000000000000000")),
            Err(ManifestError::NotRoot { .. })
        ));
        for field in ['C', 'S', 'T', 'X', 'N', 'R'] {
            assert!(
                matches!(with(field, None), Err(ManifestError::Field { field: f, .. }) if f == field),
                "{field}"
            );
        }
        assert!(matches!(
            with('C', Some("not-a-hash")),
            Err(ManifestError::Field { field: 'C', .. })
        ));
        assert!(matches!(
            with('S', Some("seven")),
            Err(ManifestError::Field { field: 'S', .. })
        ));
        assert_eq!(
            with('X', Some(&format!("{X}-rmd160"))),
            Err(ManifestError::UnsupportedCertificateHash("rmd160".into()))
        );
        // A root catalog hashed with another algorithm is a revision like any other: the
        // CSI plugin pins it with its suffix.
        assert_eq!(
            with('C', Some(&format!("{C}-shake128")))
                .expect("valid")
                .root_hash,
            format!("{C}-shake128")
        );
    }
}
