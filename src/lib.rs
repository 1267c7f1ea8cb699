//! feedlens: trace what feedback training does inside a transformer.
//!
//! It loads ordinary Hugging Face GPT-2 checkpoint directories, runs them with
//! TransformerLens-named hook points (cache, replace / add / zero, start at a layer with cached
//! keys and values), and builds analyses (activation patching, probes, weight diffs, logit lens)
//! on that one forward pass.
//!
//! ```no_run
//! use feedlens::{checkpoint, Hook, Input, Run};
//! let ck = checkpoint::load("tests/fixtures/gpt2-tiny")?;
//! let ids = ck.model.ids_tensor(&[vec![1, 2, 3, 4]])?;
//! let run = Run { cache: vec![Hook::ResidPost(0)], ..Run::default() };
//! let out = ck.model.forward(&Input::Ids(ids), &run)?;
//! println!("{:?} {:?}", out.logits.unwrap().dims(), out.cache.get(Hook::ResidPost(0))?.dims());
//! # Ok::<(), feedlens::Error>(())
//! ```

#[macro_use]
mod error;
mod attn;
pub mod checkpoint;
pub mod diff;
pub mod eval;
pub mod fsio;
mod gelu;
pub mod hooks;
pub mod html;
pub mod json;
pub mod lens;
pub mod model;
pub mod patching;
pub mod plot;
pub mod pool;
pub mod probe_math;
pub mod probes;
pub mod report;
pub mod sample;
pub mod tokens;
pub mod train;
pub mod world;
pub mod zoo;

pub use error::{Error, Result};
pub use hooks::{Cache, Edit, Hook, Intervention};
pub use model::{Config, Gpt2, Input, Logits, Output, Run, Start};
