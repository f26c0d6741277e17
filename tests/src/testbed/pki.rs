//! The testbed's own public-key infrastructure.
//!
//! One throw-away CA signs the apiserver's serving certificate and an admin client
//! certificate in group `system:masters`; a separate key pair signs and verifies
//! service-account tokens. Everything is ECDSA P-256 and written as PEM files into the
//! testbed's work directory, where the components read them.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
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

/// Generates the CA, certificates and keys and writes them below `dir`.
pub fn generate(dir: &Path, service_ip: &str) -> Result<PkiFiles, TestbedError> {
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
        ca_pem: ca.pem(),
        admin_cert_pem: admin.pem(),
        admin_key_pem: admin_key.serialize_pem(),
    };
    let write = |path: &Path, contents: String| {
        fs::write(path, contents).map_err(|source| TestbedError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    };
    write(&files.ca_cert, files.ca_pem.clone())?;
    write(&files.serving_cert, serving.pem())?;
    write(&files.serving_key, serving_key.serialize_pem())?;
    write(&files.service_account_key, service_account.serialize_pem())?;
    write(&files.service_account_pub, service_account.public_key_pem())?;
    Ok(files)
}
