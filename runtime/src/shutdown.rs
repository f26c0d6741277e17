//! A graceful stop: SIGTERM or SIGINT cancels one [`CancellationToken`].
//!
//! Each part of a process takes the token (or a child of it) and stops its work when it is
//! cancelled; the process itself can cancel it too, when one part fails and the others
//! must stop with it.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// A token cancelled on the first SIGTERM or SIGINT; needs a running Tokio runtime.
///
/// The handlers are installed before this returns, so a signal that arrives afterwards
/// is never lost to the default action (ending the process at once).
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    let cancel = token.clone();
    tokio::spawn(async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
                _ = terminate.recv() => info!(signal = "SIGTERM", "stopping"),
                _ = interrupt.recv() => info!(signal = "SIGINT", "stopping"),
            },
            (Err(error), Ok(mut interrupt)) | (Ok(mut interrupt), Err(error)) => {
                error!(%error, "cannot listen for one of SIGTERM and SIGINT; stopping on the other");
                interrupt.recv().await;
                info!("stopping");
            }
            (Err(error), Err(_)) => {
                error!(%error, "cannot listen for SIGTERM or SIGINT; stop by killing the process");
                return;
            }
        }
        cancel.cancel();
    });
    token
}
