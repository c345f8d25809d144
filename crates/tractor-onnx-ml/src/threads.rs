//! The process's inference thread budget (`tractor serve --threads`, default: the available cores), shared by the
//! ops that split one batch across threads (tree ensembles), so that concurrent requests together stay within it.
//!
//! Every evaluation of such an op counts its calling thread as busy and takes helpers only from what is left:
//! one large batch alone on an idle server gets all the cores, while as many concurrent batches as there are
//! serving threads get no helpers and run one thread each, as everything else in tract does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads().saturating_sub(1).max(1))
            .thread_name(|i| format!("tractor-helper-{i}"))
            // A panicking part is computed again by its caller, whose panic is the one that counts; rayon's
            // default for a panicking spawned job is to abort the process.
            .panic_handler(|_| {})
            .build()
            // Building fails only when the OS refuses threads; a pool of one is the least there is.
            .or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .expect("no thread for the helper pool")
    })
}

/// Compute `work(0)` … `work(parts - 1)` on the calling thread and on up to `helpers` helper threads, and return
/// the results in order.
///
/// Parts are claimed one at a time by whichever thread comes first, and the caller waits only for parts a helper
/// has already claimed (at most one each, spinning, since a part is microseconds of work): never for a helper
/// to wake or to finish its job. A sleeping helper takes tens of microseconds to wake (a futex and, on a VM, an
/// idle vCPU), and waiting on rayon's scope for it, or being woken by it, cost as much as a 256-row batch of a
/// 100-tree forest takes on two threads. A part whose helper panicked is computed again by the caller.
pub(crate) fn split<T, W>(helpers: usize, parts: usize, work: W) -> Vec<T>
where
    T: Send + 'static,
    W: Fn(usize) -> T + Send + Sync + 'static,
{
    let shared = Arc::new(Parts {
        work,
        parts,
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        results: Mutex::new((0..parts).map(|_| None).collect()),
    });
    if helpers > 0 && parts > 1 {
        let pool = pool();
        for _ in 0..helpers.min(parts - 1) {
            let shared = Arc::clone(&shared);
            pool.spawn(move || shared.drain());
        }
    }
    shared.drain();
    // Every part is claimed now; wait for those in a helper's hands.
    let mut spins = 0u32;
    while shared.finished.load(Ordering::Acquire) < parts {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            // A helper preempted mid-part: give it the core rather than spin through its time slice.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    let results = std::mem::take(&mut *lock(&shared.results));
    results
        .into_iter()
        .enumerate()
        .map(|(index, result)| result.unwrap_or_else(|| (shared.work)(index)))
        .collect()
}

/// A [`split`] in progress, shared by the caller and its helpers.
struct Parts<T, W> {
    work: W,
    parts: usize,
    /// The next part to claim; at or past the end when all are claimed.
    next: AtomicUsize,
    /// Parts whose work has returned or panicked.
    finished: AtomicUsize,
    results: Mutex<Vec<Option<T>>>,
}

impl<T, W: Fn(usize) -> T> Parts<T, W> {
    /// Claim and compute parts until none is left.
    fn drain(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.parts {
                return;
            }
            // Counted as finished even when `work` panics, so the caller never waits for it.
            let _finished = Finished(&self.finished);
            let result = (self.work)(i);
            lock(&self.results)[i] = Some(result);
        }
    }
}

/// Counts a part finished when dropped.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// The lock's value even if a panicking part poisoned it: results are whole values, never half-written.
fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn split_returns_every_part_in_order_even_when_a_helper_panics() {
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};
        static HELPER_RAN: AtomicBool = AtomicBool::new(false);
        let on_helper = || {
            std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("tractor-helper-"))
        };
        let parts = split(1, 64, move |part| {
            if on_helper() {
                HELPER_RAN.store(true, Ordering::Release);
                panic!("part {part} on a helper");
            }
            if part == 0 {
                // Hold the caller at its first part until a helper has taken one, so the panic path runs.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !HELPER_RAN.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
            }
            part * 10
        });
        assert!(
            HELPER_RAN.load(Ordering::Acquire),
            "no helper took a part within 10 s"
        );
        assert_eq!(parts, (0..64).map(|part| part * 10).collect::<Vec<_>>());
        assert_eq!(
            split(0, 3, |part| part),
            [0, 1, 2],
            "no helpers: the caller alone"
        );
        assert!(split(2, 0, |part| part).is_empty());
    }

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
