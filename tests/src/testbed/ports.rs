//! Free loopback ports chosen at run time, so several testbeds can run side by side.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use super::TestbedError;

/// Returns a loopback TCP port that is free now and was not handed out before by this
/// process. The kernel picks it; the small window until a component binds it is harmless
/// in practice because ephemeral ports are assigned round-robin.
pub fn free_port() -> Result<u16, TestbedError> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..64 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|source| TestbedError::Io {
                what: "finding a free port".into(),
                source,
            })?
            .port();
        let mut seen = handed_out.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(port) {
            return Ok(port);
        }
    }
    Err(TestbedError::Config("no free loopback port found".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
    }
}
