//! The current revision of CVMFS repositories, for AnalysisJobs with
//! `spec.cvmfs.consistency: Fleet`, learnt without a CVMFS client of the operator's own.
//!
//! A repository's current revision is named by its signed manifest,
//! `<server>/cvmfs/<fqrn>/.cvmfspublished`. [`resolve`] downloads it with the certificate
//! it names and the repository's whitelist ([`fetch`]), from the servers and through the
//! proxies of the configuration ([`Source`]), and verifies the whole chain from the
//! configured master key to the root hash ([`verify`], built on [`letter`], [`manifest`]
//! and [`whitelist`], all pure). Servers are tried in the configured order, each through
//! every proxy in order, until one gives a manifest that verifies. Nothing is kept
//! between resolutions: the Job the controller creates carries what was resolved.
//!
//! Every failure is a [`ResolveError`] whose message names the repository and the cause
//! in words; the controller reports it as `Accepted=False` and creates nothing.

pub mod fetch;
pub mod letter;
pub mod manifest;
pub mod verify;
pub mod whitelist;

use std::collections::BTreeMap;

use hepbatch_crds::CvmfsRevision;
use http::Uri;
use k8s_openapi::jiff::Timestamp;

use fetch::{FetchError, Route};
use verify::{KeyError, MasterKey, VerifyError};

/// Placeholder of the repository name in server URLs (`CVMFS_SERVER_URL` syntax).
pub const FQRN_PLACEHOLDER: &str = "@fqrn@";

/// The revision each resolved repository was found at.
pub type Snapshot = BTreeMap<String, CvmfsRevision>;

/// Where manifests come from and which keys vouch for them, checked when the
/// configuration is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    servers: Vec<String>,
    routes: Vec<Route>,
    keys: Vec<MasterKey>,
}

impl Source {
    /// Reads `server_url` (`CVMFS_SERVER_URL`: `;`-separated `http://` URLs with
    /// `@fqrn@`), `http_proxy` (`CVMFS_HTTP_PROXY`: `;`-separated groups of `|`-separated
    /// `http://host:port` or `DIRECT`; absent: direct) and `public_keys` (file name → PEM
    /// `PUBLIC KEY`). The error names the configuration key at fault.
    pub fn new(
        server_url: Option<&str>,
        http_proxy: Option<&str>,
        public_keys: &BTreeMap<String, String>,
    ) -> Result<Source, SourceError> {
        let servers = match server_url {
            None => Vec::new(),
            Some(text) => text
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|server| {
                    check_server_url(server)?;
                    Ok(server.trim_end_matches('/').to_owned())
                })
                .collect::<Result<Vec<_>, SourceError>>()?,
        };
        if server_url.is_some() && servers.is_empty() {
            return Err(SourceError::NoServer);
        }
        let routes = match http_proxy {
            None => vec![Route::Direct],
            Some(text) => parse_proxies(text)?,
        };
        let keys = public_keys
            .iter()
            .map(|(name, pem)| {
                if !name.ends_with(".pub") || name.contains('/') {
                    return Err(SourceError::KeyName { name: name.clone() });
                }
                MasterKey::from_pem(name, pem).map_err(SourceError::Key)
            })
            .collect::<Result<Vec<_>, SourceError>>()?;
        Ok(Source {
            servers,
            routes,
            keys,
        })
    }

    /// The master keys for `repository`: the one named `<repository>.pub` if configured,
    /// otherwise every configured key (domain keys such as CERN's come as several files).
    pub fn keys_for(&self, repository: &str) -> Vec<MasterKey> {
        let own = format!("{repository}.pub");
        match self.keys.iter().find(|k| k.name == own) {
            Some(key) => vec![key.clone()],
            None => self.keys.clone(),
        }
    }

    /// The base URLs of `repository`, in the order to try.
    pub fn urls_of(&self, repository: &str) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| server.replace(FQRN_PLACEHOLDER, repository))
            .collect()
    }
}

