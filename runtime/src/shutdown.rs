//! One shutdown signal for every task and thread. `daemon::run` takes the future that fires
//! it (main passes SIGINT/SIGTERM, tests their own), fires the [`Trigger`] once, and then stops
//! the parts in the order written down in `daemon/mod.rs`. Outside sources watch [`Shutdown`] and
//! end; everything downstream of them ends by draining, when its input closes.

use tokio::sync::watch;

/// Fires the signal; dropping it fires it too.
pub struct Trigger {
    tx: watch::Sender<bool>,
    /// Dropped on fire: threads `select!` on the matching receiver disconnecting.
    threads: Option<crossbeam_channel::Sender<()>>,
}

/// Cloneable view of the signal, for async tasks and for threads alike.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    threads: crossbeam_channel::Receiver<()>,
}

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    let (threads_tx, threads) = crossbeam_channel::bounded(0);
    (
        Trigger {
            tx,
            threads: Some(threads_tx),
        },
        Shutdown { rx, threads },
    )
}

impl Trigger {
    pub fn fire(&mut self) {
        let _ = self.tx.send(true);
        self.threads = None;
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the signal has fired.
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which fires too.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }

    /// For threads: a receiver that disconnects when the signal fires (use it in `select!`).
    pub fn for_threads(&self) -> &crossbeam_channel::Receiver<()> {
        &self.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_for_tasks_and_threads() {
        let (mut trigger, shutdown) = channel();
        let mut task = shutdown.clone();
        let waiter = tokio::spawn(async move { task.wait().await });
        let thread = shutdown.clone();
        let joined = std::thread::spawn(move || thread.for_threads().recv().is_err());
        assert!(!shutdown.is_triggered());
        trigger.fire();
        waiter.await.unwrap();
        assert!(joined.join().unwrap());
        assert!(shutdown.is_triggered());
    }
}
