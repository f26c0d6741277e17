//! The chain of trust from a configured master key to a repository's current revision,
//! checked as the CVMFS client checks it (`manifest_fetch.cc`), without a client.
//!
//! ```text
//! master public key (operator configuration, <fqrn>.pub)
//!   └─ signs (RSA PKCS#1 v1.5, no DigestInfo) the hash of ─ .cvmfswhitelist
//!        lists the SHA-1 fingerprints of certificates, expires
//!        └─ lists ─ certificate data/<X>X (zlib PEM X.509; its SHA-1 is X)
//!             └─ signs (RSA PKCS#1 v1.5 with SHA-1) the hash of ─ .cvmfspublished
//!                  names C (root hash), S (revision), T (published), N, R, X
//! ```
//!
//! Pure: the caller downloads the three documents ([`super::fetch`]) and passes the time.
//! Each check and why it exists:
//! - letter hash ([`super::letter`]): the signature covers the hash, so the text must be
//!   what was hashed, or an altered text would ride on a valid signature;
//! - `N`, `R` ([`super::manifest`]): a manifest of another repository or of a nested
//!   catalog is genuine but answers another question;
//! - certificate hash: `X` names the certificate by content, so a server cannot swap in
//!   a certificate of its own;
//! - manifest signature: only the certificate's private key could have made it;
//! - whitelist signature: the master key (which the admin trusts) vouches for the list of
//!   certificates, which is what ties the certificate to the repository;
//! - whitelist expiry and `N` ([`super::whitelist`]): signatures do not live for ever, and
//!   a list for another repository vouches for nothing here;
//! - fingerprint listed: the certificate that signed the manifest is one the master key
//!   vouched for.

use std::io::Read;

use der::{Decode, Encode};
use hepbatch_crds::CvmfsRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, PublicKey as RsaPublicKey};
use sha1::{Digest, Sha1};
use x509_cert::Certificate;
use x509_cert::der;

use super::letter::{self, Document, LetterError};
use super::manifest::{Manifest, ManifestError};
use super::whitelist::{self, Whitelist, WhitelistError};

/// Largest certificate, once decompressed, that is read (real ones are about 1 KiB).
pub const MAX_CERTIFICATE_BYTES: u64 = 64 * 1024;

/// A repository's master public key, with the name it was configured under.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterKey {
    /// The file name, e.g. `cms.cern.ch.pub`.
    pub name: String,
    /// The key.
    pub key: RsaPublicKey,
}

impl MasterKey {
    /// Reads a PEM `PUBLIC KEY` (the `<fqrn>.pub` files CVMFS distributes).
    pub fn from_pem(name: &str, pem: &str) -> Result<MasterKey, KeyError> {
        RsaPublicKey::from_public_key_pem(pem.trim())
            .map(|key| MasterKey {
                name: name.to_owned(),
                key,
            })
            .map_err(|source| KeyError {
                name: name.to_owned(),
                source,
            })
    }
}

/// A configured master key that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{name} is not a PEM RSA PUBLIC KEY: {source}")]
pub struct KeyError {
    /// The key's file name.
    pub name: String,
    /// What the decoder said.
    #[source]
    pub source: rsa::pkcs8::spki::Error,
}

/// A manifest whose letter hash and fields were checked, waiting for its signature to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    /// Its fields.
    pub manifest: Manifest,
    /// The printed hash the signature covers.
    hash: String,
    /// The signature.
    signature: Vec<u8>,
}