/// A CVMFS server or proxy setting of the operator configuration that cannot work; the
/// message names the configuration key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A server URL that is not http(s).
    #[error(
        "cvmfs.serverUrl {server:?} must be an http:// URL such as \
         http://cvmfs-stratum-one.cern.ch/cvmfs/@fqrn@"
    )]
    ServerScheme {
        /// The URL as configured.
        server: String,
    },
    /// A server URL that does not parse.
    #[error("cvmfs.serverUrl {server:?} is not a valid URL")]
    ServerUrl {
        /// The URL as configured.
        server: String,
    },
    /// `serverUrl` set but empty.
    #[error("cvmfs.serverUrl names no server; remove it instead")]
    NoServer,
    /// A proxy that is neither `http://host:port`, `DIRECT` nor `auto`.
    #[error(
        "cvmfs.httpProxy {proxy:?} must be http://host:port (e.g. http://squid:3128) or DIRECT"
    )]
    Proxy {
        /// The proxy as configured.
        proxy: String,
    },
    /// `httpProxy` set but empty.
    #[error("cvmfs.httpProxy names no proxy; use DIRECT for none")]
    NoProxy,
    /// A key file name that is not `<name>.pub`.
    #[error(
        "cvmfs.publicKeys: {name:?} must be a file name ending in .pub \
         (<repository>.pub is used for that repository)"
    )]
    KeyName {
        /// The file name as configured.
        name: String,
    },
    /// A key that is not a PEM public key.
    #[error("cvmfs.publicKeys: {0}")]
    Key(#[source] KeyError),
}

fn check_server_url(server: &str) -> Result<(), SourceError> {
    // https is valid CVMFS configuration (the CSI plugin's clients may use it), so it
    // does not make the configuration fail; a download from such a server is refused
    // with a reason instead (see fetch).
    if !server.starts_with("http://") && !server.starts_with("https://") {
        return Err(SourceError::ServerScheme {
            server: server.to_owned(),
        });
    }
    let sample = server.replace(FQRN_PLACEHOLDER, "cms.cern.ch");
    match sample.parse::<Uri>() {
        Ok(uri) if uri.host().is_some() => Ok(()),
        _ => Err(SourceError::ServerUrl {
            server: server.to_owned(),
        }),
    }
}

/// The proxies of a `CVMFS_HTTP_PROXY` value in the order to try: groups (`;`) in order,
/// the members of a group (`|`, load-balanced by the client) in the order given.
fn parse_proxies(text: &str) -> Result<Vec<Route>, SourceError> {
    let mut routes = Vec::new();
    for proxy in text
        .split([';', '|'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if proxy.eq_ignore_ascii_case("DIRECT") {
            routes.push(Route::Direct);
            continue;
        }
        if proxy == "auto" {
            routes.push(Route::Auto);
            continue;
        }
        let uri = proxy
            .parse::<Uri>()
            .ok()
            .filter(|uri| uri.scheme_str() == Some("http") && uri.host().is_some())
            .ok_or_else(|| SourceError::Proxy {
                proxy: proxy.to_owned(),
            })?;
        routes.push(Route::Proxy(uri));
    }
    if routes.is_empty() {
        return Err(SourceError::NoProxy);
    }
    routes.dedup();
    Ok(routes)
}

/// Why the current revision of a repository is not known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot resolve the current revision of {repository}: {cause}")]
pub struct ResolveError {
    /// The repository.
    pub repository: String,
    /// Why, in words.
    pub cause: Cause,
}

/// The cause of a [`ResolveError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    /// The operator's configuration names no server.
    #[error(
        "the operator's configuration names no CVMFS server (cvmfs.serverUrl; with the Helm \
         chart, csi.cvmfs.serverUrl)"
    )]
    NoServer,
    /// The operator's configuration has no master key.
    #[error(
        "the operator's configuration has no public key to verify it with (cvmfs.publicKeys; \
         with the Helm chart, csi.cvmfs.publicKeys)"
    )]
    NoKey,
    /// No server answered.
    #[error("no server could be reached: {}", join(.0))]
    Unreachable(Vec<FetchError>),
    /// A server answered, and what it said does not verify.
    #[error("{error} (read from {url})")]
    Unverified {
        /// The repository's URL at that server.
        url: String,
        /// What failed.
        error: VerifyError,
    },
}

