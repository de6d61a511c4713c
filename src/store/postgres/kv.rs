//! The `kv` table: small records of other modules, by namespace and key. Keys compare in byte
//! order (`COLLATE "C"`), so a prefix scan is a key range, with no `LIKE` pattern made of
//! user data. A relaxed write commits with `synchronous_commit = off` (durable within
//! moments, like the embedded store's periodic flush).

use deadpool_postgres::GenericClient;

use super::{Fail, PgStore, Result};
use crate::store::{namespaces, Durability, KvEdit};

/// One statement committed without waiting for the WAL flush: `set_config(.., true)` sets it
/// for the statement's own (implicit) transaction.
const RELAXED: &str = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) ";

/// The statement's `WITH relaxed` prefix for a relaxed write, and `tail` (which must reference
/// `relaxed`, so that the CTE runs); both empty for a durable one.
fn durability_sql(durability: Durability, tail: &'static str) -> (&'static str, &'static str) {
    match durability {
        Durability::Durable => ("", ""),
        Durability::Relaxed => (RELAXED, tail),
    }
}

pub(super) async fn get(store: &PgStore, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
    let client = store.client().await?;
    let st = client
        .prepare_cached("SELECT value FROM kv WHERE namespace = $1 AND key = $2")
        .await?;
    Ok(client
        .query_opt(&st, &[&namespace, &key])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?)
}

pub(super) async fn put(
    store: &PgStore,
    namespace: &str,
    key: &str,
    value: &[u8],
    durability: Durability,
) -> Result<()> {
    let client = store.client().await?;
    let (prefix, from) = durability_sql(durability, " FROM relaxed");
    let st = client
        .prepare_cached(&format!(
            "{prefix}INSERT INTO kv (namespace, key, value, updated_at) SELECT $1, $2, $3, now(){from} \
             ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
        ))
        .await?;
    client.execute(&st, &[&namespace, &key, &value]).await?;
    Ok(())
}

/// Several relaxed puts as one statement (`unnest` of the keys and values). A key given twice
/// keeps its last value (one `INSERT ... ON CONFLICT DO UPDATE` must not touch a row twice).
pub(super) async fn put_many_relaxed(
    store: &PgStore,
    namespace: &str,
    records: &[(String, Vec<u8>)],
) -> Result<()> {
    let mut last: std::collections::BTreeMap<&str, &[u8]> = std::collections::BTreeMap::new();
    for (key, value) in records {
        last.insert(key.as_str(), value.as_slice());
    }
    let keys: Vec<&str> = last.keys().copied().collect();
    let values: Vec<&[u8]> = last.values().copied().collect();
    let client = store.client().await?;
    let st = client
        .prepare_cached(&format!(
            "{RELAXED}INSERT INTO kv (namespace, key, value, updated_at) \
             SELECT $1, r.key, r.value, now() FROM unnest($2::text[], $3::bytea[]) AS r(key, value), relaxed \
             ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
        ))
        .await?;
    client.execute(&st, &[&namespace, &keys, &values]).await?;
    Ok(())
}

pub(super) async fn insert_new(
    store: &PgStore,
    namespace: &str,
    key: &str,
    value: &[u8],
) -> Result<bool> {
    let client = store.client().await?;
    let st = client
        .prepare_cached(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES ($1, $2, $3, now()) \
             ON CONFLICT (namespace, key) DO NOTHING",
        )
        .await?;
    Ok(client.execute(&st, &[&namespace, &key, &value]).await? == 1)
}

pub(super) async fn delete(
    store: &PgStore,
    namespace: &str,
    key: &str,
    durability: Durability,
) -> Result<()> {
    let client = store.client().await?;
    let (prefix, and) = durability_sql(durability, " AND EXISTS (SELECT 1 FROM relaxed)");
    let st = client
        .prepare_cached(&format!(
            "{prefix}DELETE FROM kv WHERE namespace = $1 AND key = $2{and}"
        ))
        .await?;
    client.execute(&st, &[&namespace, &key]).await?;
    Ok(())
}

