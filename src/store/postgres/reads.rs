//! Contact reads of concurrent callers, grouped: the dispatcher's workers (the contact, read
//! fresh before each send) and the alerts (does the contact exist?; the API's accept checks
//! that inside its own statement, `accept.rs`) ask for one contact each, many at once. A couple of reader tasks each take every read waiting and answer them
//! with one `SELECT ... WHERE id = ANY($1)`: one round trip for the group instead of one per
//! caller (under load, a group is tens of reads). Every read still starts after its caller
//! asked, so it sees everything committed before the call.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::tally::Tally;
use super::{body, grouped, Result};
use crate::model::Contact;
use crate::store::StoreResult;

/// Most reads in one statement.
const MAX_GROUP: usize = 256;
/// Reader tasks (one collects while another waits for its answer).
pub(super) const READERS: usize = 2;

/// What a caller wants of one contact.
pub(super) enum Want {
    Exists(oneshot::Sender<StoreResult<bool>>),
    Body(oneshot::Sender<StoreResult<Option<Contact>>>),
}

pub(super) struct Request {
    pub id: String,
    pub want: Want,
}

/// Starts the readers; they stop when the returned sender (the store) is dropped.
pub(super) fn start(
    pool: Pool,
    location: String,
    readers: usize,
    tally: Arc<Tally>,
) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    let rx = Arc::new(grouped::Groups::new(rx, usize::MAX));
    for _ in 0..readers {
        let (pool, location, rx, tally) =
            (pool.clone(), location.clone(), rx.clone(), tally.clone());
        tokio::spawn(async move {
            while let Some((group, _in_flight)) = rx.next(MAX_GROUP).await {
                let ids: Vec<&str> = group.iter().map(|r| r.id.as_str()).collect();
                Tally::group(&tally.read_groups, &tally.reads, ids.len());
                match grouped::with_retries("reading contacts", || read(&pool, &tally, &ids)).await
                {
                    Ok(found) => {
                        for r in group {
                            match r.want {
                                Want::Exists(answer) => {
                                    let _ = answer.send(Ok(found.contains_key(&r.id)));
                                }
                                Want::Body(answer) => {
                                    let decoded = match found.get(&r.id) {
                                        None => Ok(None),
                                        Some(raw) => decode(raw, &r.id)
                                            .map(Some)
                                            .map_err(|e| e.into_store(&location)),
                                    };
                                    let _ = answer.send(decoded);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        for r in group {
                            let err = e.to_store(&location);
                            match r.want {
                                Want::Exists(answer) => drop(answer.send(Err(err))),
                                Want::Body(answer) => drop(answer.send(Err(err))),
                            }
                        }
                    }
                }
            }
        });
    }
    tx
}

/// The stored bodies of those of `ids` that exist, by id (undecoded: an existence check
/// needs no decoding).
async fn read(
    pool: &Pool,
    tally: &Tally,
    ids: &[&str],
) -> Result<HashMap<String, tokio_postgres::Row>> {
    let client = tally.get(pool).await?;
    let st = client
        .prepare_cached("SELECT id, body FROM contacts WHERE id = ANY($1)")
        .await?;
    let mut out = HashMap::with_capacity(ids.len());
    for row in client.query(&st, &[&ids]).await? {
        let id: String = row.try_get(0)?;
        out.insert(id, row);
    }
    Ok(out)
}

fn decode(row: &tokio_postgres::Row, id: &str) -> Result<Contact> {
    body(row, 1, id)
}