/// Why a repository's revision cannot be trusted, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The manifest or whitelist is not a valid signed letter.
    #[error(transparent)]
    Letter(#[from] LetterError),
    /// The manifest's fields are wrong.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The whitelist's fields are wrong or it expired.
    #[error(transparent)]
    Whitelist(#[from] WhitelistError),
    /// The certificate is not the one the manifest names.
    #[error("the certificate downloaded does not have the hash {expected} the manifest names")]
    CertificateHash {
        /// `X` of the manifest.
        expected: String,
    },
    /// The certificate cannot be read.
    #[error("the repository's certificate cannot be read ({0})")]
    CertificateUnreadable(String),
    /// The manifest's signature is not the certificate's.
    #[error("the manifest's signature does not verify with the repository's certificate")]
    ManifestSignature,
    /// No configured master key verifies the whitelist.
    #[error("the whitelist's signature does not verify with {}", describe_keys(.keys))]
    WhitelistSignature {
        /// Names of the keys tried.
        keys: Vec<String>,
    },
    /// The certificate is not on the whitelist.
    #[error(
        "the certificate that signed the manifest (fingerprint {fingerprint}) is not on the \
         repository's whitelist"
    )]
    NotListed {
        /// Its fingerprint, `AB:CD:…`.
        fingerprint: String,
    },
}

fn describe_keys(keys: &[String]) -> String {
    match keys {
        [one] => format!("the configured key {one}"),
        many => format!("any of the configured keys {}", many.join(", ")),
    }
}

/// Checks the letter and the fields of the manifest `bytes` of `repository`.
pub fn read_manifest(repository: &str, bytes: &[u8]) -> Result<SignedManifest, VerifyError> {
    let letter = letter::parse(Document::Manifest, bytes)?;
    let manifest = Manifest::read(repository, &letter)?;
    Ok(SignedManifest {
        manifest,
        hash: letter.hash.to_owned(),
        signature: letter.signature.to_vec(),
    })
}

/// Verifies `signed` with the compressed `certificate` it names and the `whitelist`,
/// whose signature must verify with one of `keys`, at `now`; the revision it names.
pub fn verify(
    repository: &str,
    signed: &SignedManifest,
    certificate: &[u8],
    whitelist: &[u8],
    keys: &[MasterKey],
    now: Timestamp,
) -> Result<CvmfsRevision, VerifyError> {
    let expected = &signed.manifest.certificate;
    if !expected.eq_ignore_ascii_case(&letter::hex(&Sha1::digest(certificate))) {
        return Err(VerifyError::CertificateHash {
            expected: expected.clone(),
        });
    }
    let (certificate_key, fingerprint) = read_certificate(certificate)?;
    let hashed = Sha1::digest(signed.hash.as_bytes());
    certificate_key
        .verify(Pkcs1v15Sign::new::<Sha1>(), &hashed, &signed.signature)
        .map_err(|_| VerifyError::ManifestSignature)?;

    let whitelist_letter = letter::parse(Document::Whitelist, whitelist)?;
    let vouched = keys.iter().any(|master| {
        master
            .key
            .verify(
                Pkcs1v15Sign::new_unprefixed(),
                whitelist_letter.hash.as_bytes(),
                whitelist_letter.signature,
            )
            .is_ok()
    });
    if !vouched {
        return Err(VerifyError::WhitelistSignature {
            keys: keys.iter().map(|k| k.name.clone()).collect(),
        });
    }
    let listed = Whitelist::read(repository, &whitelist_letter, now)?;
    if !listed.lists(&letter::hex(&fingerprint)) {
        return Err(VerifyError::NotListed {
            fingerprint: whitelist::format_fingerprint(&fingerprint),
        });
    }
    let manifest = &signed.manifest;
    Ok(CvmfsRevision {
        root_hash: manifest.root_hash.clone(),
        revision: i64::try_from(manifest.revision).unwrap_or(i64::MAX),
        published: Time(Timestamp::from_second(manifest.published).unwrap_or(Timestamp::MIN)),
    })
}

