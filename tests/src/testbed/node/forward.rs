//! TCP between the host and a node's network namespace, run by the testbed process.
//!
//! A socket belongs to the network namespace of the thread that creates it, for its whole
//! life. So a fresh thread joins the node's namespace (`setns(CLONE_NEWNET)` on
//! `/proc/<keeper>/ns/net`), creates the socket and ends; binding, accepting and
//! connecting then happen on the ordinary tokio runtime, whose threads stay in the
//! host's namespace:
//!
//! ```text
//!  node namespace                         host namespace
//!  kubelet, pods ──► 10.96.0.1:443 ═══════► 127.0.0.1:<apiserver>
//!  pods ──► <node IP>:<port>  ════════════► 127.0.0.1:<port>        (RealNode::expose)
//!  <node IP>:10250 ◄══════════════════════ egress proxy ◄── apiserver (logs, exec)
//! ```
//!
//! No address, route or firewall rule is added on the host, and no kube-proxy runs.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::tasks::TaskSet;

/// A fresh IPv4 TCP socket in the network namespace `netns` (a `/proc/<pid>/ns/net` path).
pub fn socket_in(netns: &Path) -> io::Result<TcpSocket> {
    let namespace = File::open(netns)?;
    std::thread::Builder::new()
        .name("testbed-netns".into())
        .spawn(move || {
            // This thread is thrown away afterwards: joining a namespace is for good.
            setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            drop(namespace);
            TcpSocket::new_v4()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Listens on `addr` inside `netns`.
pub fn listen_in(netns: &Path, addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_in(netns)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Connects to `addr` from inside `netns`.
pub async fn connect_in(netns: &Path, addr: SocketAddr) -> io::Result<TcpStream> {
    // Creating the socket takes a short-lived thread of our own (never one of tokio's
    // blocking pool, which is reused) for well under a millisecond; the connect itself
    // is asynchronous.
    let socket = socket_in(netns)?;
    socket.connect(addr).await
}

/// One forwarder: connections accepted on `listener` are joined to new connections to
/// `target`, made from the host's network namespace.
pub fn forward(listener: TcpListener, target: SocketAddr, tasks: &TaskSet) {
    let connections = tasks.clone();
    tasks.spawn(async move {
        loop {
            let (mut inbound, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, %target, "forwarder: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            connections.spawn(async move {
                let mut outbound = match TcpStream::connect(target).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%error, %peer, %target, "forwarder: connect failed");
                        return;
                    }
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
}

/// Listens on `addr` in `netns` and forwards to `target` on the host; returns the
/// address actually bound (a port of 0 picks one).
pub fn expose_in(
    netns: &Path,
    addr: SocketAddr,
    target: SocketAddr,
    tasks: &TaskSet,
) -> io::Result<SocketAddr> {
    let _runtime = tasks.runtime().enter();
    let listener = listen_in(netns, addr)?;
    let bound = listener.local_addr()?;
    forward(listener, target, tasks);
    Ok(bound)
}
