//! Free loopback ports chosen at run time, so several testbeds and the processes under
//! test can run side by side: the one free-port helper of the tests.

use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// Returns a loopback TCP port that is free now and was not handed out before by this
/// process. The kernel picks it; the small window until a component binds it is harmless
/// in practice because ephemeral ports are assigned round-robin.
pub fn free_port() -> io::Result<u16> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..64 {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let mut seen = handed_out.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no free loopback port found",
    ))
}

/// `127.0.0.1:<port>` with a port from [`free_port`], for a process's listen flag.
pub fn free_address() -> io::Result<String> {
    Ok(format!("127.0.0.1:{}", free_port()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        assert!(free_address().unwrap().starts_with("127.0.0.1:"));
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
    }
}
