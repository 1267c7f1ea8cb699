//! Activation patching: prompt-pair batches and their metric, exact sweeps (a fast batched
//! engine and a naive one-forward-per-cell reference), attribution patching and
//! cross-checkpoint patching. Owns patching results, their JSON and the share arithmetic read
//! off them; every activation comes from `Model::forward`, and nothing here draws or prints.
//!
//! ```no_run
//! use feedlens::analysis::patching::{self, Direction, Metric, Pair, Setup};
//! use feedlens::analysis::site::Site;
//! let ck = feedlens::io::checkpoint::load("tests/fixtures/gpt2-tiny")?;
//! let pair = Pair { clean: vec![1, 2, 3, 4], corrupt: vec![1, 7, 3, 4],
//!                   metric: Metric::LogitDiff { a: 18, b: 2 } };
//! let setup = Setup::new(&ck.model, vec![pair], None, Direction::Denoise)?;
//! let sweep = patching::sweep(&ck.model, &setup, &Site::PATCHED)?;
//! println!("{}", sweep.to_json());
//! # Ok::<(), feedlens::Error>(())
//! ```

mod attribution;
mod cross;
pub(crate) mod metric;
mod pairs;
mod result;
mod resumed;
mod run;
mod sweep;

pub use attribution::{attribution, compare, Agreement};
pub use cross::{
    patch_models, specific, Cross, CrossCi, CrossPrompts, CrossSpec, Overshoot, Specific,
};
pub use metric::Metric;
pub(crate) use metric::{last_logits, mean, metric_values, run_metric};
pub use pairs::{default_metric, world_pairs, world_prompt, Pair, Setup};
pub(crate) use result::one_hot;
pub use result::{Cell, Grid, Sweep, SweepCi};
pub use run::{report, Report};
pub use sweep::{pair_metrics, sanity, sweep, sweep_naive, sweep_with, Chunking, Sanity};

/// Smallest clean–corrupt metric gap (logits) worth normalising by: below it a normalised
/// value, or a share of the gap, is mostly noise.
pub const DEFAULT_MIN_GAP: f64 = 0.1;

named! {
    /// Which run receives the other's activation.
    pub enum Direction("direction") {
        /// Clean activation into the corrupted run (is this cell sufficient to restore the
        /// metric?).
        Denoise = "denoise",
        /// Corrupted activation into the clean run (is this cell necessary for it?).
        Noise = "noise",
    }
}

impl Direction {
    /// `denoising` / `noising`, for captions.
    pub fn gerund(self) -> &'static str {
        match self {
            Direction::Denoise => "denoising",
            Direction::Noise => "noising",
        }
    }
}

named! {
    /// How a sweep's numbers are made.
    pub enum Method("method") {
        /// One patched forward per cell (batched).
        Exact = "exact",
        /// The first-order estimate from one forward and one backward.
        Attribution = "attribution",
    }
}