fn join(errors: &[FetchError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Resolves the current revision of every repository in `repositories` from `source`,
/// concurrently; the first failure (in the order given) is the error.
pub async fn resolve(
    source: &Source,
    repositories: &[String],
    now: Timestamp,
) -> Result<Snapshot, ResolveError> {
    let resolutions = repositories
        .iter()
        .map(|repository| resolve_one(source, repository, now));
    let mut snapshot = Snapshot::new();
    for (repository, result) in repositories
        .iter()
        .zip(futures::future::join_all(resolutions).await)
    {
        let revision = result.map_err(|cause| ResolveError {
            repository: repository.clone(),
            cause,
        })?;
        snapshot.insert(repository.clone(), revision);
    }
    Ok(snapshot)
}

async fn resolve_one(
    source: &Source,
    repository: &str,
    now: Timestamp,
) -> Result<CvmfsRevision, Cause> {
    let urls = source.urls_of(repository);
    if urls.is_empty() {
        return Err(Cause::NoServer);
    }
    let keys = source.keys_for(repository);
    if keys.is_empty() {
        return Err(Cause::NoKey);
    }
    let mut unreachable = Vec::new();
    let mut unverified = None;
    for base in urls {
        for route in &source.routes {
            match from_server(repository, &base, route, &keys, now).await {
                Ok(revision) => return Ok(revision),
                Err(Attempt::Fetch(error)) => unreachable.push(error),
                Err(Attempt::Verify(error)) => {
                    // What a server signed does not change with the proxy: try the next
                    // server.
                    unverified.get_or_insert(Cause::Unverified { url: base, error });
                    break;
                }
            }
        }
    }
    Err(unverified.unwrap_or(Cause::Unreachable(unreachable)))
}

enum Attempt {
    Fetch(FetchError),
    Verify(VerifyError),
}

async fn from_server(
    repository: &str,
    base: &str,
    route: &Route,
    keys: &[MasterKey],
    now: Timestamp,
) -> Result<CvmfsRevision, Attempt> {
    let download = |path: String| async move {
        let url = format!("{base}/{path}");
        let uri = url.parse::<Uri>().map_err(|error| {
            Attempt::Fetch(FetchError {
                url: url.clone(),
                route: route.clone(),
                cause: format!("not a valid URL: {error}"),
            })
        })?;
        fetch::get(&uri, route).await.map_err(Attempt::Fetch)
    };
    let manifest = download(".cvmfspublished".to_owned()).await?;
    let signed = verify::read_manifest(repository, &manifest).map_err(Attempt::Verify)?;
    let certificate = download(signed.manifest.certificate_path()).await?;
    let whitelist = download(".cvmfswhitelist".to_owned()).await?;
    verify::verify(repository, &signed, &certificate, &whitelist, keys, now)
        .map_err(Attempt::Verify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_proxies_and_keys_are_read_in_order() {
        let published = verify::tests::Published::new();
        let pem = {
            use rsa::pkcs8::EncodePublicKey;
            published
                .master
                .to_public_key()
                .to_public_key_pem(x509_cert::der::pem::LineEnding::LF)
                .expect("pem")
        };
        let keys = BTreeMap::from([
            ("cms.cern.ch.pub".to_owned(), pem.clone()),
            ("cern-it1.cern.ch.pub".to_owned(), pem.clone()),
            ("cern-it4.cern.ch.pub".to_owned(), pem.clone()),
        ]);
        let source = Source::new(
            Some("http://s1.example.org/cvmfs/@fqrn@;http://s2.example.org:8000/cvmfs/@fqrn@/"),
            Some("http://squid-a:3128|http://squid-b:3128;DIRECT"),
            &keys,
        )
        .expect("valid");
        assert_eq!(
            source.urls_of("sft.cern.ch"),
            [
                "http://s1.example.org/cvmfs/sft.cern.ch",
                "http://s2.example.org:8000/cvmfs/sft.cern.ch"
            ]
        );
        assert_eq!(
            source.routes,
            [
                Route::Proxy("http://squid-a:3128".parse().expect("uri")),
                Route::Proxy("http://squid-b:3128".parse().expect("uri")),
                Route::Direct
            ]
        );
        let names = |keys: Vec<MasterKey>| keys.into_iter().map(|k| k.name).collect::<Vec<_>>();
        assert_eq!(names(source.keys_for("cms.cern.ch")), ["cms.cern.ch.pub"]);
        assert_eq!(
            names(source.keys_for("sft.cern.ch")),
            [
                "cern-it1.cern.ch.pub",
                "cern-it4.cern.ch.pub",
                "cms.cern.ch.pub"
            ]
        );
        let direct =
            Source::new(Some("http://s1/cvmfs/@fqrn@"), None, &BTreeMap::new()).expect("valid");
        assert_eq!(direct.routes, [Route::Direct]);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let none = BTreeMap::new();
        for (server, proxy, expected) in [
            (
                Some("ftp://s1/cvmfs/@fqrn@"),
                None,
                "must be an http:// URL",
            ),
            (Some(" ; "), None, "names no server"),
            (
                Some("http://s1/@fqrn@"),
                Some("squid:3128"),
                "must be http://host:port",
            ),
            (Some("http://s1/@fqrn@"), Some(""), "use DIRECT for none"),
        ] {
            let error = Source::new(server, proxy, &none)
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let bad_key = BTreeMap::from([("cms.cern.ch.pub".to_owned(), "not a key".to_owned())]);
        let error = Source::new(None, None, &bad_key).expect_err("bad key");
        assert!(std::error::Error::source(&error).is_some(), "{error:?}");
        let error = error.to_string();
        assert!(
            error.starts_with("cvmfs.publicKeys: cms.cern.ch.pub"),
            "{error}"
        );
        let bad_name = BTreeMap::from([("cms.cern.ch.key".to_owned(), "x".to_owned())]);
        let error = Source::new(None, None, &bad_name)
            .expect_err("bad name")
            .to_string();
        assert!(error.contains("ending in .pub"), "{error}");
    }

    #[tokio::test]
    async fn without_servers_or_keys_nothing_is_asked() {
        let now = Timestamp::now();
        let empty = Source::new(None, None, &BTreeMap::new()).expect("valid");
        let error = resolve(&empty, &["cms.cern.ch".to_owned()], now)
            .await
            .expect_err("no server");
        assert_eq!(error.cause, Cause::NoServer);
        assert!(
            error
                .to_string()
                .starts_with("cannot resolve the current revision of cms.cern.ch: the operator's configuration names no CVMFS server"),
            "{error}"
        );
        let keyless = Source::new(
            Some("http://127.0.0.1:1/cvmfs/@fqrn@"),
            None,
            &BTreeMap::new(),
        )
        .expect("valid");
        let error = resolve(&keyless, &["cms.cern.ch".to_owned()], now)
            .await
            .expect_err("no key");
        assert_eq!(error.cause, Cause::NoKey);
    }

    /// Serves `files` (path → content) over HTTP on 127.0.0.1; 404 for anything else.
    async fn serve(files: BTreeMap<String, Vec<u8>>) -> std::net::SocketAddr {
        use http_body_util::Full;
        use hyper::body::Bytes;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let files = std::sync::Arc::new(files);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let files = files.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let found = files.get(request.uri().path()).cloned();
                            async move {
                                let response = match found {
                                    Some(body) => http::Response::new(Full::new(Bytes::from(body))),
                                    None => http::Response::builder()
                                        .status(404)
                                        .body(Full::new(Bytes::new()))
                                        .expect("response"),
                                };
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
    }

    async fn closed_port() -> std::net::SocketAddr {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("address")
    }

    #[tokio::test]
    async fn servers_are_tried_in_order_until_one_verifies() {
        let published = verify::tests::Published::new();
        let manifest = published.sign_manifest(&published.manifest_text("cms.cern.ch", 7));
        let signed = verify::read_manifest("cms.cern.ch", &manifest).expect("readable");
        let whitelist =
            published.sign_whitelist(&published.whitelist_text("cms.cern.ch", "20990101000000"));
        let base = "/cvmfs/cms.cern.ch";
        let server = serve(BTreeMap::from([
            (format!("{base}/.cvmfspublished"), manifest),
            (
                format!("{base}/{}", signed.manifest.certificate_path()),
                published.certificate.clone(),
            ),
            (format!("{base}/.cvmfswhitelist"), whitelist),
        ]))
        .await;
        let down = closed_port().await;
        let pem = {
            use rsa::pkcs8::EncodePublicKey;
            published
                .master
                .to_public_key()
                .to_public_key_pem(x509_cert::der::pem::LineEnding::LF)
                .expect("pem")
        };
        let keys = BTreeMap::from([("cms.cern.ch.pub".to_owned(), pem)]);
        let urls = format!("http://{down}/cvmfs/@fqrn@;http://{server}/cvmfs/@fqrn@");
        let source = Source::new(Some(&urls), None, &keys).expect("valid");
        let repositories = ["cms.cern.ch".to_owned()];
        let snapshot = resolve(&source, &repositories, Timestamp::now())
            .await
            .expect("the second server answers");
        assert_eq!(snapshot["cms.cern.ch"].revision, 7);

        // Nothing answers: every attempt is named.
        let urls = format!("http://{down}/cvmfs/@fqrn@");
        let source = Source::new(Some(&urls), Some("DIRECT"), &keys).expect("valid");
        let error = resolve(&source, &repositories, Timestamp::now())
            .await
            .expect_err("unreachable");
        assert!(matches!(&error.cause, Cause::Unreachable(attempts) if attempts.len() == 1));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot resolve the current revision of cms.cern.ch: no server could be \
                 reached: http://{down}/cvmfs/cms.cern.ch/.cvmfspublished directly: cannot connect"
            )),
            "{message}"
        );

        // A server that answers for another repository is not trusted, and says so.
        let source = Source::new(
            Some(&format!("http://{server}/cvmfs/cms.cern.ch")),
            None,
            &keys,
        )
        .expect("valid");
        let error = resolve(&source, &["sft.cern.ch".to_owned()], Timestamp::now())
            .await
            .expect_err("foreign");
        assert!(
            error
                .to_string()
                .contains("the manifest is of repository \"cms.cern.ch\""),
            "{error}"
        );
    }

    #[tokio::test]
    async fn https_servers_and_proxy_discovery_are_refused_in_words() {
        let published = verify::tests::Published::new();
        let keys = BTreeMap::from([("cms.cern.ch.pub".to_owned(), {
            use rsa::pkcs8::EncodePublicKey;
            published
                .master
                .to_public_key()
                .to_public_key_pem(x509_cert::der::pem::LineEnding::LF)
                .expect("pem")
        })]);
        let repositories = ["cms.cern.ch".to_owned()];
        let https = Source::new(Some("https://s1.example.org/cvmfs/@fqrn@"), None, &keys)
            .expect("valid configuration");
        let error = resolve(&https, &repositories, Timestamp::now())
            .await
            .expect_err("https");
        assert!(
            error.to_string().contains("https is not supported"),
            "{error}"
        );
        let auto = Source::new(
            Some("http://s1.example.org/cvmfs/@fqrn@"),
            Some("auto"),
            &keys,
        )
        .expect("valid configuration");
        let error = resolve(&auto, &repositories, Timestamp::now())
            .await
            .expect_err("auto");
        assert!(
            error.to_string().contains("proxy auto-discovery"),
            "{error}"
        );
    }
}
