//! Plain-HTTP downloads of a repository's small signed files, directly or through a
//! forward proxy (a site squid), as the CVMFS client downloads them.
//!
//! Stratum 1 servers and site squids speak plain HTTP: what travels is signed, so it is
//! checked by its signatures ([`super::verify`]), not by TLS. A forward proxy is asked
//! with the absolute URL as the request target (RFC 9112, 3.2.2), which hyper's client
//! connection sends as given; so one connection per download, made here, is all the
//! client there is: no pool (a resolution makes three requests per repository, once per
//! AnalysisJob), no redirects (the client does not follow them by default either).
//! Every download is bounded in time ([`REQUEST_TIMEOUT`]) and size.

use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest a single download (connect, request, whole body) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest document read (manifests, whitelists and certificates are a few KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// How a request reaches the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Straight to the server (`DIRECT`).
    Direct,
    /// Through this forward proxy, `http://host:port`.
    Proxy(Uri),
    /// Through proxies discovered by WPAD (`auto`), which this client does not do.
    Auto,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Direct => f.write_str("directly"),
            Route::Proxy(proxy) => write!(f, "through proxy {proxy}"),
            Route::Auto => f.write_str("through auto-discovered proxies"),
        }
    }
}

/// A download that failed, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{url} {route}: {cause}")]
pub struct FetchError {
    /// What was asked for.
    pub url: String,
    /// How.
    pub route: Route,
    /// What went wrong.
    pub cause: String,
}

/// Downloads `url` by `route`.
pub async fn get(url: &Uri, route: &Route) -> Result<Vec<u8>, FetchError> {
    let failed = |cause: String| FetchError {
        url: url.to_string(),
        route: route.clone(),
        cause,
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(url, route)).await {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(failed(format!(
            "no answer within {} s",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

async fn exchange(url: &Uri, route: &Route) -> Result<Vec<u8>, String> {
    if url.scheme_str() != Some("http") {
        return Err(
            "https is not supported for reading manifests; what travels is signed and \
             verified, so give the server's http:// URL in cvmfs.serverUrl"
                .to_owned(),
        );
    }
    let authority = url
        .authority()
        .ok_or_else(|| "the URL has no host".to_owned())?
        .clone();
    let (dial, target) = match route {
        Route::Direct => (
            url,
            url.path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned()),
        ),
        Route::Proxy(proxy) => (proxy, url.to_string()),
        Route::Auto => {
            return Err(
                "proxy auto-discovery (auto in cvmfs.httpProxy) is not supported; name the \
                 proxies"
                    .to_owned(),
            );
        }
    };
    let host = dial
        .host()
        .ok_or_else(|| "no host to connect to".to_owned())?;
    let port = dial.port_u16().unwrap_or(80);
    let stream = TcpStream::connect(format!("{host}:{port}"))
        .await
        .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    let request = Request::get(target)
        .header(HOST, authority.as_str())
        .header(
            USER_AGENT,
            concat!("hepbatch-operator/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("cannot build the request: {error}"))?;
    let download = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("the server answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|error| format!("reading the answer failed: {error}"))?;
        Ok(body.to_bytes().to_vec())
    };
    // The connection is driven here, not on a task of its own, so that nothing outlives
    // the timeout above; should it end first (the server closed it after answering), the
    // answer is read to its end.
    let mut download = std::pin::pin!(download);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = &mut download => result,
        ended = &mut connection => match ended {
            Ok(()) => download.await,
            Err(error) => Err(format!("the connection failed: {error}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::Response;
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers every request with its request target and Host header, or
    /// 404 for `/missing`.
    async fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service =
                        service_fn(|request: Request<hyper::body::Incoming>| async move {
                            let host = request
                                .headers()
                                .get(HOST)
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let status = if request.uri().path().ends_with("/missing") {
                                StatusCode::NOT_FOUND
                            } else {
                                StatusCode::OK
                            };
                            let body = format!("{} {host}", request.uri());
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn direct_requests_use_the_path_and_proxied_ones_the_whole_url() {
        let server = echo_server().await;
        let url: Uri = format!("http://{server}/cvmfs/cms.cern.ch/.cvmfspublished")
            .parse()
            .expect("url");
        let direct = get(&url, &Route::Direct).await.expect("answer");
        assert_eq!(
            String::from_utf8_lossy(&direct),
            format!("/cvmfs/cms.cern.ch/.cvmfspublished {server}")
        );
        // The "proxy" is the same echo server: it sees the absolute URL.
        let stratum: Uri = "http://stratum-one.example.org/cvmfs/cms.cern.ch/.cvmfspublished"
            .parse()
            .expect("url");
        let proxy = Route::Proxy(format!("http://{server}").parse().expect("proxy"));
        let proxied = get(&stratum, &proxy).await.expect("answer");
        assert_eq!(
            String::from_utf8_lossy(&proxied),
            format!("{stratum} stratum-one.example.org")
        );
    }

    #[tokio::test]
    async fn failures_say_what_and_how() {
        let server = echo_server().await;
        let missing: Uri = format!("http://{server}/missing").parse().expect("url");
        let error = get(&missing, &Route::Direct).await.expect_err("404");
        assert!(error.cause.contains("404"), "{error}");
        // Nothing listens on a port just freed.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("address");
        let url: Uri = format!("http://{closed}/x").parse().expect("url");
        let error = get(&url, &Route::Direct).await.expect_err("refused");
        assert!(
            error
                .to_string()
                .starts_with(&format!("http://{closed}/x directly: cannot connect")),
            "{error}"
        );
    }
}
