//! Ownership of the store's threads: each handle that feeds a thread through a channel also
//! owns a [`Joined`] for it, declared after the channel's sender, so dropping the handle
//! closes the channel first (the thread finishes the work it holds and returns) and then waits
//! for the thread. Like mini-redis's `DbDropGuard`: the store's threads end with the store,
//! not with the process.

use std::thread::JoinHandle;

/// Joins its thread when dropped.
pub(super) struct Joined {
    name: &'static str,
    handle: Option<JoinHandle<()>>,
}

impl Joined {
    /// Starts `f` on a thread called `name`.
    pub(super) fn spawn(
        name: &'static str,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Joined> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(f)?;
        Ok(Joined {
            name,
            handle: Some(handle),
        })
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        // A thread never joins itself (a store dropped from its own thread).
        if handle.thread().id() == std::thread::current().id() {
            return;
        }
        if handle.join().is_err() {
            tracing::error!(thread = self.name, "a store thread panicked");
        }
    }
}
