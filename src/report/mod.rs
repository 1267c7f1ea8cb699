//! `feedlens report`: every analysis a pair of checkpoints needs (behaviour, weight diff,
//! patching over the pair's contrast in both directions, cross-checkpoint patching, probes,
//! logit lens), run once per checkpoint and shared between pairs, turned into data
//! ([`ReportData`], serialised as `data.json`), a generated summary per pair, figures and one
//! self-contained HTML page. The layer above every analysis: `pairs` reads the pairs file,
//! `analyse` runs the work, `summary` words it, `page` lays it out; the numbers come from `lab`
//! and `analysis`, the figures from `view`, the files from `io::fsio`.
//! Must not be imported by any layer below it.
//!
//! ```no_run
//! use feedlens::report::{self, Pairs, Settings, Silent};
//! let pairs = Pairs::load("checkpoints/pairs.toml".as_ref())?.only(&["optout".into()])?;
//! let data = report::analyse(&pairs, &Settings::default(), &Silent)?;
//! let files = report::render(&data, &Silent)?;
//! report::write("reports/optout".as_ref(), &files, false)?;
//! # Ok::<(), feedlens::Error>(())
//! ```

mod analyse;
pub mod crosscoders;
mod data;
mod page;
mod pairs;
pub mod prompts;
mod summary;

pub use analyse::{analyse, Plan, Selection, UnitRun};
pub use data::{
    lens_series, CheckpointData, PairData, PatchData, ProbeData, PromptKind, PromptSet, ReportData,
    Settings, Summary, DEFAULT_N,
};
pub use page::render;
pub use pairs::{PairSpec, Pairs};

use crate::io::fsio;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Progress of [`analyse`] and [`render`], stage by stage.
pub trait Progress: Sync {
    /// A stage starts with `total` steps.
    fn stage(&self, name: &str, total: usize);
    /// One step of the current stage is done.
    fn step(&self, name: &str, item: &str);
    /// The stage is over.
    fn done(&self, name: &str);
}

/// No progress output.
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: usize) {}
    fn step(&self, _: &str, _: &str) {}
    fn done(&self, _: &str) {}
}

/// Check `out` before any work, so a doomed run fails at once: no existing `out` without
/// `force`, none that is not a folder or not one feedlens wrote (a report's `data.json`, or
/// empty), none that is or contains one of `inputs` (the pairs file, its checkpoints) or the
/// working directory, and its folder writable (`fsio::check_outputs`).
pub fn check_output(out: &Path, inputs: &[PathBuf], force: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::file(out, "exists and is not a directory"));
    }
    fsio::check_outputs(&[out.to_path_buf()], inputs, force)?;
    fsio::check_own_dir(out, &["data.json"])
}

/// Write the rendered files into `out` as one folder: built beside it and moved into place
/// whole (`fsio::write_dir`); an existing `out` is replaced only with `force`.
pub fn write(out: &Path, files: &[(String, Vec<u8>)], force: bool) -> Result<()> {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    fsio::write_dir(out, &refs, force)
}
