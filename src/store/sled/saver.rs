//! The saver thread: applies the dispatcher's saves (the end of each claim), one group at a
//! time, in an order that any crash leaves safe.

use tokio::sync::oneshot;

use super::erase::{erased_save, Erasing};
use super::keys::{encode, key, message_index_keys, queue_key_of};
use crate::model::Notification;
use crate::store::threads::Joined;
use crate::store::{StoreError, StoreResult};

/// One write of a save: a key and its new value, or `None` to remove it.
pub(super) type Write = (Vec<u8>, Option<Vec<u8>>);
/// A save: the notification's id, its writes, and where to answer whether the notification
/// was saved as erased (see [`Erasing`]).
type SaveRequest = (String, Vec<Write>, oneshot::Sender<StoreResult<bool>>);

/// The dispatcher's saves (one after every turn of a notification) go to one thread that
/// applies every save waiting, one write after another. Why one thread: sled's writes cost
/// less from one thread than from many contending for the same leaves. Why not a
/// `sled::Batch`: sled seals and writes out its I/O buffer twice per batch (see
/// [`super::accept::AcceptStage`]). The order of a save's writes makes any prefix of them safe after a crash
/// (sled recovers a prefix): the record first, then its message-id index and its new queue
/// entry, and the entry it was claimed from last, so a crash leaves the notification queued
/// (sent again, or finished by its next turn if its record says it is done), never unqueued.
/// A claim is held until its save is applied, so the dispatcher never sees a save half done.
/// Dropping it stops the thread once it has applied every save it holds, and waits for it.
pub(super) struct Saver {
    requests: std::sync::mpsc::Sender<SaveRequest>,
    /// After `requests`: the channel closes before the join.
    _thread: Joined,
}

impl Saver {
    /// Most saves taken in one group (one hold of the `Erasing` lock).
    const MAX_GROUP: usize = 1024;

    pub(super) fn start(tree: sled::Tree, erasing: Erasing) -> StoreResult<Saver> {
        let (tx, rx) = std::sync::mpsc::channel::<SaveRequest>();
        let thread = Joined::spawn("lifeboat-saver", move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                while group.len() < Self::MAX_GROUP {
                    match rx.try_recv() {
                        Ok(more) => group.push(more),
                        Err(_) => break,
                    }
                }
                let mut failed: Option<sled::Error> = None;
                let mut erasing = erasing.lock().unwrap_or_else(|e| e.into_inner());
                for (id, writes, ack) in group {
                    // After a failed write sled is unusable: every later save fails too.
                    let answer = match &failed {
                        Some(e) => Err(StoreError::Io(e.clone())),
                        None => {
                            let erased = erasing.remove(&id);
                            let writes = if erased {
                                erased_save(writes)
                            } else {
                                Ok(writes)
                            };
                            writes.and_then(|writes| {
                                writes
                                    .into_iter()
                                    .try_for_each(|(k, v)| match v {
                                        Some(v) => tree.insert(k, v).map(drop),
                                        None => tree.remove(k).map(drop),
                                    })
                                    .map_err(|e| {
                                        failed = Some(e.clone());
                                        StoreError::Io(e)
                                    })
                                    .map(|()| erased)
                            })
                        }
                    };
                    let _ = ack.send(answer);
                }
                drop(erasing);
            }
        })
        .map_err(|source| StoreError::Start {
            what: "the store's saver",
            source,
        })?;
        Ok(Saver {
            requests: tx,
            _thread: thread,
        })
    }

    /// Applies `writes`, the save of notification `id`, in order. Says whether the notification
    /// was saved as erased instead (see [`Erasing`]).
    pub(super) async fn apply(&self, id: &str, writes: Vec<Write>) -> StoreResult<bool> {
        let (ack, done) = oneshot::channel();
        let stopped = || StoreError::Stopped {
            what: "the store's saver",
        };
        self.requests
            .send((id.to_string(), writes, ack))
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// The writes that save `n` after a turn, claimed from the queue entry `claimed_at`, and its
/// new queue entry if it goes back on the queue. In this order, so that any prefix of them
/// (what sled recovers after a crash) leaves `n` on the queue unless its record says it is
/// done: the record, its message-id index, its new queue entry, and only then the removal of
/// the entry it was claimed from.
pub(super) fn save_writes(
    n: &Notification,
    claimed_at: Option<Vec<u8>>,
) -> (Vec<Write>, Option<Vec<u8>>) {
    let mut writes: Vec<Write> = Vec::with_capacity(4);
    writes.push((key("n/", &[n.id.as_bytes()]), Some(encode(n))));
    writes.extend(message_index_keys(n).map(|k| (k, Some(n.id.as_bytes().to_vec()))));
    let requeued_at = n.queue_due().map(|due| queue_key_of(n, due));
    if let Some(qk) = &requeued_at {
        writes.push((qk.clone(), Some(Vec::new())));
    }
    if let Some(qk) = claimed_at.filter(|qk| requeued_at.as_ref() != Some(qk)) {
        writes.push((qk, None));
    }
    (writes, requeued_at)
}
