//! The accept journal: an append-only log that makes accepted notifications durable with one
//! `fdatasync` per batch, instead of one sled flush per batch.
//!
//! Why: sled's `flush` writes back its whole page cache through its own thread pool; under a
//! stream of accepts that costs far more than the records themselves. So accepts go to one
//! committer thread: it takes every request waiting, applies them to sled (in memory) through
//! its [`Stage`], appends their records here with one write and one `fdatasync` (group
//! commit), and only then answers them; the 202 waits for that.
//!
//! The journal is a folder of segments (`00000000000000000001.log`, ...), each a sequence of
//! `[u32 length][u32 crc32][payload]` records. Every couple of seconds the committer starts a
//! new segment (also when idle, if the segment holds records) and hands the old ones to a
//! checkpoint thread, which flushes sled and then
//! deletes them: every record in an old segment was applied to sled before it was appended, so
//! a sled flush started afterwards covers it. After a crash, [`recover`] returns the
//! records of the segments still there; the store re-applies those sled lost and then starts
//! afresh. A torn record at the end of the last segment (a crash mid-write) was never
//! acknowledged and is ignored.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::threads::Joined;

/// How often the committer starts a new segment so old ones can be checkpointed away.
const ROTATE_EVERY: Duration = Duration::from_secs(2);
/// Most records written in one batch.
const MAX_BATCH: usize = 8192;

/// One staged request: the record to append (none if nothing is to be written) and its answer.
pub type Staged<A, E> = (Option<Vec<u8>>, Result<A, E>);

/// What the journal itself can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The records could not be written or synced: every request of the group gets it.
    #[error("writing the accept journal failed: {0}")]
    Write(#[source] std::sync::Arc<io::Error>),
    /// The committer thread is gone (the store is shutting down).
    #[error("the accept journal has stopped")]
    Stopped,
}

/// What the committer does with a group of requests before writing them: apply them (to the
/// store, in memory) and say, per request, which record to append (if any) and its answer.
/// Runs on the committer thread only, so it is the single writer of what it applies.
pub trait Stage: Send + 'static {
    type Item: Send + 'static;
    type Answer: Send + 'static;
    /// What a request fails with: a staging failure, or the journal's own.
    type Error: From<JournalError> + Send + 'static;
    fn stage(&mut self, items: Vec<Self::Item>) -> Vec<Staged<Self::Answer, Self::Error>>;
}

/// Appends raw records as they come (no staging): for tests.
#[cfg(test)]
pub struct Raw;

#[cfg(test)]
impl Stage for Raw {
    type Item = Vec<u8>;
    type Answer = ();
    type Error = JournalError;
    fn stage(&mut self, items: Vec<Vec<u8>>) -> Vec<Staged<(), JournalError>> {
        items.into_iter().map(|r| (Some(r), Ok(()))).collect()
    }
}

type Request<S> = (
    <S as Stage>::Item,
    oneshot::Sender<Result<<S as Stage>::Answer, <S as Stage>::Error>>,
);

/// Handle to the committer thread. Dropping it stops the committer (once it has answered
/// what it holds) and the checkpoint thread, and waits for both (fields drop in order: the
/// sender first).
pub struct Journal<S: Stage> {
    requests: mpsc::Sender<Request<S>>,
    _committer: Joined,
    /// Ends when the committer does (it holds the checkpoint's channel).
    _checkpoint: Joined,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads every record of the segments in `dir` (oldest first), stopping at a torn record.
pub fn recover(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    fs::create_dir_all(dir)?;
    let mut records = Vec::new();
    for (_, path) in segments(dir)? {
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let mut rest = &bytes[..];
        while rest.len() >= 8 {
            let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
            if len == 0 {
                // The zeroed, not yet written part of a preallocated segment.
                break;
            }
            if rest.len() < 8 + len {
                break;
            }
            let payload = &rest[8..8 + len];
            if crc32fast::hash(payload) != crc {
                break;
            }
            records.push(payload.to_vec());
            rest = &rest[8 + len..];
        }
    }
    Ok(records)
}

impl<S: Stage> Journal<S> {
    /// Starts a fresh journal in `dir`: the segments found there must already be applied and
    /// flushed (see [`recover`]); they are deleted. `stage` runs on the committer thread.
    pub fn start(dir: &Path, db: sled::Db, stage: S) -> io::Result<Journal<S>> {
        fs::create_dir_all(dir)?;
        let old = segments(dir)?;
        let next = old.last().map(|(s, _)| s + 1).unwrap_or(1);
        for (_, path) in old {
            fs::remove_file(path)?;
        }
        let file = create_segment(dir, next)?;
        let (tx, rx) = mpsc::channel::<Request<S>>();
        let (done_tx, done_rx) = mpsc::channel::<u64>();
        let checkpoint_dir = dir.to_path_buf();
        let checkpointer = Joined::spawn("lifeboat-checkpoint", move || {
            checkpoint(checkpoint_dir, db, done_rx)
        })?;
        let dir = dir.to_path_buf();
        let committer = Joined::spawn("lifeboat-journal", move || {
            commit(dir, file, next, rx, done_tx, stage)
        })?;
        Ok(Journal {
            requests: tx,
            _committer: committer,
            _checkpoint: checkpointer,
        })
    }