/// The public key and the SHA-1 fingerprint (of the DER) of a zlib-compressed PEM
/// certificate.
fn read_certificate(compressed: &[u8]) -> Result<(RsaPublicKey, [u8; 20]), VerifyError> {
    let unreadable = |what: String| VerifyError::CertificateUnreadable(what);
    let mut pem = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_CERTIFICATE_BYTES)
        .read_to_end(&mut pem)
        .map_err(|error| unreadable(format!("not zlib-compressed: {error}")))?;
    let pem = String::from_utf8_lossy(&pem);
    // OpenSSL skips text before the PEM block; so do we.
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| unreadable("no PEM CERTIFICATE block".to_owned()))?;
    let (label, der) = der::pem::decode_vec(pem[start..].trim_end().as_bytes())
        .map_err(|error| unreadable(format!("bad PEM: {error}")))?;
    if label != "CERTIFICATE" {
        return Err(unreadable(format!("a PEM {label}, not a CERTIFICATE")));
    }
    let certificate =
        Certificate::from_der(&der).map_err(|error| unreadable(format!("bad X.509: {error}")))?;
    let key = certificate
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()
        .and_then(|spki| RsaPublicKey::from_public_key_der(&spki).ok())
        .ok_or_else(|| unreadable("its public key is not an RSA key".to_owned()))?;
    // The fingerprint is of the certificate as published (OpenSSL's i2d_X509 returns the
    // encoding it read), not of a re-encoding.
    Ok((key, Sha1::digest(&der).into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::str::FromStr;
    use std::time::Duration;

    use der::EncodePem;
    use rsa::PrivateKey as RsaPrivateKey;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::EncodePublicKey;
    use x509_cert::builder::{Builder, CertificateBuilder, profile};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    use super::*;

    /// A repository as a stratum 0 publishes it: master key, certificate, whitelist and
    /// manifest, signed as `cvmfs_server` signs them.
    pub(crate) struct Published {
        pub(crate) master: RsaPrivateKey,
        pub(crate) certificate_key: RsaPrivateKey,
        pub(crate) certificate: Vec<u8>,
        pub(crate) certificate_der: Vec<u8>,
    }

    pub(crate) fn key() -> RsaPrivateKey {
        RsaPrivateKey::new(&mut getrandom::SysRng, 1024).expect("a key")
    }

    /// Signs `text` as a letter: hash, then `sign(hash hex)`.
    fn letter(text: &str, sign: impl FnOnce(&str) -> Vec<u8>) -> Vec<u8> {
        let hash = letter::hex(&Sha1::digest(text.as_bytes()));
        let mut bytes = format!("{text}--\n{hash}\n").into_bytes();
        bytes.extend(sign(&hash));
        bytes
    }

    impl Published {
        pub(crate) fn new() -> Published {
            let master = key();
            let certificate_key = key();
            let spki = SubjectPublicKeyInfoOwned::from_key(&certificate_key.to_public_key())
                .expect("spki");
            let subject = Name::from_str("CN=cms.cern.ch CernVM-FS Release Managers,O=CERN,C=CH")
                .expect("name");
            let builder = CertificateBuilder::new(
                profile::cabf::Root::new(false, subject).expect("profile"),
                SerialNumber::from(1u32),
                Validity::from_now(Duration::from_secs(3600)).expect("validity"),
                spki,
            )
            .expect("builder");
            let signer = SigningKey::<Sha1>::new(certificate_key.clone());
            let certificate = builder
                .build::<_, rsa::pkcs1v15::Signature>(&signer)
                .expect("certificate");
            let certificate_der = certificate.to_der().expect("der");
            let pem = certificate.to_pem(der::pem::LineEnding::LF).expect("pem");
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(pem.as_bytes()).expect("compress");
            Published {
                master,
                certificate_key,
                certificate: encoder.finish().expect("compress"),
                certificate_der,
            }
        }

        pub(crate) fn certificate_hash(&self) -> String {
            letter::hex(&Sha1::digest(&self.certificate))
        }

        pub(crate) fn fingerprint(&self) -> String {
            whitelist::format_fingerprint(&Sha1::digest(&self.certificate_der))
        }

        /// The manifest text of revision `revision` of `name`.
        pub(crate) fn manifest_text(&self, name: &str, revision: u64) -> String {
            format!(
                "C0123456789abcdef0123456789abcdef0123456{revision}\nB4096\n\
                 R{root}\nD240\nS{revision}\nGno\nAno\nN{name}\nX{x}\n\
                 T1764576000\n",
                root = super::super::manifest::ROOT_PATH_HASH,
                x = self.certificate_hash(),
            )
        }

        pub(crate) fn sign_manifest(&self, text: &str) -> Vec<u8> {
            letter(text, |hash| {
                self.certificate_key
                    .sign(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(hash.as_bytes()))
                    .expect("sign")
            })
        }

        pub(crate) fn whitelist_text(&self, name: &str, expiry: &str) -> String {
            format!(
                "20251201000000\nE{expiry}\nN{name}\n{} # release managers\n",
                self.fingerprint()
            )
        }

        pub(crate) fn sign_whitelist(&self, text: &str) -> Vec<u8> {
            letter(text, |hash| {
                self.master
                    .sign(Pkcs1v15Sign::new_unprefixed(), hash.as_bytes())
                    .expect("sign")
            })
        }

        pub(crate) fn master_key(&self, name: &str) -> MasterKey {
            let pem = self
                .master
                .to_public_key()
                .to_public_key_pem(der::pem::LineEnding::LF)
                .expect("pem");
            MasterKey::from_pem(name, &pem).expect("a key")
        }
    }

    fn now() -> Timestamp {
        "2026-01-15T00:00:00Z".parse().expect("time")
    }

    #[test]
    fn a_genuine_manifest_gives_its_revision() {
        let published = Published::new();
        let manifest = published.sign_manifest(&published.manifest_text("cms.cern.ch", 7));
        let whitelist =
            published.sign_whitelist(&published.whitelist_text("cms.cern.ch", "20260201000000"));
        let signed = read_manifest("cms.cern.ch", &manifest).expect("readable");
        assert_eq!(
            signed.manifest.certificate_path(),
            format!(
                "data/{}/{}X",
                &published.certificate_hash()[..2],
                &published.certificate_hash()[2..]
            )
        );
        let revision = verify(
            "cms.cern.ch",
            &signed,
            &published.certificate,
            &whitelist,
            &[published.master_key("cms.cern.ch.pub")],
            now(),
        )
        .expect("verifies");
        assert_eq!(
            revision,
            CvmfsRevision {
                root_hash: "0123456789abcdef0123456789abcdef01234567".into(),
                revision: 7,
                published: Time("2025-12-01T08:00:00Z".parse().expect("time")),
            }
        );
    }

    #[test]
    fn which_checks_fail() {
        let published = Published::new();
        let other = Published::new();
        let good_text = published.manifest_text("cms.cern.ch", 7);
        let manifest = published.sign_manifest(&good_text);
        let whitelist_text = published.whitelist_text("cms.cern.ch", "20260201000000");
        let whitelist = published.sign_whitelist(&whitelist_text);
        let keys = [published.master_key("cms.cern.ch.pub")];
        let check = |manifest: &[u8], certificate: &[u8], whitelist: &[u8], keys: &[MasterKey]| {
            let signed = read_manifest("cms.cern.ch", manifest)?;
            verify("cms.cern.ch", &signed, certificate, whitelist, keys, now())
        };
        let cert = published.certificate.as_slice();

        // Text altered after signing.
        let mut altered = manifest.clone();
        altered[1] = if altered[1] == b'1' { b'2' } else { b'1' };
        assert_eq!(
            check(&altered, cert, &whitelist, &keys),
            Err(VerifyError::Letter(LetterError::HashMismatch(
                Document::Manifest
            )))
        );
        // Re-hashed but not re-signed: the signature no longer fits.
        let forged = {
            let text = good_text.replace("S7", "S8");
            let mut bytes = letter(&text, |_| Vec::new());
            let signature_start = manifest.len()
                - rsa::traits::PublicKeyParts::size(&published.certificate_key.to_public_key());
            bytes.extend_from_slice(&manifest[signature_start..]);
            bytes
        };
        assert_eq!(
            check(&forged, cert, &whitelist, &keys),
            Err(VerifyError::ManifestSignature)
        );
        // Signed by another certificate's key than the one named.
        assert_eq!(
            check(&other.sign_manifest(&good_text), cert, &whitelist, &keys),
            Err(VerifyError::ManifestSignature)
        );
        // Another certificate than the manifest names.
        assert!(matches!(
            check(&manifest, &other.certificate, &whitelist, &keys),
            Err(VerifyError::CertificateHash { .. })
        ));
        // Another repository's manifest.
        assert!(matches!(
            check(
                &published.sign_manifest(&published.manifest_text("atlas.cern.ch", 7)),
                cert,
                &whitelist,
                &keys
            ),
            Err(VerifyError::Manifest(ManifestError::NameMismatch { .. }))
        ));
        // A whitelist signed by another master key than the configured one.
        let wrong_key = [other.master_key("cms.cern.ch.pub")];
        let error = check(&manifest, cert, &whitelist, &wrong_key).expect_err("wrong key");
        assert_eq!(
            error,
            VerifyError::WhitelistSignature {
                keys: vec!["cms.cern.ch.pub".into()]
            }
        );
        assert_eq!(
            error.to_string(),
            "the whitelist's signature does not verify with the configured key cms.cern.ch.pub"
        );
        // Any of several keys may fit.
        let several = [
            other.master_key("cern-it1.cern.ch.pub"),
            published.master_key("cern-it4.cern.ch.pub"),
        ];
        assert!(check(&manifest, cert, &whitelist, &several).is_ok());
        let error = check(&manifest, cert, &whitelist, &several[..1]).expect_err("no fit");
        assert!(
            error.to_string().contains("cern-it1.cern.ch.pub"),
            "{error}"
        );
        // An expired whitelist.
        let expired =
            published.sign_whitelist(&published.whitelist_text("cms.cern.ch", "20260114000000"));
        assert!(matches!(
            check(&manifest, cert, &expired, &keys),
            Err(VerifyError::Whitelist(WhitelistError::Expired { .. }))
        ));
        // A whitelist of another repository.
        let foreign =
            published.sign_whitelist(&published.whitelist_text("atlas.cern.ch", "20260201000000"));
        assert!(matches!(
            check(&manifest, cert, &foreign, &keys),
            Err(VerifyError::Whitelist(WhitelistError::NameMismatch { .. }))
        ));
        // A whitelist that does not list the certificate.
        let unlisted =
            published.sign_whitelist(&other.whitelist_text("cms.cern.ch", "20260201000000"));
        let error = check(&manifest, cert, &unlisted, &keys).expect_err("not listed");
        assert_eq!(
            error,
            VerifyError::NotListed {
                fingerprint: published.fingerprint()
            }
        );
        // A whitelist altered after signing.
        let mut tampered = whitelist.clone();
        let position = whitelist_text.find('N').expect("N line") + 1;
        tampered[position] = b'C';
        assert_eq!(
            check(&manifest, cert, &tampered, &keys),
            Err(VerifyError::Letter(LetterError::HashMismatch(
                Document::Whitelist
            )))
        );
        // A certificate that is not zlib.
        let garbage = b"not a certificate";
        let signed = read_manifest(
            "cms.cern.ch",
            &published.sign_manifest(&good_text.replace(
                &published.certificate_hash(),
                &letter::hex(&Sha1::digest(garbage)),
            )),
        )
        .expect("readable");
        assert!(matches!(
            verify("cms.cern.ch", &signed, garbage, &whitelist, &keys, now()),
            Err(VerifyError::CertificateUnreadable(_))
        ));
    }

    #[test]
    fn master_keys_must_be_pem_public_keys() {
        assert!(
            MasterKey::from_pem(
                "x.pub",
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
            )
            .is_err()
        );
        let error = MasterKey::from_pem("x.pub", "hello")
            .expect_err("not a key")
            .to_string();
        assert!(
            error.contains("x.pub is not a PEM RSA PUBLIC KEY"),
            "{error}"
        );
    }
}
