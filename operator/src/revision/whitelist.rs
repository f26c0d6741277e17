//! The repository whitelist (`.cvmfswhitelist`): which certificates may sign the
//! repository's manifest, until when; read from a letter whose hash was checked
//! ([`super::letter`]), as the client's `whitelist::Whitelist::ParseWhitelist` does.
//!
//! Lines: the creation time `YYYYMMDDHHMMSS`, `E` and the expiry in the same form (UTC;
//! the whitelist is invalid from the start of that hour), `N` and the repository name,
//! optionally `Vpkcs7` and `Wcachain`, then one certificate fingerprint a line
//! (`AB:CD:…`, the SHA-1 of the certificate's DER, possibly followed by ` # comment`).

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;

use super::letter::{self, Letter};

/// What a whitelist says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whitelist {
    /// The start of the hour from which the whitelist is no longer valid.
    pub expires: Timestamp,
    /// SHA-1 fingerprints of the certificates allowed to sign, lower-case hex.
    pub fingerprints: Vec<String>,
}

/// Why a whitelist cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WhitelistError {
    /// A line is missing or malformed.
    #[error("the whitelist is malformed ({0})")]
    Malformed(&'static str),
    /// The whitelist is for another repository.
    #[error("the whitelist is of repository {found:?}")]
    NameMismatch {
        /// The `N` it names.
        found: String,
    },
    /// The whitelist has expired.
    #[error(
        "the whitelist expired at {expires} (the repository's maintainers have not re-signed \
         it, or the server serves an old copy)"
    )]
    Expired {
        /// When it expired.
        expires: Timestamp,
    },
    /// The whitelist asks for a verification this operator does not do.
    #[error("the whitelist asks for {0}, which this operator does not verify")]
    Unsupported(&'static str),
}

impl Whitelist {
    /// Reads the whitelist `letter` of `repository` and checks that it is valid at `now`.
    pub fn read(
        repository: &str,
        letter: &Letter<'_>,
        now: Timestamp,
    ) -> Result<Whitelist, WhitelistError> {
        let text = String::from_utf8_lossy(letter.text);
        let mut lines = text.lines();
        let created = lines
            .next()
            .ok_or(WhitelistError::Malformed("no creation time"))?;
        if created.len() != 14 || !created.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WhitelistError::Malformed(
                "the creation time is not YYYYMMDDHHMMSS",
            ));
        }
        let expires = lines
            .next()
            .and_then(|line| line.strip_prefix('E'))
            .and_then(expiry)
            .ok_or(WhitelistError::Malformed(
                "the expiry is not EYYYYMMDDHHMMSS",
            ))?;
        // An expired whitelist is how CVMFS bounds the life of a signature: a server or
        // proxy replaying an old manifest cannot do so for longer than the whitelist lives.
        if now >= expires {
            return Err(WhitelistError::Expired { expires });
        }
        // A whitelist of another repository would let its certificates sign this one.
        let name = lines
            .next()
            .and_then(|line| line.strip_prefix('N'))
            .ok_or(WhitelistError::Malformed("no repository name"))?;
        if name != repository {
            return Err(WhitelistError::NameMismatch {
                found: name.to_owned(),
            });
        }
        let mut fingerprints = Vec::new();
        for line in lines {
            // These ask for a chain of trust beyond the master key (a PKCS#7 signature,
            // a CA chain of the certificate) that is not checked here; accepting the
            // whitelist without it would trust less than the repository asks for.
            match line {
                "Vpkcs7" => return Err(WhitelistError::Unsupported("a PKCS#7 signature")),
                "Wcachain" => {
                    return Err(WhitelistError::Unsupported(
                        "a CA chain check of the certificate",
                    ));
                }
                _ => {}
            }
            if let Some(fingerprint) = fingerprint(line) {
                fingerprints.push(fingerprint);
            }
        }
        Ok(Whitelist {
            expires,
            fingerprints,
        })
    }

    /// Whether the certificate with SHA-1 fingerprint `fingerprint` (lower-case hex) is
    /// listed.
    pub fn lists(&self, fingerprint: &str) -> bool {
        self.fingerprints.iter().any(|f| f == fingerprint)
    }
}