    /// Hands `item` to the committer and waits until its record is on disk.
    pub async fn append(&self, item: S::Item) -> Result<S::Answer, S::Error> {
        let (ack, done) = oneshot::channel();
        self.requests
            .send((item, ack))
            .map_err(|_| JournalError::Stopped)?;
        done.await.map_err(|_| JournalError::Stopped)?
    }
}

fn create_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(segment_name(seq)))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Size of a preallocated segment.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Writes a zero-filled segment ahead of time (on its own thread). Overwriting blocks that
/// already exist lets `fdatasync` skip the file-size and extent updates an append needs: on
/// this project's machines that halves the sync time.
fn prepare_segment(dir: PathBuf, seq: u64) -> std::thread::JoinHandle<io::Result<File>> {
    std::thread::spawn(move || {
        let path = dir.join(segment_name(seq));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..SEGMENT_BYTES / zeros.len() as u64 {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        sync_dir(&dir)?;
        Ok(file)
    })
}

/// The segment being written: appended to, or overwritten from the start when preallocated.
struct Segment {
    file: File,
    /// Where the next write goes, for a preallocated segment.
    offset: Option<u64>,
}

impl Segment {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.offset {
            Some(offset) => {
                use std::os::unix::fs::FileExt;
                self.file.write_all_at(buf, *offset)?;
                *offset += buf.len() as u64;
            }
            None => self.file.write_all(buf)?,
        }
        self.file.sync_data()
    }

    fn full(&self) -> bool {
        self.offset
            .is_some_and(|o| o >= SEGMENT_BYTES - (SEGMENT_BYTES / 8))
    }
}

/// The committer: takes every request waiting, stages them as one group, then one write and
/// one `fdatasync` for all their records, then answers them.
fn commit<S: Stage>(
    dir: PathBuf,
    file: File,
    mut seq: u64,
    requests: mpsc::Receiver<Request<S>>,
    retired: mpsc::Sender<u64>,
    mut stage: S,
) {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut rotated_at = Instant::now();
    let mut segment = Segment { file, offset: None };
    // The first preallocated segment is prepared at the first rotation: a gateway that never
    // sees two seconds of accepts never writes 64 MiB of zeros.
    let mut spare: Option<std::thread::JoinHandle<io::Result<File>>> = None;
    // Whether the segment being written holds records (an idle committer rotates it away).
    let mut written_since_rotation = false;
    loop {
        // Idle: a segment holding records is still rotated and checkpointed away, so that no
        // old record lingers there. (After a restart the journal's records are replayed into
        // sled: one lingering for days would bring back a notification the retention purge
        // deleted.)
        let first = match requests.recv_timeout(ROTATE_EVERY) {
            Ok(first) => Some(first),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let Some(first) = first else {
            if written_since_rotation {
                // No spare prepared: an idle gateway writes no 64 MiB of zeros.
                rotate(
                    &dir,
                    &mut segment,
                    &mut seq,
                    &mut spare,
                    &retired,
                    &mut rotated_at,
                    false,
                );
                written_since_rotation = false;
            }
            continue;
        };
        let mut items = vec![first];
        while items.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(more) => items.push(more),
                Err(_) => break,
            }
        }
        let (items, acks): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let staged = stage.stage(items);
        for (record, _) in &staged {
            if let Some(record) = record {
                buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
                buf.extend_from_slice(record);
            }
        }
        written_since_rotation |= !buf.is_empty();
        let written = if buf.is_empty() {
            Ok(())
        } else {
            segment.write(&buf).map_err(std::sync::Arc::new)
        };
        if let Err(e) = &written {
            tracing::error!(error = %e, "writing the accept journal failed");
        }
        buf.clear();
        for ((record, answer), ack) in staged.into_iter().zip(acks) {
            let answer = match (&written, record) {
                (Err(e), Some(_)) => Err(JournalError::Write(e.clone()).into()),
                _ => answer,
            };
            let _ = ack.send(answer);
        }
        if (rotated_at.elapsed() >= ROTATE_EVERY || segment.full())
            && rotate(
                &dir,
                &mut segment,
                &mut seq,
                &mut spare,
                &retired,
                &mut rotated_at,
                true,
            )
        {
            written_since_rotation = false;
        }
    }
    // Stopping: a segment still being prepared is waited for, not left to the process exit.
    if let Some(prepared) = spare.take() {
        let _ = prepared.join();
    }
}

