//! Accepts, grouped: a few committer tasks each take every accept waiting (up to
//! [`MAX_GROUP`]) and write the group in one transaction: the idempotency keys by one
//! `INSERT ... ON CONFLICT` (the unique key decides between instances, an entry older than the
//! window is taken over), the contact patches, the notifications and their queue rows as
//! multi-row `UNNEST` inserts. The callers are answered after the `COMMIT`.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::Json;

use super::tally::Tally;
use super::{body, contact_lock_keys, grouped, ms, write_contacts, Fail, Result, LOCK_CONTACTS};
use crate::model::{Contact, Notification, Timestamp};
use crate::store::{AcceptOutcome, Lane, NewNotification, StoreResult, IDEMPOTENCY_WINDOW_SECS};

/// Most accepts in one transaction.
pub(super) const MAX_GROUP: usize = 512;
/// Transactions in flight at once (one collects while another commits).
pub(super) const COMMITTERS: usize = 3;
/// A group starts at once only while fewer than this many of these transactions are in
/// flight; else it collects until one ends ([`grouped::Groups`]): under load, fewer and larger
/// commits. Measured at 64 clients: 10 → 29 accepts per transaction, the server's CPU per
/// accept 46–50 → 28–30 µs (two instances: 5.5 → 14 per transaction, 73–76 → 46–49 µs).
const PARALLEL: usize = 1;

pub(super) struct Request {
    pub new: NewNotification,
    pub at: Timestamp,
    /// Its contact must exist (`Store::accept_known` without a patch): checked in the group's
    /// statement, `UnknownContact` if not.
    pub check_contact: bool,
    pub answer: oneshot::Sender<StoreResult<AcceptOutcome>>,
}

