//! The apiserver's way to the real nodes' kubelets (`kubectl logs`, `exec`, port-forward).
//!
//! A kubelet listens on its node IP, which exists only in the node's network namespace.
//! The apiserver is started with an egress selector whose `cluster` egress is HTTP
//! CONNECT over a unix socket; the testbed process serves that socket:
//!
//! ```text
//!  kube-apiserver ── CONNECT 10.213.0.2:10250 ──► <work>/egress.sock ──► dial from inside
//!                                                  (testbed process)     the node's netns
//! ```
//!
//! A target that is a real node's IP or name, or an address in its pod subnet (the
//! apiserver's pod proxy), is dialled from inside that node's network namespace;
//! anything else (a webhook or aggregated API on the host) from the host's. The head of
//! each request is parsed with `httparse`, bounded to 8 KiB.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use super::forward;
use super::tasks::TaskSet;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// The egress selector configuration that sends the apiserver's `cluster` traffic
/// through the proxy on `socket`.
pub fn selector_config(socket: &Path) -> String {
    let config = serde_json::json!({
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [{
            "name": "cluster",
            "connection": {
                "proxyProtocol": "HTTPConnect",
                "transport": { "uds": { "udsName": socket } },
            },
        }],
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// How to reach one real node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    /// The node's name (a CONNECT target may use it as host name).
    pub name: String,
    /// The node IP.
    pub ip: Ipv4Addr,
    /// The node's pod subnet.
    pub pod_subnet: (Ipv4Addr, u8),
    /// `/proc/<keeper>/ns/net`.
    pub netns: PathBuf,
}

impl NodeRoute {
    fn holds(&self, ip: Ipv4Addr) -> bool {
        let (subnet, prefix) = self.pod_subnet;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        ip == self.ip || u32::from(ip) & mask == u32::from(subnet) & mask
    }
}

/// Where to dial `host`: from a node's namespace (its netns and the address to dial),
/// or `None` for the host's.
fn resolve(routes: &[NodeRoute], host: &str) -> Option<(PathBuf, Ipv4Addr)> {
    if let Some(route) = routes.iter().find(|r| r.name == host) {
        return Some((route.netns.clone(), route.ip));
    }
    let ip: Ipv4Addr = host.parse().ok()?;
    routes
        .iter()
        .find(|r| r.holds(ip))
        .map(|r| (r.netns.clone(), ip))
}

type Routes = Arc<RwLock<Vec<NodeRoute>>>;

/// The proxy: which hosts are real nodes, and the task serving the socket.
#[derive(Debug)]
pub struct EgressProxy {
    socket: PathBuf,
    routes: Routes,
    tasks: TaskSet,
}

impl EgressProxy {
    /// Listens on `socket` (owner-only) and serves it on `runtime`.
    pub fn start(socket: &Path, runtime: tokio::runtime::Handle) -> io::Result<Self> {
        let tasks = TaskSet::new(runtime);
        let _runtime = tasks.runtime().enter();
        let listener = UnixListener::bind(socket)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        let routes: Routes = Arc::default();
        let proxy = Self {
            socket: socket.to_path_buf(),
            routes: routes.clone(),
            tasks: tasks.clone(),
        };
        let connections = tasks.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let routes = routes.clone();
                connections.spawn(async move {
                    if let Err(error) = serve(stream, routes).await {
                        tracing::warn!(%error, "egress proxy: request failed");
                    }
                });
            }
        });
        Ok(proxy)
    }

    /// Sends connections to the node's name, IP and pod subnet into its namespace.
    pub fn add_node(&self, route: NodeRoute) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.name != route.name);
        routes.push(route);
    }

    /// Forgets the node `name`.
    pub fn remove_node(&self, name: &str) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.name != name);
    }

    /// Stops serving and closes every tunnel.
    pub fn stop(&self) {
        self.tasks.shutdown(std::time::Duration::from_secs(2));
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What a CONNECT request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
}

/// Parses a complete request head; `Ok(None)` when more bytes are needed.
fn parse_head(head: &[u8]) -> Result<Option<(Target, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(head) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("malformed request: {error}")),
    };
    if request.method != Some("CONNECT") {
        return Err(format!("method {:?} is not CONNECT", request.method));
    }
    let authority = request.path.unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("CONNECT target {authority:?} has no port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("CONNECT target {authority:?} has a bad port"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Some((Target { host, port }, length)))
}

