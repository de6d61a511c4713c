//! What several gateway instances on one shared store need to act as one (docs/fleet.md): who
//! this instance is ([`InstanceId`]) and the records in the store through which instances
//! agree on who does something alone ([`lease::Lease`]: the probe of a restricted channel, the
//! Telegram poller), and what it holds ([`HeldClaims`], [`lease::held_by`]).
//!
//! Everything here is built on the [`Store`](crate::store::Store) trait alone (`kv_update`'s
//! atomic read-modify-write), so it works on the embedded store (several handles in one
//! process, as the tests use) and on a shared database alike.

pub mod lease;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::TryRngCore;

/// Overrides the generated instance id (a container's stable name, say).
pub const INSTANCE_VAR: &str = "LIFEBOAT_INSTANCE_ID";

/// This process's name among the instances: the host name and a short random part, chosen
/// at start (`web-1-3f9a2c`). In the start log line, `/readyz`, the channel state changes'
/// log lines and history, and as the owner of the leases it holds. A restart is a new
/// instance (its leases are not its predecessor's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// `LIFEBOAT_INSTANCE_ID` if set (with a random part added, so two processes given the same
    /// name still differ), else the host name; then `-` and 6 random hex digits.
    pub fn generate() -> InstanceId {
        let base = std::env::var(INSTANCE_VAR)
            .ok()
            .or_else(hostname)
            .map(|h| clean(&h))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "lifeboat".to_string());
        let mut bytes = [0u8; 3];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system provides random bytes");
        InstanceId(format!("{base}-{}", hex::encode(bytes)))
    }

    /// A fixed id (tests).
    pub fn named(name: &str) -> InstanceId {
        InstanceId(name.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many notifications this instance holds a claim (a lease in the store) on right now:
/// kept by the dispatcher, shown by `/readyz` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct HeldClaims(Arc<AtomicUsize>);

impl HeldClaims {
    pub fn set(&self, n: usize) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The host name, as the kernel or the environment says it.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

/// Letters, digits, `-`, `_` and `.` only, at most 48 of them: the id goes into logs and keys.
fn clean(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_host_and_a_random_part_and_differ_per_start() {
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        assert_ne!(a, b, "two starts on one host are two instances");
        let (host, random) = a.as_str().rsplit_once('-').unwrap();
        assert!(!host.is_empty());
        assert_eq!(random.len(), 6);
        assert!(random.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(clean("we b/1\n"), "web1");
    }
}
