//! Exponential backoff with jitter for transient failures (`routing.retry`).

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

/// The wait before try number `tries + 1`, after `tries` failures (1-based): `base * 2^(tries-1)`
/// capped at `max`, then scaled by a random factor in [0.5, 1.0] so that many notifications
/// failing together don't come back together. A provider's `retry_after` is a floor.
pub fn delay(retry: &RetryConfig, tries: u32, retry_after: Option<Duration>) -> Duration {
    let exp = tries.saturating_sub(1).min(30);
    let raw = retry.base.saturating_mul(1u32 << exp).min(retry.max);
    let jittered = raw.mul_f64(rand::rng().random_range(0.5..=1.0));
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_honours_retry_after() {
        let retry = RetryConfig {
            attempts: 4,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let d1 = delay(&retry, 1, None);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
            let d3 = delay(&retry, 3, None);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
            let d9 = delay(&retry, 9, None);
            assert!(d9 >= Duration::from_secs(5) && d9 <= Duration::from_secs(10));
        }
        assert!(delay(&retry, 1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }
}
