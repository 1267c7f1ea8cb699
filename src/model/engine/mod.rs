//! The training engine: GPT-2 (the architecture the zoo trains) over one flat f32 parameter
//! buffer, with a hand-written backward pass and key/value-cached decoding. candle's autograd
//! builds a graph of small tensors on every step and its per-op overhead dominated training at
//! the zoo's size; here a step is a few dozen single-threaded products per micro-batch
//! (`gemm`), micro-batches run in parallel and their gradients are summed in a fixed order, so
//! a seed gives the same bytes on any thread count and any x86-64 CPU.
//!
//! Owns the flat layout (the order of [`Model::tensors`]), the forward with stored activations
//! (`pass`), the backward (`backward`), the loss head (`loss`) and decoding (`decode`). The
//! candle model stays the reference: tests compare logits and gradients with its autograd.
//! Knows nothing of the toy world, recipes or optimisers (`lab::train`).

/// `fn $name(args)` that runs `$body(args)` compiled for AVX2 when the CPU has it ([`simd`]):
/// wider vectors, the same operations in the same order, so the same bits either way (tested).
/// `$body` must be `#[inline(always)]` (with the helpers it calls) to be compiled that way.
macro_rules! with_avx2 {
    ($(#[$m:meta])* $vis:vis fn $name:ident => $avx:ident => $($body:ident)::+ ($($arg:ident : $ty:ty),* $(,)?)) => {
        with_avx2! { $(#[$m])* $vis fn $name => $avx => $($body)::+ ($($arg: $ty),*) -> () }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident => $avx:ident => $($body:ident)::+ ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if super::simd() {
                // SAFETY: the CPU has AVX2 (`simd`).
                return unsafe { $avx($($arg),*) };
            }
            $($body)::+($($arg),*)
        }

        /// The AVX2 build of the body (see `with_avx2!`).
        ///
        /// # Safety
        /// The CPU must have AVX2.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx($($arg: $ty),*) -> $ret {
            $($body)::+($($arg),*)
        }
    };
}

mod backward;
mod decode;
pub mod gemm;
mod loss;
mod ops;
mod pass;
mod resume;

pub use loss::{Kl, Objective};
pub use resume::{Edit, Record, Stage};

use crate::model::config::Arch;
use crate::model::{Config, Model, Weights};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;

/// Sequences per micro-batch of a training step (with [`LANES`], what fixes how a step's sums
/// are grouped). 8 sequences of the world's 17 tokens are 136 rows per product, enough for
/// the kernel's full speed.
pub const MICRO_BATCH: usize = 8;

/// Whether the engine's AVX2 + FMA code paths run on this CPU. Both paths compute the same
/// bits (the products are the same fused chains, everything else plain f32 arithmetic in the
/// same order, which the compiler may widen but not reorder or fuse); tests run the plain one
/// on a thread with [`plain_only`] set and compare.
fn simd() -> bool {
    #[cfg(test)]
    if PLAIN.with(|p| p.get()) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
thread_local! {
    static PLAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: make this thread take the plain code paths (or the fast ones again).
#[cfg(test)]
fn plain_only(on: bool) {
    PLAIN.with(|p| p.set(on));
}

/// Where one block's tensors sit in the flat buffer.
#[derive(Clone, Copy, Debug)]
struct BlockAt {
    ln1_w: usize,
    ln1_b: usize,
    qkv_w: usize,
    qkv_b: usize,
    o_w: usize,
    o_b: usize,
    ln2_w: usize,
    ln2_b: usize,
    fc_w: usize,
    fc_b: usize,
    proj_w: usize,
    proj_b: usize,
}

/// The engine's view of one model's parameters: a slice per tensor, from the flat training
/// buffer ([`Engine::view`]) or borrowed from a candle model's own tensors
/// ([`Engine::with_model`], no copy).
pub struct Params<'a> {
    wte: &'a [f32],
    wpe: &'a [f32],
    lnf_w: &'a [f32],
    lnf_b: &'a [f32],
    blocks: Vec<BlockParams<'a>>,
}

/// One block's tensors in a [`Params`].
struct BlockParams<'a> {
    ln1_w: &'a [f32],
    ln1_b: &'a [f32],
    qkv_w: &'a [f32],
    qkv_b: &'a [f32],
    o_w: &'a [f32],
    o_b: &'a [f32],
    ln2_w: &'a [f32],
    ln2_b: &'a [f32],
    fc_w: &'a [f32],
    fc_b: &'a [f32],
    proj_w: &'a [f32],
    proj_b: &'a [f32],
}

