//! Background work started while serving a request (a reply sent after the webhook's answer,
//! a retry a little later), owned by the gateway instead of detached: the shutdown stops what
//! is still running and no such task outlives the gateway that started it (nor keeps its store
//! open).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

/// The owner of the gateway's background tasks; cheap to clone (clones share the tasks).
#[derive(Clone)]
pub struct Background {
    /// `None` once stopped: nothing new starts.
    tasks: Arc<Mutex<Option<JoinSet<()>>>>,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            tasks: Arc::new(Mutex::new(Some(JoinSet::new()))),
        }
    }
}

impl Background {
    /// Runs `work` in the background until it ends or the gateway stops. `what` names it in
    /// the log if it is started during the shutdown (then it does not run).
    pub fn spawn(&self, what: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        match tasks.as_mut() {
            Some(set) => {
                // Forget the tasks that ended, so the set holds only running ones.
                while set.try_join_next().is_some() {}
                set.spawn(work);
            }
            None => tracing::info!(task = what, "not started: the gateway is stopping"),
        }
    }

    /// Stops every task still running (they are best-effort: a retry or a courtesy reply) and
    /// waits until they are gone. Later [`Background::spawn`]s run nothing.
    pub async fn stop(&self) {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut set) = tasks else {
            return;
        };
        while set.try_join_next().is_some() {}
        if !set.is_empty() {
            tracing::info!(count = set.len(), "stopping background tasks still running");
        }
        set.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Sets its flag when dropped (a task is dropped when it ends or is stopped).
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn stop_ends_running_tasks_and_later_ones_never_start() {
        let background = Background::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(stopped.clone());
        background.spawn("test", async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert!(!stopped.load(Ordering::SeqCst));
        background.stop().await;
        assert!(stopped.load(Ordering::SeqCst), "the task was stopped");

        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        background.spawn("late", async move { flag.store(true, Ordering::SeqCst) });
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst), "nothing starts after the stop");
    }
}
