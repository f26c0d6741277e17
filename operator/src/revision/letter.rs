//! The signed-letter framing CVMFS uses for its manifest and whitelist.
//!
//! A letter is text lines, a line `--`, the hash of the text as hex and a newline, then
//! the raw signature to the end of the file. The text is everything up to and including
//! the newline before `--` (the client's `SignatureManager::CutLetter`). [`parse`]
//! splits a document into those parts and checks the printed hash against the text, so
//! nothing the text says is read before it is known to be what was signed; which key
//! the signature must verify with differs between the two documents and is left to the
//! caller ([`super::verify`]).

use sha1::{Digest, Sha1};

/// Which signed document a letter is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    /// `.cvmfspublished`, signed with the repository's certificate.
    Manifest,
    /// `.cvmfswhitelist`, signed with the repository's master key.
    Whitelist,
}

impl std::fmt::Display for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Document::Manifest => "manifest",
            Document::Whitelist => "whitelist",
        })
    }
}

/// A letter whose printed hash matches its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter<'a> {
    /// The signed text, up to and including the newline before the `--` line.
    pub text: &'a [u8],
    /// The SHA-1 of the text as lower-case hex, as printed (the bytes the signature
    /// covers).
    pub hash: &'a str,
    /// The signature, to the end of the document.
    pub signature: &'a [u8],
}

/// Why a document is not a letter this operator can trust.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LetterError {
    /// No `--` line: the document is not signed (or is not a CVMFS document at all).
    #[error("the {0} is not signed (no \"--\" line); is the server URL right?")]
    Unsigned(Document),
    /// The hash line is missing or is not hex.
    #[error("the {0}'s hash line is malformed")]
    MalformedHash(Document),
    /// A hash algorithm other than SHA-1.
    #[error(
        "the {document} is hashed with {algorithm}, which this operator does not verify \
         (only SHA-1)"
    )]
    UnsupportedHash {
        /// The document.
        document: Document,
        /// The algorithm's suffix, e.g. `rmd160`.
        algorithm: String,
    },
    /// The text is not what was hashed.
    #[error("the {0}'s text does not match its hash (corrupted or altered on the way)")]
    HashMismatch(Document),
    /// Nothing after the hash line.
    #[error("the {0} has no signature after its hash")]
    NoSignature(Document),
}

/// Splits `bytes` into a letter and checks that the printed hash is the SHA-1 of the text.
pub fn parse(document: Document, bytes: &[u8]) -> Result<Letter<'_>, LetterError> {
    let separator = bytes
        .windows(4)
        .position(|window| window == b"\n--\n")
        .ok_or(LetterError::Unsigned(document))?;
    let text = &bytes[..=separator];
    let after = &bytes[separator + 4..];
    let end = after
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(LetterError::MalformedHash(document))?;
    let hash =
        std::str::from_utf8(&after[..end]).map_err(|_| LetterError::MalformedHash(document))?;
    let signature = &after[end + 1..];
    if let Some((_, algorithm)) = hash.split_once('-') {
        return Err(LetterError::UnsupportedHash {
            document,
            algorithm: algorithm.to_owned(),
        });
    }
    if !is_sha1_hex(hash) {
        return Err(LetterError::MalformedHash(document));
    }
    if !hash.eq_ignore_ascii_case(&hex(&Sha1::digest(text))) {
        return Err(LetterError::HashMismatch(document));
    }
    if signature.is_empty() {
        return Err(LetterError::NoSignature(document));
    }
    Ok(Letter {
        text,
        hash,
        signature,
    })
}

/// Whether `value` is 40 hex digits (a SHA-1 as CVMFS prints it).
pub fn is_sha1_hex(value: &str) -> bool {
    value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(text: &str, hash: &str, signature: &[u8]) -> Vec<u8> {
        let mut bytes = format!("{text}--\n{hash}\n").into_bytes();
        bytes.extend_from_slice(signature);
        bytes
    }

    #[test]
    fn a_letter_splits_into_text_hash_and_signature() {
        let text = "Cabc\nS3\n";
        let hash = hex(&Sha1::digest(text.as_bytes()));
        let bytes = letter(text, &hash, b"\x00\x01--\n\xff");
        let parsed = parse(Document::Manifest, &bytes).expect("a letter");
        assert_eq!(parsed.text, text.as_bytes());
        assert_eq!(parsed.hash, hash);
        // The signature is binary and may contain anything, a "--" line included.
        assert_eq!(parsed.signature, b"\x00\x01--\n\xff");
    }

    #[test]
    fn which_checks_fail() {
        let text = "Cabc\nS3\n";
        let hash = hex(&Sha1::digest(text.as_bytes()));
        let cases: Vec<(Vec<u8>, LetterError)> = vec![
            (
                b"Cabc\nS3\n".to_vec(),
                LetterError::Unsigned(Document::Manifest),
            ),
            (
                format!("{text}--\n{hash}").into_bytes(),
                LetterError::MalformedHash(Document::Manifest),
            ),
            (
                letter(text, "xyz", b"sig"),
                LetterError::MalformedHash(Document::Manifest),
            ),
            (
                letter(text, &format!("{hash}-rmd160"), b"sig"),
                LetterError::UnsupportedHash {
                    document: Document::Manifest,
                    algorithm: "rmd160".into(),
                },
            ),
            (
                letter("Cabd\nS3\n", &hash, b"sig"),
                LetterError::HashMismatch(Document::Manifest),
            ),
            (
                letter(text, &hash, b""),
                LetterError::NoSignature(Document::Manifest),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse(Document::Manifest, &bytes),
                Err(expected.clone()),
                "{expected}"
            );
        }
        assert!(
            LetterError::UnsupportedHash {
                document: Document::Whitelist,
                algorithm: "shake128".into()
            }
            .to_string()
            .contains("whitelist is hashed with shake128")
        );
    }
}