/// The start of the hour of a `YYYYMMDDHHMMSS` expiry, in UTC (minutes and seconds are
/// ignored, as the client ignores them).
fn expiry(value: &str) -> Option<Timestamp> {
    if value.len() != 14 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| value.get(range)?.parse::<i16>().ok();
    let year = number(0..4)?;
    let month = i8::try_from(number(4..6)?).ok()?;
    let day = i8::try_from(number(6..8)?).ok()?;
    let hour = i8::try_from(number(8..10)?).ok()?;
    let civil = DateTime::new(year, month, day, hour, 0, 0, 0).ok()?;
    Some(civil.to_zoned(TimeZone::UTC).ok()?.timestamp())
}

/// The SHA-1 fingerprint of a whitelist line as lower-case hex; `None` for lines that are
/// not one (other algorithms included).
fn fingerprint(line: &str) -> Option<String> {
    let value = line
        .split([' ', '\t', '#'])
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase();
    letter::is_sha1_hex(&value).then_some(value)
}

/// A SHA-1 fingerprint as CVMFS and OpenSSL print it: upper-case hex pairs joined by `:`.
pub fn format_fingerprint(sha1: &[u8]) -> String {
    sha1.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT: &str = "5A:B3:11:47:A9:0C:0E:61:42:9C:92:55:7C:A7:E9:80:EB:DA:AD:9D";

    fn read(text: &str, now: &str) -> Result<Whitelist, WhitelistError> {
        let letter = Letter {
            text: text.as_bytes(),
            hash: "",
            signature: b"",
        };
        Whitelist::read("cms.cern.ch", &letter, now.parse().expect("a time"))
    }

    fn text(expiry: &str, name: &str, extra: &str) -> String {
        format!("20260101120000\nE{expiry}\nN{name}\n{extra}{FINGERPRINT} # cms release managers\n")
    }

    #[test]
    fn fingerprints_and_expiry_are_read() {
        let whitelist = read(
            &text("20260131120000", "cms.cern.ch", ""),
            "2026-01-15T00:00:00Z",
        )
        .expect("valid");
        assert_eq!(
            whitelist.expires,
            "2026-01-31T12:00:00Z".parse::<Timestamp>().expect("time")
        );
        assert_eq!(
            whitelist.fingerprints,
            ["5ab31147a90c0e61429c92557ca7e980ebdaad9d"]
        );
        assert!(whitelist.lists("5ab31147a90c0e61429c92557ca7e980ebdaad9d"));
        assert!(!whitelist.lists("0000000000000000000000000000000000000000"));
    }

    #[test]
    fn fingerprints_print_as_openssl_does() {
        let bytes: Vec<u8> = (0..20).map(|i| i * 13).collect();
        let printed = format_fingerprint(&bytes);
        assert_eq!(
            printed,
            "00:0D:1A:27:34:41:4E:5B:68:75:82:8F:9C:A9:B6:C3:D0:DD:EA:F7"
        );
        assert_eq!(fingerprint(&printed), Some(letter::hex(&bytes)));
        assert_eq!(fingerprint("-- not a fingerprint"), None);
    }

    #[test]
    fn a_whitelist_is_invalid_from_the_start_of_its_expiry_hour() {
        let whitelist = text("20260131125959", "cms.cern.ch", "");
        assert!(read(&whitelist, "2026-01-31T11:59:59Z").is_ok());
        assert_eq!(
            read(&whitelist, "2026-01-31T12:00:00Z"),
            Err(WhitelistError::Expired {
                expires: "2026-01-31T12:00:00Z".parse().expect("time")
            })
        );
    }

    #[test]
    fn which_checks_fail() {
        let now = "2026-01-15T00:00:00Z";
        assert_eq!(
            read(&text("20260131120000", "atlas.cern.ch", ""), now),
            Err(WhitelistError::NameMismatch {
                found: "atlas.cern.ch".into()
            })
        );
        assert_eq!(
            read(&text("20260131120000", "cms.cern.ch", "Vpkcs7\n"), now),
            Err(WhitelistError::Unsupported("a PKCS#7 signature"))
        );
        assert!(matches!(
            read(&text("20260131120000", "cms.cern.ch", "Wcachain\n"), now),
            Err(WhitelistError::Unsupported(_))
        ));
        assert!(matches!(
            read(&text("2026013112", "cms.cern.ch", ""), now),
            Err(WhitelistError::Malformed(_))
        ));
        assert!(matches!(
            read(&text("20261331120000", "cms.cern.ch", ""), now),
            Err(WhitelistError::Malformed(_))
        ));
        assert!(matches!(
            read("2026\n", now),
            Err(WhitelistError::Malformed(_))
        ));
    }
}