/// The read-modify-write: the row locked (`FOR UPDATE`) while `edit` runs; a record absent
/// when read is inserted with `ON CONFLICT DO NOTHING`, and if another writer inserted it
/// meanwhile, the whole update runs again on what that one wrote. With `announce` (a channel
/// and payload), a change (not an edit that left the record as it was) also sends
/// `pg_notify` in the same transaction: delivered at the commit, only if it commits. Says
/// what the record holds after it, and whether it announced.
pub(super) async fn update(
    store: &PgStore,
    namespace: &str,
    key: &str,
    mut edit: KvEdit,
    durability: Durability,
    announce: Option<(&str, &str)>,
) -> Result<(Option<Vec<u8>>, bool)> {
    let mut client = store.client().await?;
    loop {
        let tx = client.transaction().await?;
        if durability == Durability::Relaxed {
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
        }
        let st = tx
            .prepare_cached("SELECT value FROM kv WHERE namespace = $1 AND key = $2 FOR UPDATE")
            .await?;
        let old: Option<Vec<u8>> = tx
            .query_opt(&st, &[&namespace, &key])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let new = edit(old.as_deref());
        match (&old, &new) {
            (Some(_), Some(value)) => {
                let st = tx
                    .prepare_cached(
                        "UPDATE kv SET value = $3, updated_at = now() WHERE namespace = $1 AND key = $2",
                    )
                    .await?;
                tx.execute(&st, &[&namespace, &key, value]).await?;
            }
            (Some(_), None) => {
                let st = tx
                    .prepare_cached("DELETE FROM kv WHERE namespace = $1 AND key = $2")
                    .await?;
                tx.execute(&st, &[&namespace, &key]).await?;
            }
            (None, Some(value)) => {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO kv (namespace, key, value, updated_at) VALUES ($1, $2, $3, now()) \
                         ON CONFLICT (namespace, key) DO NOTHING",
                    )
                    .await?;
                if tx.execute(&st, &[&namespace, &key, value]).await? == 0 {
                    // Another writer created it since the read: again, on its value.
                    tx.rollback().await?;
                    continue;
                }
            }
            (None, None) => {}
        }
        let announced = match announce {
            Some((channel, payload)) if old != new => {
                let st = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
                tx.execute(&st, &[&channel, &payload]).await?;
                true
            }
            _ => false,
        };
        tx.commit().await?;
        return Ok((new, announced));
    }
}

