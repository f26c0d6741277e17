//! The testbed's own public-key infrastructure.
//!
//! One throw-away CA signs the apiserver's serving certificate and an admin client
//! certificate in group `system:masters`; a separate key pair signs and verifies
//! service-account tokens. Everything is ECDSA P-256 and written as PEM files into the
//! testbed's work directory, where the components read them. The CA stays in memory
//! ([`Authority`]) to sign more client certificates later, such as a real node's
//! `system:node:<name>` identity.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::TestbedError;

/// Paths of the PEM files the components are started with.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// CA certificate: clients verify the apiserver with it, the apiserver verifies clients.
    pub ca_cert: PathBuf,
    /// The apiserver's serving certificate.
    pub serving_cert: PathBuf,
    /// The apiserver's serving key.
    pub serving_key: PathBuf,
    /// Service-account token signing key (private).
    pub service_account_key: PathBuf,
    /// Service-account token verification key (public).
    pub service_account_pub: PathBuf,
    /// The admin client certificate (the apiserver presents it to kubelets).
    pub admin_cert: PathBuf,
    /// The admin client key.
    pub admin_key: PathBuf,
    /// PEM of the CA certificate, for kubeconfigs.
    pub ca_pem: String,
    /// PEM of the admin client certificate, for kubeconfigs.
    pub admin_cert_pem: String,
    /// PEM of the admin client key, for kubeconfigs.
    pub admin_key_pem: String,
}

/// Names the serving certificate is valid for: what clients on this machine and pods in
/// the cluster use to reach the apiserver.
const SERVING_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The testbed CA, kept to sign client certificates after the start.
#[derive(Clone)]
pub struct Authority {
    issuer: Arc<CertifiedIssuer<'static, KeyPair>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// Signs a client certificate for user `common_name` in `groups` and writes it and
    /// its key (owner-only) to `cert` and `key`.
    pub fn issue_client(
        &self,
        common_name: &str,
        groups: &[&str],
        cert: &Path,
        key: &Path,
    ) -> Result<(), TestbedError> {
        let err =
            |what: &'static str| move |source: rcgen::Error| TestbedError::Pki { what, source };
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key_pair = KeyPair::generate().map_err(err("client key"))?;
        let issuer: &Issuer<'static, KeyPair> = &self.issuer;
        let certificate = params
            .signed_by(&key_pair, issuer)
            .map_err(err("client certificate"))?;
        write(cert, &certificate.pem(), 0o644)?;
        write(key, &key_pair.serialize_pem(), 0o600)
    }
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), TestbedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| TestbedError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(io_err)
}

/// Generates the CA, certificates and keys and writes them below `dir`.
pub fn generate(dir: &Path, service_ip: &str) -> Result<(PkiFiles, Authority), TestbedError> {
    let err = |what: &'static str| move |source: rcgen::Error| TestbedError::Pki { what, source };

    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hepbatch-testbed-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(err("CA key"))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err("CA certificate"))?;

    let mut serving_params = CertificateParams::new(
        SERVING_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )
    .map_err(err("serving names"))?;
    for ip in ["127.0.0.1", service_ip] {
        let ip = ip
            .parse()
            .map_err(|_| TestbedError::Config(format!("bad IP {ip}")))?;
        serving_params
            .subject_alt_names
            .push(SanType::IpAddress(ip));
    }
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().map_err(err("serving key"))?;
    let serving = serving_params
        .signed_by(&serving_key, &ca)
        .map_err(err("serving certificate"))?;

    let mut admin_params = CertificateParams::default();
    admin_params
        .distinguished_name
        .push(DnType::CommonName, "hepbatch-testbed-admin");
    admin_params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate().map_err(err("admin key"))?;
    let admin = admin_params
        .signed_by(&admin_key, &ca)
        .map_err(err("admin certificate"))?;

    let service_account = KeyPair::generate().map_err(err("service-account key"))?;

    let files = PkiFiles {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        service_account_key: dir.join("service-account.key"),
        service_account_pub: dir.join("service-account.pub"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        ca_pem: ca.pem(),
        admin_cert_pem: admin.pem(),
        admin_key_pem: admin_key.serialize_pem(),
    };
    write(&files.ca_cert, &files.ca_pem, 0o644)?;
    write(&files.serving_cert, &serving.pem(), 0o644)?;
    write(&files.serving_key, &serving_key.serialize_pem(), 0o600)?;
    write(
        &files.service_account_key,
        &service_account.serialize_pem(),
        0o600,
    )?;
    write(
        &files.service_account_pub,
        &service_account.public_key_pem(),
        0o644,
    )?;
    write(&files.admin_cert, &files.admin_cert_pem, 0o644)?;
    write(&files.admin_key, &files.admin_key_pem, 0o600)?;
    let authority = Authority {
        issuer: Arc::new(ca),
    };
    Ok((files, authority))
}
