//! The process's inference thread budget (`tractor serve --threads`, default: the available cores), shared by the
//! ops that split one batch across threads (tree ensembles), so that concurrent requests together stay within it.
//!
//! Every evaluation of such an op counts its calling thread as busy and takes helpers only from what is left:
//! one large batch alone on an idle server gets all the cores, while as many concurrent batches as there are
//! serving threads get no helpers and run one thread each, as everything else in tract does.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The budget; 0 until [`set_threads`] stores one.
static BUDGET: AtomicUsize = AtomicUsize::new(0);
/// Threads inside a splitting op right now, callers included.
static BUSY: AtomicUsize = AtomicUsize::new(0);

/// Set the inference thread budget (at least 1); `tractor serve` passes its `--threads`.
pub fn set_threads(n: usize) {
    BUDGET.store(n.max(1), Ordering::Relaxed);
}

/// The inference thread budget: what [`set_threads`] stored, else the available cores.
pub fn threads() -> usize {
    match BUDGET.load(Ordering::Relaxed) {
        0 => {
            // Read once: on Linux it parses cgroup files, far slower than a small batch.
            static CORES: OnceLock<usize> = OnceLock::new();
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        }
        n => n,
    }
}

/// The helper threads: one fewer than the budget when first used (at least one), kept between batches so a
/// batch does not pay for starting a thread.
pub(crate) fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads().saturating_sub(1).max(1))
            .thread_name(|i| format!("tractor-helper-{i}"))
            .build()
            // Building fails only when the OS refuses threads; a pool of one is the least there is.
            .or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .expect("no thread for the helper pool")
    })
}

/// The calling thread plus the helper threads it may start, given back to the budget on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    busy: &'static AtomicUsize,
    helpers: usize,
}

impl Claim {
    /// Count the caller as busy and take up to `wanted` helpers from what the budget has left.
    pub(crate) fn new(wanted: usize) -> Claim {
        Claim::take(&BUSY, threads(), wanted)
    }

    fn take(busy: &'static AtomicUsize, budget: usize, wanted: usize) -> Claim {
        let mut now = busy.fetch_add(1, Ordering::AcqRel) + 1;
        loop {
            let helpers = wanted.min(budget.saturating_sub(now));
            if helpers == 0 {
                return Claim { busy, helpers: 0 };
            }
            match busy.compare_exchange_weak(
                now,
                now + helpers,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Claim { busy, helpers },
                Err(seen) => now = seen,
            }
        }
    }

    /// How many helper threads the caller may start.
    pub(crate) fn helpers(&self) -> usize {
        self.helpers
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.busy.fetch_sub(1 + self.helpers, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_share_the_budget_and_give_it_back() {
        // A counter of its own: the process-wide one moves under the tree tests running beside this one.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let a = Claim::take(&COUNTER, 3, 5);
        assert_eq!(a.helpers(), 2, "a lone caller takes all but its own thread");
        let b = Claim::take(&COUNTER, 3, 5);
        assert_eq!(b.helpers(), 0, "nothing left while the first runs");
        drop(a);
        let c = Claim::take(&COUNTER, 3, 1);
        assert_eq!(c.helpers(), 1, "one wanted, one free besides b and c");
        drop((b, c));
        assert_eq!(COUNTER.load(Ordering::Relaxed), 0);
        let d = Claim::take(&COUNTER, 1, 4);
        assert_eq!(d.helpers(), 0, "a budget of one never starts a helper");
    }
}
