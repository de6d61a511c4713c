//! What one store handle did with the database, counted for `/readyz` (`database.work`) and
//! the benchmark's per-notification figures: how many grouped transactions the accepts, saves
//! and contact reads took and how many requests they carried (the group sizes), the claims
//! and lease renewals with the rows they touched, and the connections taken from the pool with
//! the time spent waiting for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use deadpool_postgres::{Object, Pool};

use super::Result;

#[derive(Default)]
pub(crate) struct Tally {
    pub accept_groups: AtomicU64,
    pub accepts: AtomicU64,
    pub save_groups: AtomicU64,
    pub saves: AtomicU64,
    pub read_groups: AtomicU64,
    pub reads: AtomicU64,
    pub claims: AtomicU64,
    pub claimed: AtomicU64,
    pub renewals: AtomicU64,
    pub renewed: AtomicU64,
    pub pool_gets: AtomicU64,
    pub pool_wait_us: AtomicU64,
}

impl Tally {
    /// A connection from `pool`, counting the wait.
    pub async fn get(&self, pool: &Pool) -> Result<Object> {
        let started = Instant::now();
        let client = pool.get().await;
        self.pool_gets.fetch_add(1, Ordering::Relaxed);
        self.pool_wait_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(client?)
    }

    /// A group of `n` requests in one transaction.
    pub fn group(groups: &AtomicU64, items: &AtomicU64, n: usize) {
        groups.fetch_add(1, Ordering::Relaxed);
        items.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counts so far, by name.
    pub fn figures(&self) -> Vec<(&'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("accept_groups", get(&self.accept_groups)),
            ("accepts", get(&self.accepts)),
            ("save_groups", get(&self.save_groups)),
            ("saves", get(&self.saves)),
            ("read_groups", get(&self.read_groups)),
            ("reads", get(&self.reads)),
            ("claims", get(&self.claims)),
            ("claimed", get(&self.claimed)),
            ("renewals", get(&self.renewals)),
            ("renewed", get(&self.renewed)),
            ("pool_gets", get(&self.pool_gets)),
            ("pool_wait_us", get(&self.pool_wait_us)),
        ]
    }
}
