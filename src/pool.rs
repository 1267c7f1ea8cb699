//! Thread pools for feedlens's own parallel work (zoo entries, report analyses, the CLI).
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

/// Run `f` on a new rayon pool of `threads` workers (at least one) and return its result.
pub fn run_on<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::input(format!("cannot start {threads} worker thread(s): {e}")))?;
    Ok(pool.install(f))
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
