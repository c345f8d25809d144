//! Retry pacing for failed reconciles, per object: transient failures back off exponentially with jitter up to
//! a cap, so one broken object (or an API server outage) does not retry every object in lockstep every few
//! seconds; an error that the same input would repeat waits for a change instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest retry delay: a failure fixed elsewhere (RBAC granted, API server back) is picked up within it.
pub const CAP: Duration = Duration::from_secs(300);

/// What to do after the `failures`-th failure in a row (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retry {
    /// Try again after this long.
    After(Duration),
    /// The same input fails the same way: wait for the object (or a child) to change.
    OnChange,
}

/// The retry for a failure of `category` (see [`crate::error::Error::category`]) after `failures` in a row.
/// `jitter` in [0, 1) picks a point in the upper half of the exponential delay ("equal jitter"), so objects
/// that failed together spread out while each still waits at least half its step.
pub fn retry(category: &str, failures: u32, jitter: f64) -> Retry {
    if category == "invalid" {
        // 422: the API server refused what the spec builds; rebuilding it unchanged is refused again.
        return Retry::OnChange;
    }
    let step = BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(CAP);
    let jitter = jitter.clamp(0.0, 1.0);
    Retry::After(step.mul_f64(0.5 + jitter / 2.0))
}

/// Consecutive failures per object (`namespace/name`), reset by a successful reconcile.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `key`; returns how many in a row.
    pub fn record(&self, key: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// A reconcile of `key` succeeded (or the object is gone): its next failure starts from the first step.
    pub fn reset(&self, key: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

/// A jitter in [0, 1) that differs between objects and between attempts, without a random source: the
/// object's key, the attempt and the clock's nanoseconds, hashed.
pub fn jitter(key: &str, failures: u32) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(key.as_bytes());
    h.write_u32(failures);
    h.write_i128(crate::clock::now().as_nanosecond());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Retry {
        Retry::After(Duration::from_secs_f64(s))
    }

    #[test]
    fn transient_failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let cases = [
            ("api", 1, 0.0, secs(0.5)),
            ("api", 1, 1.0, secs(1.0)),
            ("api", 2, 0.0, secs(1.0)),
            ("timeout", 3, 0.5, secs(3.0)),
            ("conflict", 4, 0.0, secs(4.0)),
            ("forbidden", 6, 1.0, secs(32.0)),
            // 2^9 s is past the cap: the cap, jittered.
            ("api", 10, 0.0, secs(150.0)),
            ("api", 10, 1.0, secs(300.0)),
            // Far past any shift width: still the cap, no overflow.
            ("api", u32::MAX, 1.0, secs(300.0)),
            // Out-of-range jitter is clamped.
            ("api", 1, 7.0, secs(1.0)),
            ("invalid", 1, 0.5, Retry::OnChange),
            ("invalid", 9, 0.5, Retry::OnChange),
        ];
        for (category, failures, jitter, want) in cases {
            assert_eq!(
                retry(category, failures, jitter),
                want,
                "{category} after {failures} failures, jitter {jitter}"
            );
        }
    }

    #[test]
    fn failures_count_per_object_and_reset_on_success() {
        let f = Failures::default();
        assert_eq!(f.record("ns/a"), 1);
        assert_eq!(f.record("ns/a"), 2);
        assert_eq!(f.record("ns/b"), 1);
        f.reset("ns/a");
        assert_eq!(f.record("ns/a"), 1);
        assert_eq!(f.record("ns/b"), 2);
    }

    #[test]
    fn jitter_stays_in_range() {
        for n in 0..1000 {
            let j = jitter("ns/a", n);
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
