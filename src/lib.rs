//! feedlens: trace what feedback training does inside a transformer.
//!
//! It loads ordinary Hugging Face GPT-2 checkpoint directories, runs them with
//! TransformerLens-named hook points (cache, replace / add / zero, start at a layer with cached
//! keys and values), and builds analyses (activation patching, probes, weight diffs, logit lens)
//! on that one forward pass.
//!
//! The modules are layers, each using only those before it (docs/DESIGN.md §1):
//! [`model`] (the forward pass and its hooks) → [`io`] (checkpoint directories, tokenizers,
//! atomic writes) → [`lab`] (the toy world, its recipes and the zoo) → [`analysis`] (patching,
//! probes, lens, weight diff) → [`view`] (figures, terminal tables, HTML) → [`report`] (the
//! report over pairs of checkpoints). [`Error`], [`pool`], [`budget`] and [`units`] (work units
//! for job arrays) serve every layer.
//!
//! ```no_run
//! use feedlens::{io::checkpoint, Hook, Input, Run};
//! let ck = checkpoint::load("tests/fixtures/gpt2-tiny")?;
//! let ids = ck.model.ids_tensor(&[vec![1, 2, 3, 4]])?;
//! let run = Run { cache: vec![Hook::ResidPost(0)], ..Run::default() };
//! let out = ck.model.forward(&Input::Ids(ids), &run)?;
//! println!("{:?} {:?}", out.logits.unwrap().dims(), out.cache.get(Hook::ResidPost(0))?.dims());
//! # Ok::<(), feedlens::Error>(())
//! ```

#[macro_use]
mod error;
#[macro_use]
mod named;
pub mod analysis;
pub mod budget;
pub mod io;
pub mod lab;
pub mod model;
pub mod pool;
pub mod report;
pub mod stats;
pub mod units;
pub mod view;

pub use error::{Error, Result};
pub use model::hooks::{Cache, Edit, Hook, Intervention};
pub use model::{Config, Input, Logits, Model, Output, Run, Start};
