//! Admin kubeconfig for the testbed: the CA and a `system:masters` client certificate,
//! embedded so the file works from anywhere.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::TestbedError;
use super::pki::PkiFiles;

/// Name of the cluster, user and context inside the kubeconfig.
pub const CONTEXT: &str = "hepbatch-testbed";

/// Renders an admin kubeconfig for the apiserver at `server`.
pub fn render(server: &str, pki: &PkiFiles) -> String {
    let b64 = |pem: &str| STANDARD.encode(pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {CONTEXT}-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {CONTEXT}
  context:
    cluster: {CONTEXT}
    user: {CONTEXT}-admin
    namespace: default
current-context: {CONTEXT}
",
        ca = b64(&pki.ca_pem),
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
    )
}

/// Writes the kubeconfig to `path` with owner-only permissions (it holds an admin key).
pub fn write(path: &Path, contents: &str) -> Result<(), TestbedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| TestbedError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents.as_bytes()).map_err(io_err)
}
