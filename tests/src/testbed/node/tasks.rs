//! Background tasks that must be gone, not just cancelled, when a node stops.
//!
//! The forwarders' sockets inside a node's network namespace keep that namespace alive
//! until they are closed, which happens when the tokio task owning them is dropped. A
//! [`TaskSet`] aborts its tasks and then waits (blocking, bounded) until every one of
//! them has been dropped, so a stopped node leaves no namespace behind.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// A set of tasks on one runtime that can be stopped synchronously.
#[derive(Debug, Clone)]
pub struct TaskSet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Handle,
    handles: Mutex<Vec<AbortHandle>>,
    live: AtomicUsize,
}

/// Counts a task as live until its future is dropped (finished or aborted).
struct Live(Arc<Inner>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TaskSet {
    /// An empty set whose tasks run on `runtime`.
    pub fn new(runtime: Handle) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                handles: Mutex::new(Vec::new()),
                live: AtomicUsize::new(0),
            }),
        }
    }

    /// The runtime the tasks run on.
    pub fn runtime(&self) -> &Handle {
        &self.inner.runtime
    }

    /// Spawns `task` into the set.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        let live = Live(self.inner.clone());
        let handle = self.inner.runtime.spawn(async move {
            let _live = live;
            task.await;
        });
        let mut handles = self
            .inner
            .handles
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        handles.retain(|h| !h.is_finished());
        handles.push(handle.abort_handle());
    }

    /// Aborts every task and waits up to `timeout` until all are dropped. Returns how
    /// many were still alive then (0 unless the runtime is blocked or gone).
    pub fn shutdown(&self, timeout: Duration) -> usize {
        let handles: Vec<AbortHandle> = self
            .inner
            .handles
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain(..)
            .collect();
        for handle in &handles {
            handle.abort();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.inner.live.load(Ordering::Acquire);
            if live == 0 || Instant::now() > deadline {
                return live;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_waits_until_every_task_is_dropped() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tasks = TaskSet::new(runtime.handle().clone());
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        for _ in 0..3 {
            let flag = Flag(dropped.clone());
            tasks.spawn(async move {
                let _flag = flag;
                std::future::pending::<()>().await;
            });
        }
        assert_eq!(tasks.shutdown(Duration::from_secs(5)), 0);
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    }
}