async fn serve(mut client: UnixStream, routes: Routes) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let (target, length) = loop {
        let mut chunk = [0u8; 1024];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
        match parse_head(&head) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if head.len() < MAX_HEAD => continue,
            Ok(None) => return refuse(&mut client, "request head too long").await,
            Err(reason) => return refuse(&mut client, &reason).await,
        }
    };
    let route = resolve(
        &routes.read().unwrap_or_else(|p| p.into_inner()),
        &target.host,
    );
    let dialled = match &route {
        Some((netns, ip)) => {
            forward::connect_in(netns, SocketAddr::new(IpAddr::V4(*ip), target.port)).await
        }
        None => TcpStream::connect((target.host.as_str(), target.port)).await,
    };
    let mut upstream = match dialled {
        Ok(stream) => stream,
        Err(error) => {
            let reason = format!("dialling {}:{}: {error}", target.host, target.port);
            return refuse(&mut client, &reason).await;
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    // The client speaks first after the answer (TLS); anything it sent early goes on.
    upstream.write_all(&head[length..]).await?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

async fn refuse(client: &mut UnixStream, reason: &str) -> io::Result<()> {
    tracing::warn!(reason, "egress proxy: refusing a request");
    client
        .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_heads_name_their_target() {
        let head = b"CONNECT 10.213.0.2:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        let (target, length) = parse_head(head).unwrap().unwrap();
        assert_eq!(
            target,
            Target {
                host: "10.213.0.2".into(),
                port: 10250
            }
        );
        assert_eq!(length, head.len());
        assert_eq!(
            parse_head(b"CONNECT 10.213.0.2:10250 HTTP/1.1\r\n"),
            Ok(None)
        );
    }

    #[test]
    fn node_names_ips_and_pod_addresses_go_into_the_node() {
        let routes = [0u8, 1].map(|n| NodeRoute {
            name: format!("node-{n}"),
            ip: Ipv4Addr::new(10, 213, n, 2),
            pod_subnet: (Ipv4Addr::new(10, 214, n, 0), 24),
            netns: PathBuf::from(format!("/proc/{n}/ns/net")),
        });
        let ns = |n: u8| PathBuf::from(format!("/proc/{n}/ns/net"));
        assert_eq!(
            resolve(&routes, "node-1"),
            Some((ns(1), Ipv4Addr::new(10, 213, 1, 2)))
        );
        assert_eq!(
            resolve(&routes, "10.213.0.2"),
            Some((ns(0), Ipv4Addr::new(10, 213, 0, 2)))
        );
        assert_eq!(
            resolve(&routes, "10.214.1.17"),
            Some((ns(1), Ipv4Addr::new(10, 214, 1, 17)))
        );
        assert_eq!(resolve(&routes, "10.214.2.17"), None);
        assert_eq!(resolve(&routes, "127.0.0.1"), None);
        assert_eq!(resolve(&routes, "webhook.example"), None);
    }

    #[test]
    fn other_methods_and_portless_targets_are_refused() {
        assert!(parse_head(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"CONNECT node-0 HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"CONNECT node-0:http HTTP/1.1\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn targets_that_are_no_node_are_dialled_from_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let proxy = EgressProxy::start(&socket, tokio::runtime::Handle::current()).unwrap();
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = upstream.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            let mut hello = [0u8; 5];
            stream.read_exact(&mut hello).await.unwrap();
            stream.write_all(&hello).await.unwrap();
        });

        let mut client = UnixStream::connect(&socket).await.unwrap();
        client
            .write_all(
                format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let expected = b"HTTP/1.1 200 Connection established\r\n\r\n";
        let mut answer = vec![0u8; expected.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, expected);
        client.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");
        server.await.unwrap();

        // A target nobody listens on gets a 502, not a hang.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut client = UnixStream::connect(&socket).await.unwrap();
        client
            .write_all(format!("CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        proxy.stop();
        assert!(!socket.exists());
    }

    #[test]
    fn the_selector_sends_only_cluster_traffic_through_the_socket() {
        let config: serde_json::Value =
            serde_json::from_str(&selector_config(Path::new("/w/egress.sock"))).unwrap();
        let selections = config["egressSelections"].as_array().unwrap();
        assert_eq!(selections.len(), 1);
        assert_eq!(selections[0]["name"], "cluster");
        assert_eq!(selections[0]["connection"]["proxyProtocol"], "HTTPConnect");
        assert_eq!(
            selections[0]["connection"]["transport"]["uds"]["udsName"],
            "/w/egress.sock"
        );
    }
}
