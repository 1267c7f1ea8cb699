//! Thread pools for feedlens's own parallel work (zoo entries, report analyses, the CLI).
//! Must not change results: every parallel kernel computes each output the same way on any thread.
//!
//! rayon hands a parallel kernel called from a thread outside its pool to a pool worker and
//! blocks the caller: two context switches per kernel, and every thread outside the pool shares
//! the pool's workers. With `RAYON_NUM_THREADS=1` the zoo's and the report's parallel jobs all
//! queued on one global worker. Running each job inside a pool of its own lets the kernels
//! (feedlens's and candle's) run on the job's thread. Results do not depend on it: every
//! parallel kernel computes each output chunk the same way on any thread.

use crate::{Error, Result};

/// The thread count rayon and candle take by default: `RAYON_NUM_THREADS` when set to a
/// positive number, else the number of cores.
pub fn default_threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// The number of cores (1 if it cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run `worker` on `n` threads at once (at least one), each inside a rayon pool of its own with
/// an equal share of [`default_threads`]; returns when all have returned. (If a pool cannot be
/// started, that thread runs `worker` without one.)
pub fn run_workers(n: usize, worker: impl Fn() + Sync) {
    let n = n.max(1);
    let per_worker = (default_threads() / n).max(1);
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| run_on(per_worker, &worker).unwrap_or_else(|_| worker()));
        }
    });
}

/// Run `f` on a new rayon pool of `threads` workers (at least one) and return its result.
pub fn run_on<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::input(format!("cannot start {threads} worker thread(s): {e}")))?;
    Ok(pool.install(f))
}

/// `f` over `items` on `jobs` worker threads, results in item order; after an error the
/// workers stop taking items and the first error (in item order) is returned. Jobs run in
/// parallel rather than candle's kernels: at the zoo's model size one thread per forward is
/// faster than two (docs/DESIGN.md §7), so the CLI runs candle single-threaded.
pub fn par_map<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Result<R>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    run_workers(jobs.clamp(1, items.len().max(1)), || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(item) = items.get(i) else { break };
        let r = f(item);
        if r.is_err() {
            next.store(items.len(), Ordering::SeqCst);
        }
        slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
    });
    let mut out = Vec::with_capacity(items.len());
    for r in slots.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Some(r) => out.push(r?),
            // Only items after a failed one are left undone.
            None => input_err!("internal: a parallel job was skipped without an error"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_pool_of_the_given_size() {
        let (n, inside) = run_on(1, || {
            (rayon::current_num_threads(), rayon::current_thread_index())
        })
        .unwrap();
        assert_eq!((n, inside), (1, Some(0)));
        assert_eq!(run_on(0, rayon::current_num_threads).unwrap(), 1);
    }
}
