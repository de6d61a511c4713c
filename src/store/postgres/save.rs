//! The dispatcher's saves, grouped: a few saver tasks each take every save waiting and apply
//! them in one transaction. The notifications' rows are locked first (in id order, as an
//! erasure locks them), so an erasure racing a save wins either way: a save applied first is
//! erased with the rest; a save coming after finds the row marked `erased` and stores the
//! erased form of what it carries (no content, no contact, no message ids, off the queue).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::Json;

use super::tally::Tally;
use super::{erase_content, grouped, ms, Result};
use crate::model::Notification;
use crate::store::{Lane, StoreResult};

/// Most saves in one transaction.
const MAX_GROUP: usize = 512;
/// Transactions in flight at once.
pub(super) const SAVERS: usize = 2;
/// Every save group starts at once (`usize::MAX` in flight), unlike accepts: holding saves
/// back while another is in flight made larger groups (43 saves a transaction instead of 20 on
/// one instance) but cost two instances more CPU per notification (280–301 µs against
/// 243–271 µs in the same runs), so the saves keep their latency.
const PARALLEL: usize = usize::MAX;

pub(super) struct Request {
    pub n: Notification,
    pub answer: oneshot::Sender<StoreResult<()>>,
}

/// Starts the savers; they stop when the returned sender (the store) is dropped.
pub(super) fn start(
    pool: Pool,
    location: String,
    savers: usize,
    tally: Arc<Tally>,
) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    let rx = Arc::new(grouped::Groups::new(rx, PARALLEL));
    for _ in 0..savers {
        let (pool, location, rx, tally) =
            (pool.clone(), location.clone(), rx.clone(), tally.clone());
        tokio::spawn(async move {
            loop {
                let Some((group, in_flight)) = rx.next(MAX_GROUP).await else {
                    return;
                };
                Tally::group(&tally.save_groups, &tally.saves, group.len());
                let outcome =
                    grouped::with_retries("saving notifications", || apply(&pool, &tally, &group))
                        .await;
                drop(in_flight);
                match outcome {
                    Ok(()) => {
                        for request in group {
                            let _ = request.answer.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        for request in group {
                            let _ = request.answer.send(Err(e.to_store(&location)));
                        }
                    }
                }
            }
        });
    }
    tx
}

async fn apply(pool: &Pool, tally: &Tally, group: &[Request]) -> Result<()> {
    // The last save of a notification in the group is the one that counts.
    let mut last: HashMap<&str, &Notification> = HashMap::with_capacity(group.len());
    for r in group {
        last.insert(r.n.id.as_str(), &r.n);
    }
    let mut ids: Vec<&str> = last.keys().copied().collect();
    ids.sort_unstable();

    let mut client = tally.get(pool).await?;
    let tx = client.transaction().await?;
    let lock = tx
        .prepare_cached(
            "SELECT id, erased FROM notifications WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .await?;
    let mut erased: HashSet<String> = HashSet::new();
    for row in tx.query(&lock, &[&ids]).await? {
        if row.try_get::<_, bool>(1)? {
            erased.insert(row.try_get(0)?);
        }
    }

    let mut saved: Vec<Notification> = Vec::with_capacity(ids.len());
    let (mut requeue, mut requeue_at, mut requeue_lane, mut dequeue) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        let mut n = last[id].clone();
        if erased.contains(*id) {
            let at = n.updated_at;
            erase_content(&mut n, at);
            dequeue.push(*id);
        } else {
            match n.queue_due() {
                Some(due) => {
                    requeue.push(*id);
                    requeue_at.push(ms(due));
                    requeue_lane.push(Lane::of(&n).as_str());
                }
                None => dequeue.push(*id),
            }
        }
        saved.push(n);
    }
    let statuses: Vec<&str> = saved.iter().map(|n| n.status.as_str()).collect();
    let contacts: Vec<&str> = saved.iter().map(|n| n.contact_id.as_str()).collect();
    let updated: Vec<_> = saved.iter().map(|n| n.updated_at).collect();
    let bodies: Vec<Json<&Notification>> = saved.iter().map(Json).collect();
    let st_n = tx
        .prepare_cached(
            "UPDATE notifications n SET status = u.status, contact_id = u.contact_id, \
             updated_at = u.updated_at, body = u.body \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[]) \
               AS u(id, status, contact_id, updated_at, body) \
             WHERE n.id = u.id",
        )
        .await?;
    let st_r = tx
        .prepare_cached(
            "INSERT INTO queue (id, available_at, owner, lane) \
             SELECT id, at, NULL, lane FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS u(id, at, lane) \
             ON CONFLICT (id) DO UPDATE SET available_at = EXCLUDED.available_at, owner = NULL, \
             lane = EXCLUDED.lane",
        )
        .await?;
    let st_d = tx
        .prepare_cached("DELETE FROM queue WHERE id = ANY($1)")
        .await?;
    let kept: Vec<Notification> = saved
        .iter()
        .filter(|n| !erased.contains(&n.id))
        .cloned()
        .collect();
    // Pipelined: every statement goes out before the answers are awaited.
    let params_n: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&ids, &statuses, &contacts, &updated, &bodies];
    let (a, b, c, d) = tokio::join!(
        tx.execute(&st_n, &params_n),
        async {
            if requeue.is_empty() {
                Ok(0)
            } else {
                tx.execute(&st_r, &[&requeue, &requeue_at, &requeue_lane])
                    .await
            }
        },
        async {
            if dequeue.is_empty() {
                Ok(0)
            } else {
                tx.execute(&st_d, &[&dequeue]).await
            }
        },
        index_message_ids(&tx, &kept),
    );
    a?;
    b?;
    c?;
    d?;
    tx.commit().await?;
    Ok(())
}

/// Points the provider message ids of `saved`'s attempts at their notifications.
pub(super) async fn index_message_ids(
    tx: &impl GenericClient,
    saved: &[Notification],
) -> Result<()> {
    let mut index: HashMap<(&str, &str), &str> = HashMap::new();
    for n in saved {
        for a in &n.attempts {
            if let Some(mid) = a.provider_message_id.as_deref() {
                index.insert((a.channel.as_str(), mid), n.id.as_str());
            }
        }
    }
    if index.is_empty() {
        return Ok(());
    }
    let (mut channels, mut mids, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for ((channel, mid), id) in index {
        channels.push(channel);
        mids.push(mid);
        ids.push(id);
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO message_ids (channel, message_id, notification_id) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (channel, message_id) DO UPDATE SET notification_id = EXCLUDED.notification_id \
             WHERE message_ids.notification_id <> EXCLUDED.notification_id",
        )
        .await?;
    tx.execute(&st, &[&channels, &mids, &ids]).await?;
    Ok(())
}
