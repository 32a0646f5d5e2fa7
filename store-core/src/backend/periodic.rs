//! [`Periodic`]: the background timer behind every store's `start`/`stop` (feature `tokio`).

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A task that runs `tick` every interval on the caller's tokio runtime, first one interval after
/// [`Periodic::start`]. `tick` returns `None` when its owner is gone, which ends the task.
/// Starting a running timer and stopping a stopped one do nothing; dropping it stops it.
#[derive(Debug, Default)]
pub struct Periodic {
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Periodic {
    /// A stopped timer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the timer unless it runs. Fails `Unavailable` outside a tokio runtime.
    pub fn start<F, Fut>(&self, every: Duration, mut tick: F) -> Result<()>
    where
        F: FnMut() -> Option<Fut> + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::unavailable("a store's background timer needs a tokio runtime").with_source(e)
        })?;
        let mut slot = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        // Anchored now, not when the task first runs.
        let _entered = handle.enter();
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        *slot = Some(handle.spawn(async move {
            loop {
                interval.tick().await;
                match tick() {
                    Some(work) => work.await,
                    None => break,
                }
            }
        }));
        Ok(())
    }

    /// Stops the timer.
    pub fn stop(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = task {
            t.abort();
        }
    }

    /// Whether the timer runs.
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Moves tokio's paused clock `secs` seconds, one second at a time, letting due ticks run.
    async fn pass(secs: u64) {
        for _ in 0..secs {
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_every_interval_until_stopped_or_orphaned() {
        let count = Arc::new(AtomicUsize::new(0));
        let timer = Periodic::new();
        let c = Arc::clone(&count);
        timer
            .start(Duration::from_secs(10), move || {
                c.fetch_add(1, Ordering::SeqCst);
                Some(std::future::ready(()))
            })
            .unwrap();
        timer
            .start(Duration::from_secs(1), || None::<std::future::Ready<()>>)
            .unwrap(); // already running: ignored
        pass(35).await;
        assert_eq!(count.load(Ordering::SeqCst), 3);
        timer.stop();
        assert!(!timer.is_running());
        pass(100).await;
        assert_eq!(count.load(Ordering::SeqCst), 3);

        timer
            .start(Duration::from_secs(1), || None::<std::future::Ready<()>>)
            .unwrap();
        pass(2).await;
        assert!(!timer.is_running(), "an orphaned tick ends the task");
    }

    #[test]
    fn start_outside_a_runtime_is_unavailable() {
        let e = Periodic::new()
            .start(Duration::from_secs(1), || None::<std::future::Ready<()>>)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable);
    }
}
