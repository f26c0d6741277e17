//! A static HTTP server on 127.0.0.1: what a CVMFS stratum needs to serve its repositories
//! (`GET` and `HEAD` of plain files, keep-alive, 404 for anything else).
//!
//! It runs on a thread with a runtime of its own, so it serves whatever the caller's
//! runtime is doing (blocking on a mount, for instance) and stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct FileServer {
    address: SocketAddr,
    requests: Arc<AtomicU64>,
    paths: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    /// Serves the files under `root` at the URL path `prefix` (e.g. `/cvmfs`).
    pub fn start(root: PathBuf, prefix: &str) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let site = Arc::new(Site {
            root,
            prefix: prefix.trim_end_matches('/').to_owned(),
            requests: requests.clone(),
            paths: paths.clone(),
        });
        let thread = std::thread::Builder::new()
            .name("stratum-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accept(listener, site) => {}
                    }
                });
            })?;
        Ok(Self {
            address,
            requests,
            paths,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many requests it answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The URL paths requested so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Site {
    root: PathBuf,
    prefix: String,
    requests: Arc<AtomicU64>,
    paths: Arc<Mutex<Vec<String>>>,
}

async fn accept(listener: tokio::net::TcpListener, site: Arc<Site>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let site = site.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let site = site.clone();
                async move { Ok::<_, Infallible>(site.answer(&request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Site {
    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.uri().path().to_owned());
        let status = |code: StatusCode| {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = code;
            response
        };
        let head = request.method() == Method::HEAD;
        if request.method() != Method::GET && !head {
            return status(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(file) = self.file(request.uri().path()) else {
            return status(StatusCode::NOT_FOUND);
        };
        match tokio::fs::read(&file).await {
            Ok(content) => {
                let length = content.len();
                let body = if head {
                    Bytes::new()
                } else {
                    Bytes::from(content)
                };
                let mut response = Response::new(Full::new(body));
                if let Ok(value) = length.to_string().parse() {
                    response
                        .headers_mut()
                        .insert(hyper::header::CONTENT_LENGTH, value);
                }
                response
            }
            Err(_) => status(StatusCode::NOT_FOUND),
        }
    }

    /// The file a URL path names, if it lies beneath the root.
    fn file(&self, path: &str) -> Option<PathBuf> {
        let relative = path.strip_prefix(&self.prefix)?.trim_start_matches('/');
        let relative = Path::new(relative);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return None;
        }
        let file = self.root.join(relative);
        file.is_file().then_some(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(address: SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn files_beneath_the_root_are_served_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo/data")).unwrap();
        std::fs::write(dir.path().join("repo/.cvmfspublished"), "C123\n").unwrap();
        let server = FileServer::start(dir.path().to_owned(), "/cvmfs").unwrap();
        let ok = get(
            server.address(),
            "GET /cvmfs/repo/.cvmfspublished HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("C123\n"), "{ok}");
        let head = get(
            server.address(),
            "HEAD /cvmfs/repo/.cvmfspublished HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(
            head.starts_with("HTTP/1.1 200") && head.contains("content-length: 5"),
            "{head}"
        );
        for path in [
            "/cvmfs/repo/missing",
            "/cvmfs/../etc/passwd",
            "/other/repo/.cvmfspublished",
            "/cvmfs/repo/data",
        ] {
            let answer = get(
                server.address(),
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            );
            assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        }
        assert_eq!(server.requests(), 6);
    }
}