/// Starts the committers; they stop when the returned sender (the store) is dropped.
pub(super) fn start(
    pool: Pool,
    location: String,
    committers: usize,
    tally: Arc<Tally>,
) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    let rx = Arc::new(grouped::Groups::new(rx, PARALLEL));
    for _ in 0..committers {
        let (pool, location, rx, tally) =
            (pool.clone(), location.clone(), rx.clone(), tally.clone());
        tokio::spawn(async move {
            loop {
                let Some((group, in_flight)) = rx.next(MAX_GROUP).await else {
                    return;
                };
                let items: Vec<(&NewNotification, Timestamp)> =
                    group.iter().map(|r| (&r.new, r.at)).collect();
                let checks: Vec<bool> = group.iter().map(|r| r.check_contact).collect();
                Tally::group(&tally.accept_groups, &tally.accepts, items.len());
                let outcome = grouped::with_retries("accepting notifications", || {
                    apply(&pool, &tally, &items, &checks)
                })
                .await;
                drop(in_flight);
                drop(items);
                match outcome {
                    Ok(outcomes) => {
                        for (request, outcome) in group.into_iter().zip(outcomes) {
                            let _ = request.answer.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.to_store(&location), accepts = group.len(), "a group of accepts was not stored");
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

/// Writes one group in one transaction; the outcome of each, in order. `checks[i]`: the
/// contact of `items[i]` must exist.
async fn apply(
    pool: &Pool,
    tally: &Tally,
    items: &[(&NewNotification, Timestamp)],
    checks: &[bool],
) -> Result<Vec<AcceptOutcome>> {
    // No key and no patch that changes anything.
    let plain = items
        .iter()
        .all(|(new, _)| new.idempotency.is_none() && new.needs_known_contact());
    if plain {
        return insert_plain(pool, tally, items, checks).await;
    }
    let mut client = tally.get(pool).await?;
    let tx = client.transaction().await?;
    let n = items.len();
    let mut outcomes: Vec<Option<AcceptOutcome>> = vec![None; n];

    // Contacts that must exist, before any key is taken: an unknown one stores nothing.
    let to_check = contacts_to_check(items, checks);
    if !to_check.is_empty() {
        let st = tx.prepare_cached(KNOWN_CONTACTS).await?;
        let mut known = std::collections::HashSet::with_capacity(to_check.len());
        for row in tx.query(&st, &[&to_check]).await? {
            let id: String = row.try_get(0)?;
            known.insert(id);
        }
        for i in (0..n).filter(|&i| checks[i]) {
            if !known.contains(&items[i].0.notification.contact_id) {
                outcomes[i] = Some(AcceptOutcome::UnknownContact);
            }
        }
    }

    // Idempotency keys: the first of the group with a key tries to store it; later ones with
    // the same key answer against it.
    let mut first_with: HashMap<&str, usize> = HashMap::new();
    let mut later: Vec<(usize, usize)> = Vec::new();
    let (mut keys, mut key_ids, mut fingerprints, mut key_ats) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (new, at)) in items.iter().enumerate() {
        let (Some(idem), None) = (&new.idempotency, &outcomes[i]) else {
            continue;
        };
        match first_with.get(idem.key.as_str()) {
            Some(&first) => later.push((i, first)),
            None => {
                first_with.insert(idem.key.as_str(), i);
                keys.push(idem.key.as_str());
                key_ids.push(new.notification.id.as_str());
                fingerprints.push(idem.fingerprint.as_str());
                key_ats.push(*at);
            }
        }
    }
    // Earlier outcome per key (the stored entry's id and fingerprint) for keys not taken here.
    let mut earlier: HashMap<String, (String, String)> = HashMap::new();
    if !keys.is_empty() {
        let st = tx
            .prepare_cached(&format!(
                "INSERT INTO idempotency (key, notification_id, fingerprint, created_at) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(k, i, f, a) ORDER BY k \
                 ON CONFLICT (key) DO UPDATE SET notification_id = EXCLUDED.notification_id, \
                   fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at \
                 WHERE idempotency.created_at <= EXCLUDED.created_at - interval '{IDEMPOTENCY_WINDOW_SECS} seconds' \
                 RETURNING key"
            ))
            .await?;
        let rows = tx
            .query(&st, &[&keys, &key_ids, &fingerprints, &key_ats])
            .await?;
        let mut taken = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            let k: String = row.try_get(0)?;
            taken.insert(k);
        }
        let conflicting: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !taken.contains(*k))
            .collect();
        if !conflicting.is_empty() {
            let st = tx
                .prepare_cached(
                    "SELECT key, notification_id, fingerprint FROM idempotency WHERE key = ANY($1)",
                )
                .await?;
            for row in tx.query(&st, &[&conflicting]).await? {
                earlier.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
            }
        }
        for k in conflicting {
            let i = first_with[k];
            let Some((id, fingerprint)) = earlier.get(k) else {
                // Deleted between the insert and the read (the purge): store it again.
                return Err(Fail::Retry);
            };
            let mine = &items[i].0.idempotency.as_ref().expect("keyed").fingerprint;
            outcomes[i] = Some(answer(mine, fingerprint, id));
        }
    }
    for (i, first) in later {
        let mine = &items[i].0.idempotency.as_ref().expect("keyed").fingerprint;
        outcomes[i] = Some(match &outcomes[first] {
            // The first of the group is created: answer against it.
            None => {
                let theirs = &items[first]
                    .0
                    .idempotency
                    .as_ref()
                    .expect("keyed")
                    .fingerprint;
                answer(mine, theirs, &items[first].0.notification.id)
            }
            Some(AcceptOutcome::Duplicate { id } | AcceptOutcome::Conflict { id }) => {
                let k = &items[i].0.idempotency.as_ref().expect("keyed").key;
                let (_, theirs) = &earlier[k.as_str()];
                answer(mine, theirs, id)
            }
            Some(AcceptOutcome::Created | AcceptOutcome::UnknownContact) => {
                unreachable!("a first with a key is created, a duplicate or a conflict")
            }
        });
    }

    let created: Vec<usize> = (0..n).filter(|&i| outcomes[i].is_none()).collect();

    // Contact patches of the created ones, in the group's order.
    let patched: Vec<usize> = created
        .iter()
        .copied()
        .filter(|&i| {
            items[i]
                .0
                .contact_patch
                .as_ref()
                .is_some_and(|p| !p.is_empty())
        })
        .collect();
    if !patched.is_empty() {
        let mut ids: Vec<&str> = patched
            .iter()
            .map(|&i| items[i].0.notification.contact_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let st = tx
            .prepare_cached("SELECT id, body FROM contacts WHERE id = ANY($1)")
            .await?;
        // Pipelined: the read runs on the server after the locks are granted (a statement of
        // its own: it sees what the lock holders committed).
        // Both prepared first, so that the lock's request is sent before the read's.
        let lock = tx.prepare_cached(LOCK_CONTACTS).await?;
        let keys = contact_lock_keys(&ids);
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&keys];
        let read_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let (locked, read) =
            tokio::join!(tx.query(&lock, &lock_params), tx.query(&st, &read_params));
        locked?;
        let mut stored: HashMap<String, Contact> = HashMap::new();
        for row in read? {
            let id: String = row.try_get(0)?;
            let c: Contact = body(&row, 1, &id)?;
            stored.insert(id, c);
        }
        let mut current: HashMap<String, Contact> = stored.clone();
        let mut changed: Vec<String> = Vec::new();
        for &i in &patched {
            let (new, at) = items[i];
            let id = &new.notification.contact_id;
            let patch = new.contact_patch.as_ref().expect("patched");
            let old = current.get(id).cloned();
            let mut contact = old.clone().unwrap_or_else(|| Contact::new(id, at));
            contact.apply(patch, at);
            // The same `to` with every notification: nothing to write.
            let unchanged = old.as_ref().is_some_and(|old| {
                *old == Contact {
                    updated_at: old.updated_at,
                    ..contact.clone()
                }
            });
            if !unchanged {
                if !changed.contains(id) {
                    changed.push(id.clone());
                }
                current.insert(id.clone(), contact);
            }
        }
        let writes: Vec<(Option<Contact>, Contact)> = changed
            .iter()
            .map(|id| (stored.get(id).cloned(), current[id].clone()))
            .collect();
        write_contacts(&tx, &writes).await?;
    }

    if !created.is_empty() {
        let rows = Rows::of(items, &created);
        let st_n = tx.prepare_cached(INSERT_NOTIFICATIONS).await?;
        let st_q = tx.prepare_cached(INSERT_QUEUE).await?;
        // Pipelined: both go out before either answer is awaited.
        let (params_n, params_q) = (rows.notification_params(), rows.queue_params());
        let (a, b) = tokio::join!(tx.execute(&st_n, &params_n), tx.execute(&st_q, &params_q));
        a?;
        b?;
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(AcceptOutcome::Created))
        .collect())
}

const INSERT_NOTIFICATIONS: &str =
    "INSERT INTO notifications (id, contact_id, status, updated_at, body) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[])";
const INSERT_QUEUE: &str = "INSERT INTO queue (id, available_at, lane) \
     SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[])";
/// Both inserts as one statement, which PostgreSQL runs (and commits) as one transaction.
const INSERT_BOTH: &str =
    "WITH n AS (INSERT INTO notifications (id, contact_id, status, updated_at, body) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[])) \
     INSERT INTO queue (id, available_at, lane) \
     SELECT * FROM unnest($1::text[], $6::timestamptz[], $7::text[])";

/// [`INSERT_BOTH`] for a group with contacts that must exist (`$8[i]`: row `i`'s must;
/// `$9`: those contacts, once each): rows whose contact is missing are left out, and the ids
/// inserted come back. The contacts are looked up by their primary key once each (a
/// `= ANY` index scan), not probed per row, so the plan does not depend on the table's size.
const INSERT_BOTH_KNOWN: &str =
    "WITH known AS MATERIALIZED (SELECT id FROM contacts WHERE id = ANY($9::text[])), \
     u AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], \
                                             $6::timestamptz[], $7::text[], $8::bool[]) \
           AS u(id, contact_id, status, updated_at, body, due, lane, must) \
         WHERE NOT u.must OR u.contact_id IN (SELECT id FROM known)), \
     n AS (INSERT INTO notifications (id, contact_id, status, updated_at, body) \
           SELECT id, contact_id, status, updated_at, body FROM u) \
     INSERT INTO queue (id, available_at, lane) SELECT id, due, lane FROM u RETURNING id";
/// The contacts among `$1` that exist.
const KNOWN_CONTACTS: &str = "SELECT id FROM contacts WHERE id = ANY($1)";

/// A group with no idempotency key and no contact patch: nothing to decide on the server, so
/// the notifications and their queue rows go in one statement, committed on its own (one
/// round trip instead of `BEGIN`, the inserts and `COMMIT`: a group's fixed cost, which
/// weighs most where groups are small, as on each instance of a fleet).
async fn insert_plain(
    pool: &Pool,
    tally: &Tally,
    items: &[(&NewNotification, Timestamp)],
    checks: &[bool],
) -> Result<Vec<AcceptOutcome>> {
    let client = tally.get(pool).await?;
    let all: Vec<usize> = (0..items.len()).collect();
    let rows = Rows::of(items, &all);
    if !checks.contains(&true) {
        let st = client.prepare_cached(INSERT_BOTH).await?;
        client.execute(&st, &rows.both_params()).await?;
        return Ok(vec![AcceptOutcome::Created; items.len()]);
    }
    let to_check = contacts_to_check(items, checks);
    let st = client.prepare_cached(INSERT_BOTH_KNOWN).await?;
    let [a, b, c, d, e, f, g] = rows.both_params();
    let inserted = client
        .query(&st, &[a, b, c, d, e, f, g, &checks, &to_check])
        .await?;
    if inserted.len() == items.len() {
        return Ok(vec![AcceptOutcome::Created; items.len()]);
    }
    let mut created = std::collections::HashSet::with_capacity(inserted.len());
    for row in &inserted {
        let id: &str = row.try_get(0)?;
        created.insert(id);
    }
    Ok(rows
        .ids
        .iter()
        .map(|id| match created.contains(id) {
            true => AcceptOutcome::Created,
            false => AcceptOutcome::UnknownContact,
        })
        .collect())
}

/// The columns of the created notifications and their queue rows, as arrays for `unnest`.
struct Rows<'a> {
    ids: Vec<&'a str>,
    contacts: Vec<&'a str>,
    statuses: Vec<&'a str>,
    updated: Vec<Timestamp>,
    bodies: Vec<Json<&'a Notification>>,
    dues: Vec<Timestamp>,
    lanes: Vec<&'static str>,
}

impl<'a> Rows<'a> {
    fn of(items: &[(&'a NewNotification, Timestamp)], created: &[usize]) -> Rows<'a> {
        let n = created.len();
        let mut rows = Rows {
            ids: Vec::with_capacity(n),
            contacts: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            updated: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            dues: Vec::with_capacity(n),
            lanes: Vec::with_capacity(n),
        };
        for &i in created {
            let (new, at) = items[i];
            let note = &new.notification;
            rows.ids.push(note.id.as_str());
            rows.contacts.push(note.contact_id.as_str());
            rows.statuses.push(note.status.as_str());
            rows.updated.push(note.updated_at);
            rows.bodies.push(Json(note));
            rows.dues.push(ms(note.next_attempt_at.unwrap_or(at)));
            rows.lanes.push(Lane::of(note).as_str());
        }
        rows
    }

    fn notification_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [
            &self.ids,
            &self.contacts,
            &self.statuses,
            &self.updated,
            &self.bodies,
        ]
    }

    fn queue_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 3] {
        [&self.ids, &self.dues, &self.lanes]
    }

    fn both_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.ids,
            &self.contacts,
            &self.statuses,
            &self.updated,
            &self.bodies,
            &self.dues,
            &self.lanes,
        ]
    }
}

/// The contacts that must exist (`checks[i]`), once each.
fn contacts_to_check<'a>(
    items: &[(&'a NewNotification, Timestamp)],
    checks: &[bool],
) -> Vec<&'a str> {
    let mut ids: Vec<&str> = (items.iter().zip(checks))
        .filter(|(_, &check)| check)
        .map(|((new, _), _)| new.notification.contact_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn answer(mine: &str, theirs: &str, id: &str) -> AcceptOutcome {
    if mine == theirs {
        AcceptOutcome::Duplicate { id: id.to_string() }
    } else {
        AcceptOutcome::Conflict { id: id.to_string() }
    }
}
