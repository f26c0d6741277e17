//! Just enough HTTP to probe an admin endpoint (`/livez`, `/readyz`, `/metrics`) of a
//! process under test, and to read a sample out of its Prometheus text exposition.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, sending or receiving failed.
    #[error("GET http://{address}{path}: {source}")]
    Io {
        /// The address asked.
        address: String,
        /// The path asked.
        path: String,
        /// What failed.
        source: io::Error,
    },
    /// The answer had no status line.
    #[error("GET http://{address}{path}: no status line in the answer")]
    NoStatusLine {
        /// The address asked.
        address: String,
        /// The path asked.
        path: String,
    },
}

pub use crate::ports::free_address;

/// An HTTP/1.0 GET of `path` at `address`: the status code and the body.
pub async fn get(address: &str, path: &str) -> Result<(u16, String), HttpError> {
    let io_error = |source| HttpError::Io {
        address: address.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(io_error)?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .map_err(io_error)?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(io_error)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HttpError::NoStatusLine {
            address: address.to_owned(),
            path: path.to_owned(),
        })?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of the sample `name` (with its labels as exposed, e.g.
/// `requests_total{code="200"}`) in a Prometheus text exposition.
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (sample, value) = line.rsplit_once(' ')?;
        (sample == name).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_their_full_name() {
        let exposition = "# HELP x_total X\nx_total 3\ny_total{kind=\"a\"} 1.5\n";
        assert_eq!(metric(exposition, "x_total"), Some(3.0));
        assert_eq!(metric(exposition, "y_total{kind=\"a\"}"), Some(1.5));
        assert_eq!(metric(exposition, "y_total"), None);
    }
}