/// Starts a new segment (the prepared spare if there is one) and hands the old one to the
/// checkpoint thread; prepares the next spare if `prepare`. Says whether it did.
#[allow(clippy::too_many_arguments)]
fn rotate(
    dir: &Path,
    segment: &mut Segment,
    seq: &mut u64,
    spare: &mut Option<std::thread::JoinHandle<io::Result<File>>>,
    retired: &mpsc::Sender<u64>,
    rotated_at: &mut Instant,
    prepare: bool,
) -> bool {
    let next = match spare.take().map(|prepared| prepared.join()) {
        Some(Ok(Ok(file))) => Ok(Segment {
            file,
            offset: Some(0),
        }),
        _ => create_segment(dir, *seq + 1).map(|file| Segment { file, offset: None }),
    };
    match next {
        Ok(next) => {
            *segment = next;
            let _ = retired.send(*seq);
            *seq += 1;
            *rotated_at = Instant::now();
            if prepare && spare.is_none() {
                *spare = Some(prepare_segment(dir.to_path_buf(), *seq + 1));
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start a new journal segment");
            false
        }
    }
}

/// Flushes sled, then deletes the segments it now covers.
fn checkpoint(dir: PathBuf, db: sled::Db, retired: mpsc::Receiver<u64>) {
    while let Ok(mut up_to) = retired.recv() {
        while let Ok(more) = retired.try_recv() {
            up_to = more;
        }
        if let Err(e) = db.flush() {
            tracing::error!(error = %e, "store flush for a journal checkpoint failed");
            continue;
        }
        match segments(&dir) {
            Ok(list) => {
                for (seq, path) in list {
                    if seq <= up_to {
                        if let Err(e) = fs::remove_file(&path) {
                            tracing::warn!(error = %e, "cannot delete a checkpointed journal segment");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list journal segments"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preallocated_segment_is_read_up_to_its_zeroed_tail() {
        let dir = tempfile::tempdir().unwrap();
        let file = prepare_segment(dir.path().to_path_buf(), 7)
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(file.metadata().unwrap().len(), SEGMENT_BYTES);
        let mut segment = Segment {
            file,
            offset: Some(0),
        };
        for record in [&b"first"[..], &b"second"[..]] {
            let mut buf = (record.len() as u32).to_le_bytes().to_vec();
            buf.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
            buf.extend_from_slice(record);
            segment.write(&buf).unwrap();
        }
        assert_eq!(
            recover(dir.path()).unwrap(),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
    }

    #[tokio::test]
    async fn appended_records_are_recovered_in_order_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("journal");
        let db = sled::Config::new().temporary(true).open().unwrap();
        {
            let journal = Journal::start(&jdir, db.clone(), Raw).unwrap();
            for i in 0..100u32 {
                journal
                    .append(format!("record {i}").into_bytes())
                    .await
                    .unwrap();
            }
        }
        // A crash in the middle of a write leaves a partial record at the end.
        let (_, last) = segments(&jdir).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();

        let records = recover(&jdir).unwrap();
        assert_eq!(records.len(), 100);
        assert_eq!(records[0], b"record 0");
        assert_eq!(records[99], b"record 99");

        // Starting afresh drops what was recovered.
        let _journal = Journal::start(&jdir, db, Raw).unwrap();
        assert!(recover(&jdir).unwrap().is_empty());
    }
}