/// The smallest string greater than every string starting with `prefix`, if there is one
/// (in byte order: the prefix with its last byte below 0xff raised by one, as UTF-8 allows).
fn upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value (skipping the surrogates).
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            0x10FFFF => None,
            c => char::from_u32(c + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

pub(super) async fn scan(
    store: &PgStore,
    namespace: &str,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let client = store.client().await?;
    let upper = upper_bound(prefix);
    let st = client
        .prepare_cached(
            "SELECT key, value FROM kv WHERE namespace = $1 AND key >= $2 \
             AND ($3::text IS NULL OR key < $3) ORDER BY key",
        )
        .await?;
    let rows = client.query(&st, &[&namespace, &prefix, &upper]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
        .map(|all| {
            all.into_iter()
                .filter(|(k, _): &(String, Vec<u8>)| k.starts_with(prefix))
                .collect()
        })
        .map_err(Fail::from)
}

/// At most `limit` records of `namespace` under `prefix` with keys after `after`, in key
/// order: a range read on the primary key.
pub(super) async fn scan_page(
    store: &PgStore,
    namespace: &str,
    prefix: &str,
    after: &str,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>> {
    let client = store.client().await?;
    let upper = upper_bound(prefix);
    let st = client
        .prepare_cached(
            "SELECT key, value FROM kv WHERE namespace = $1 AND key >= $2 AND key > $3 \
             AND ($4::text IS NULL OR key < $4) ORDER BY key LIMIT $5",
        )
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(&st, &[&namespace, &prefix, &after, &upper, &limit])
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
        .map(|all| {
            all.into_iter()
                .filter(|(k, _): &(String, Vec<u8>)| k.starts_with(prefix))
                .collect()
        })
        .map_err(Fail::from)
}

/// What an erasure does to the records other modules keep about contact `id` (as the
/// embedded store does): its marketing cap record, opt-in tokens and the WhatsApp marketing
/// hold (131049) on its number `whatsapp` go, its entries in the WhatsApp tier ledger are
/// renamed to an anonymous id (the person still counts toward the 24 h tier). Returns how
/// many records it changed.
pub(super) async fn erase_mentions(
    tx: &impl GenericClient,
    id: &str,
    whatsapp: Option<&str>,
) -> Result<u64> {
    let mut changed = 0;
    let st = tx
        .prepare_cached("DELETE FROM kv WHERE namespace = $1 AND key = $2")
        .await?;
    changed += tx
        .execute(&st, &[&namespaces::POLICY_MARKETING_SENDS, &id])
        .await?;
    if let Some(number) = whatsapp {
        // Under the number's digest, and under the number itself (earlier versions).
        for key in [namespaces::marketing_hold_key(number), number.to_string()] {
            changed += tx
                .execute(&st, &[&namespaces::WHATSAPP_MARKETING_HOLDS, &key])
                .await?;
        }
    }

    let st = tx
        .prepare_cached("SELECT key, value FROM kv WHERE namespace = $1")
        .await?;
    let mut gone = Vec::new();
    for row in tx.query(&st, &[&namespaces::OPTIN]).await? {
        let value: Vec<u8> = row.try_get(1)?;
        let token: Option<crate::model::OptinToken> = serde_json::from_slice(&value).ok();
        if token.is_some_and(|t| t.contact_id == id) {
            gone.push(row.try_get::<_, String>(0)?);
        }
    }
    if !gone.is_empty() {
        let st = tx
            .prepare_cached("DELETE FROM kv WHERE namespace = $1 AND key = ANY($2)")
            .await?;
        changed += tx.execute(&st, &[&namespaces::OPTIN, &gone]).await?;
    }

    // `whatsapp/<hour>/<contact>` entries of this contact, and the `whatsapp/<hour>` lists of
    // earlier versions.
    let st = tx
        .prepare_cached(
            "SELECT key, value FROM kv WHERE namespace = $1 AND key >= 'whatsapp/' AND key < 'whatsapp0' \
             AND (right(key, char_length($2) + 1) = '/' || $2 OR strpos(substr(key, 10), '/') = 0)",
        )
        .await?;
    let rows = tx.query(&st, &[&namespaces::POLICY_TIER, &id]).await?;
    let rename = tx
        .prepare_cached(
            "UPDATE kv SET key = $3, updated_at = now() WHERE namespace = $1 AND key = $2",
        )
        .await?;
    let rewrite = tx
        .prepare_cached(
            "UPDATE kv SET value = $3, updated_at = now() WHERE namespace = $1 AND key = $2",
        )
        .await?;
    for row in rows {
        let key: String = row.try_get(0)?;
        let value: Vec<u8> = row.try_get(1)?;
        let anonymous = || format!("erased.{}", uuid::Uuid::new_v4().simple());
        let rest = &key["whatsapp/".len()..];
        match rest.split_once('/') {
            Some((hour, contact)) if contact == id => {
                let renamed = format!("whatsapp/{hour}/{}", anonymous());
                changed += tx
                    .execute(&rename, &[&namespaces::POLICY_TIER, &key, &renamed])
                    .await?;
            }
            Some(_) => {}
            None => {
                let Ok(mut ids) = serde_json::from_slice::<Vec<String>>(&value) else {
                    continue;
                };
                if let Some(at) = ids.iter().position(|c| c == id) {
                    ids[at] = anonymous();
                    let bytes = serde_json::to_vec(&ids).expect("a list of strings");
                    changed += tx
                        .execute(&rewrite, &[&namespaces::POLICY_TIER, &key, &bytes])
                        .await?;
                }
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::upper_bound;

    #[test]
    fn the_upper_bound_of_a_prefix_is_above_every_key_starting_with_it() {
        assert_eq!(upper_bound("tok").as_deref(), Some("tol"));
        assert_eq!(upper_bound(""), None);
        assert_eq!(upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert!("tok\u{10FFFF}zz" < upper_bound("tok").unwrap().as_str());
    }
}