/// A GPT-2 shape and where each of its tensors sits in a flat parameter buffer (the order of
/// [`Model::tensors`]).
#[derive(Clone, Debug)]
pub struct Engine {
    cfg: Config,
    n_layer: usize,
    d: usize,
    n_head: usize,
    vocab: usize,
    n_pos: usize,
    d_mlp: usize,
    eps: f32,
    scale: f32,
    wte: usize,
    wpe: usize,
    blocks: Vec<BlockAt>,
    lnf_w: usize,
    lnf_b: usize,
    /// (name, offset, shape) of every tensor, in order.
    names: Vec<(String, usize, Vec<usize>)>,
    n_params: usize,
}

impl Engine {
    /// The engine for `cfg`: GPT-2's architecture as the zoo trains it (tied head, LayerNorm,
    /// gelu_new, learned positions, biases, attention scaled by 1/√d_head), else an error
    /// naming what differs.
    pub fn new(cfg: &Config) -> Result<Engine> {
        cfg.validate().map_err(Error::input)?;
        if cfg.arch != Arch::gpt2(cfg.n_head) {
            input_err!(
                "training runs GPT-2 models with GPT-2's default block only (tied head, LayerNorm, gelu_new, learned positions, biases, 1/√d_head scaling); this is a {} model{}",
                cfg.arch.family.name(),
                if cfg.arch.family == crate::model::Family::Gpt2 {
                    " with other settings"
                } else {
                    ""
                }
            );
        }
        let mut names = Vec::new();
        let mut at = HashMap::new();
        let mut off = 0;
        for (name, shape) in Model::tensor_shapes(cfg) {
            at.insert(name.clone(), off);
            let n: usize = shape.iter().product();
            names.push((name, off, shape));
            off += n;
        }
        let get = |n: &str| -> Result<usize> {
            at.get(n)
                .copied()
                .ok_or_else(|| Error::input(format!("internal: no tensor '{n}' in the layout")))
        };
        let blocks = (0..cfg.n_layer)
            .map(|l| {
                let g = |s: &str| get(&format!("h.{l}.{s}"));
                Ok(BlockAt {
                    ln1_w: g("ln_1.weight")?,
                    ln1_b: g("ln_1.bias")?,
                    qkv_w: g("attn.c_attn.weight")?,
                    qkv_b: g("attn.c_attn.bias")?,
                    o_w: g("attn.c_proj.weight")?,
                    o_b: g("attn.c_proj.bias")?,
                    ln2_w: g("ln_2.weight")?,
                    ln2_b: g("ln_2.bias")?,
                    fc_w: g("mlp.c_fc.weight")?,
                    fc_b: g("mlp.c_fc.bias")?,
                    proj_w: g("mlp.c_proj.weight")?,
                    proj_b: g("mlp.c_proj.bias")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Engine {
            cfg: cfg.clone(),
            n_layer: cfg.n_layer,
            d: cfg.n_embd,
            n_head: cfg.n_head,
            vocab: cfg.vocab_size,
            n_pos: cfg.n_positions,
            d_mlp: cfg.d_mlp(),
            eps: cfg.layer_norm_epsilon as f32,
            scale: 1.0 / (cfg.d_head() as f32).sqrt(),
            wte: get("wte.weight")?,
            wpe: get("wpe.weight")?,
            blocks,
            lnf_w: get("ln_f.weight")?,
            lnf_b: get("ln_f.bias")?,
            names,
            n_params: off,
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Length of the flat parameter buffer.
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// `(name, offset, length)` of every tensor in the flat buffer, in order.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, usize, usize)> {
        self.names
            .iter()
            .map(|(n, o, s)| (n.as_str(), *o, s.iter().product()))
    }

    /// `params` (the flat layout) as the engine's view.
    pub fn view<'a>(&self, params: &'a [f32]) -> Result<Params<'a>> {
        self.check_len(params)?;
        let at = |o: usize| -> &'a [f32] {
            // Every offset is a tensor's start in `names`, found by its position.
            let (_, _, shape) = &self.names[self.names.partition_point(|x| x.1 < o)];
            &params[o..o + shape.iter().product::<usize>()]
        };
        Ok(self.params_from(at))
    }

    /// Run `f` on `model`'s own tensors as the engine's view (no copy; the model must have
    /// this engine's config and plain contiguous f32 tensors).
    pub fn with_model<R>(&self, model: &Model, f: impl FnOnce(&Params) -> R) -> Result<R> {
        if model.config() != &self.cfg {
            input_err!("internal: a model of another shape given to the engine");
        }
        let tensors = model.tensors();
        let guards: Vec<_> = tensors
            .iter()
            .map(|(_, t)| t.storage_and_layout())
            .collect();
        let mut slices: Vec<&[f32]> = Vec::with_capacity(guards.len());
        for ((name, t), (storage, layout)) in tensors.iter().zip(&guards) {
            let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) =
                (&**storage, layout.contiguous_offsets())
            else {
                input_err!("internal: tensor '{name}' is not a contiguous f32 CPU tensor");
            };
            debug_assert_eq!(b - a, t.elem_count());
            slices.push(&v[a..b]);
        }
        let at = |o: usize| slices[self.names.partition_point(|x| x.1 < o)];
        Ok(f(&self.params_from(at)))
    }

    /// The view whose tensor at flat offset `o` is `at(o)`.
    fn params_from<'a>(&self, at: impl Fn(usize) -> &'a [f32]) -> Params<'a> {
        Params {
            wte: at(self.wte),
            wpe: at(self.wpe),
            lnf_w: at(self.lnf_w),
            lnf_b: at(self.lnf_b),
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockParams {
                    ln1_w: at(b.ln1_w),
                    ln1_b: at(b.ln1_b),
                    qkv_w: at(b.qkv_w),
                    qkv_b: at(b.qkv_b),
                    o_w: at(b.o_w),
                    o_b: at(b.o_b),
                    ln2_w: at(b.ln2_w),
                    ln2_b: at(b.ln2_b),
                    fc_w: at(b.fc_w),
                    fc_b: at(b.fc_b),
                    proj_w: at(b.proj_w),
                    proj_b: at(b.proj_b),
                })
                .collect(),
        }
    }

    /// `model`'s parameters as one flat buffer (its config must be this engine's).
    pub fn params(&self, model: &Model) -> Result<Vec<f32>> {
        if model.config() != &self.cfg {
            input_err!("internal: a model of another shape given to the training engine");
        }
        let mut flat = Vec::with_capacity(self.n_params);
        for (_, t) in model.tensors() {
            flat.extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
        if flat.len() != self.n_params {
            input_err!("internal: the model's tensors do not fill the engine's layout");
        }
        Ok(flat)
    }

    /// A candle [`Model`] (plain tensors) holding `params`.
    pub fn model(&self, params: &[f32]) -> Result<Model> {
        self.check_len(params)?;
        let map = self
            .names
            .iter()
            .map(|(n, o, s)| {
                let len: usize = s.iter().product();
                let t = Tensor::from_slice(&params[*o..*o + len], s.as_slice(), &Device::Cpu)?;
                Ok((n.clone(), t))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Model::load(self.cfg.clone(), &mut Weights::new("<engine>", map))
    }

    fn check_len(&self, params: &[f32]) -> Result<()> {
        if params.len() != self.n_params {
            input_err!(
                "internal: {} parameters given, the layout has {}",
                params.len(),
                self.n_params
            );
        }
        Ok(())
    }

    /// Check a batch of `n` sequences of `t` tokens and the positions read from them.
    fn check_batch(&self, ids: &[u32], t: usize, positions: &[usize]) -> Result<usize> {
        if t == 0 || t > self.n_pos || !ids.len().is_multiple_of(t) {
            input_err!(
                "internal: {} ids are not whole sequences of {t} ≤ {} tokens",
                ids.len(),
                self.n_pos
            );
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab) {
            input_err!("token id {bad} is out of range (vocab_size {})", self.vocab);
        }
        if positions.is_empty() || positions.windows(2).any(|w| w[0] >= w[1]) {
            input_err!("internal: loss positions must be increasing and at least one");
        }
        if positions.last().is_some_and(|&p| p >= t) {
            input_err!("internal: a loss position is past the sequence");
        }
        Ok(ids.len() / t)
    }

    /// The objective's value and its gradient with respect to `params`, written into `grad`
    /// (overwritten), over sequences `ids` (`[n, t]`, row-major). The sequences are cut into
    /// micro-batches of [`MICRO_BATCH`]; micro-batch i adds its gradient into accumulator
    /// i mod [`LANES`], the accumulators run in parallel on the caller's rayon pool (each over
    /// its micro-batches in order) and are summed in order at the end. Returns the objective
    /// and, with a KL term, each scored position's KL(π ‖ π_ref) (`[n, positions]`).
    pub fn loss_grad(
        &self,
        params: &[f32],
        ids: &[u32],
        t: usize,
        obj: &Objective,
        grad: &mut [f32],
        work: &mut Workspace,
    ) -> Result<(f64, Option<Vec<f32>>)> {
        let w = &self.view(params)?;
        self.check_len(grad)?;
        let n = self.check_batch(ids, t, obj.positions)?;
        obj.check(n, self.vocab)?;
        work.prep.fill(self, w, true);
        let n_mb = n.div_ceil(MICRO_BATCH);
        let lanes = n_mb.min(LANES);
        work.lanes.resize_with(LANES, Lane::default);
        let np = obj.positions.len();
        let prep = &work.prep;
        // Per lane: (micro-batch, its objective, its KL values) in micro-batch order.
        let parts: Vec<Vec<(usize, f64, Vec<f32>)>> = work.lanes[..lanes]
            .par_iter_mut()
            .enumerate()
            .map(|(li, lane)| {
                lane.grad.clear();
                lane.grad.resize(self.n_params, 0.0);
                (li..n_mb)
                    .step_by(LANES)
                    .map(|mb| {
                        let rows = mb * MICRO_BATCH..((mb + 1) * MICRO_BATCH).min(n);
                        let seqs = &ids[rows.start * t..rows.end * t];
                        let acts = &mut lane.acts;
                        pass::forward(self, w, prep, seqs, rows.len(), t, obj.positions, acts);
                        let mut kl = Vec::new();
                        let range = rows.start * np..rows.end * np;
                        let loss = loss::head(&mut acts.logits, obj, range, self.vocab, &mut kl);
                        let s = &mut lane.scratch;
                        backward::backward(self, w, prep, seqs, acts, s, &mut lane.grad);
                        (mb, loss, kl)
                    })
                    .collect()
            })
            .collect();
        // Sum the accumulators in order, element by element (parallel over elements: each
        // element's sum is the same chain on any thread).
        let lanes = &work.lanes[..lanes];
        grad.par_chunks_mut(1 << 14)
            .enumerate()
            .for_each(|(c, out)| {
                let base = c << 14;
                for (j, g) in out.iter_mut().enumerate() {
                    let mut s = 0f32;
                    for lane in lanes {
                        s += lane.grad[base + j];
                    }
                    *g = s;
                }
            });
        let mut parts: Vec<(usize, f64, Vec<f32>)> = parts.into_iter().flatten().collect();
        parts.sort_by_key(|p| p.0);
        let loss = parts.iter().map(|p| p.1).sum();
        let kl = obj
            .kl
            .as_ref()
            .map(|_| parts.into_iter().flat_map(|p| p.2).collect());
        Ok((loss, kl))
    }

    /// Log-probabilities of the next token at `positions` of each sequence of `ids` (`[n, t]`):
    /// `[n, positions.len(), vocab]` (no gradient; micro-batches in parallel).
    pub fn log_probs(
        &self,
        w: &Params,
        ids: &[u32],
        t: usize,
        positions: &[usize],
        work: &mut Workspace,
    ) -> Result<Vec<f32>> {
        let n = self.check_batch(ids, t, positions)?;
        work.prep.fill(self, w, false);
        let n_mb = n.div_ceil(MICRO_BATCH);
        work.acts
            .resize_with(n_mb.max(work.acts.len()), pass::Acts::default);
        let v = self.vocab;
        let mut out = vec![0f32; n * positions.len() * v];
        let prep = &work.prep;
        work.acts[..n_mb]
            .par_iter_mut()
            .zip(out.par_chunks_mut(MICRO_BATCH * positions.len() * v))
            .enumerate()
            .for_each(|(i, (acts, o))| {
                let rows = i * MICRO_BATCH..((i + 1) * MICRO_BATCH).min(n);
                let seqs = &ids[rows.start * t..rows.end * t];
                pass::forward(self, w, prep, seqs, rows.len(), t, positions, acts);
                o.copy_from_slice(&acts.logits);
                o.chunks_mut(v).for_each(ops::log_softmax);
            });
        Ok(out)
    }
}

/// Gradient accumulators of a training step: micro-batch i adds into accumulator
/// i mod `LANES`. A constant, not the thread count, so that the grouping of a step's sums —
/// and so its bytes — do not depend on the machine; up to this many threads share a step.
pub const LANES: usize = 4;

/// Reusable buffers of the engine's calls (transposed weights, activations, gradient
/// accumulators, decoding caches), kept between steps so that a training run allocates them
/// once.
#[derive(Default)]
pub struct Workspace {
    prep: pass::Prepared,
    lanes: Vec<Lane>,
    acts: Vec<pass::Acts>,
}

#[derive(Default)]
struct Lane {
    acts: pass::Acts,
    scratch: backward::Scratch,
    grad: Vec<f32>,
}

#[cfg(test)]
mod tests;
