//! What every hepbatch binary does around its real work, written once:
//!
//! - [`logging`]: structured logs on stderr, as text or JSON, coloured only at a terminal;
//! - [`shutdown`]: SIGTERM and SIGINT turned into one [`CancellationToken`] that every
//!   task of the process watches;
//! - [`admin`]: the admin HTTP server with `/livez`, `/readyz`, `/healthz` and `/metrics`,
//!   which stops when that token is cancelled.
//!
//! The binaries keep what is theirs (flags, the Kubernetes client, the CSI sockets) and
//! hand this crate only closures: what "ready" means and how metrics are encoded.

pub mod admin;
pub mod logging;
pub mod shutdown;

pub use tokio_util::sync::CancellationToken;
