//! Hook points (TransformerLens names), the activation cache, and interventions at a hook.
//! Owns naming and editing of activations; the forward pass that produces them is `model`.
//! Must not import anything above `model`.

use crate::{Error, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A hook point, named as in TransformerLens. Shapes (for a run over `pos` positions):
/// - `Embed`, `PosEmbed`, `ResidPre/Mid/Post`, `AttnOut`, `MlpOut`, `LnFinal`: `[batch, pos, d_model]`
/// - `Q`, `K`, `V`, `Z`: `[batch, pos, head, d_head]`
/// - `Pattern`: `[batch, head, q_pos, k_pos]`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// `hook_embed`: token embeddings.
    Embed,
    /// `hook_pos_embed`: position embeddings (expanded over the batch).
    PosEmbed,
    /// `blocks.{l}.hook_resid_pre`
    ResidPre(usize),
    /// `blocks.{l}.hook_resid_mid`
    ResidMid(usize),
    /// `blocks.{l}.hook_resid_post`
    ResidPost(usize),
    /// `blocks.{l}.hook_attn_out`
    AttnOut(usize),
    /// `blocks.{l}.hook_mlp_out`
    MlpOut(usize),
    /// `blocks.{l}.attn.hook_q`
    Q(usize),
    /// `blocks.{l}.attn.hook_k`
    K(usize),
    /// `blocks.{l}.attn.hook_v`
    V(usize),
    /// `blocks.{l}.attn.hook_z`: per-head attention output before `c_proj`.
    Z(usize),
    /// `blocks.{l}.attn.hook_pattern`: attention probabilities.
    Pattern(usize),
    /// `ln_final.hook_normalized`: the final residual normalised, before ln_f's gain and bias
    /// (as in TransformerLens).
    LnFinal,
}

impl Hook {
    /// The block this hook belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        use Hook::*;
        match *self {
            Embed | PosEmbed | LnFinal => None,
            ResidPre(l) | ResidMid(l) | ResidPost(l) | AttnOut(l) | MlpOut(l) | Q(l) | K(l)
            | V(l) | Z(l) | Pattern(l) => Some(l),
        }
    }

    /// True for hooks shaped `[batch, pos, head, d_head]`.
    pub fn is_per_head(&self) -> bool {
        matches!(self, Hook::Q(_) | Hook::K(_) | Hook::V(_) | Hook::Z(_))
    }

    /// Every hook of a model with `n_layer` blocks, in forward order.
    pub fn all(n_layer: usize) -> Vec<Hook> {
        use Hook::*;
        let mut v = vec![Embed, PosEmbed];
        for l in 0..n_layer {
            v.extend([
                ResidPre(l),
                Q(l),
                K(l),
                V(l),
                Pattern(l),
                Z(l),
                AttnOut(l),
                ResidMid(l),
                MlpOut(l),
                ResidPost(l),
            ]);
        }
        v.push(LnFinal);
        v
    }

    /// Parse a hook name and check that its layer exists in a model of `n_layer` blocks.
    /// The error lists the valid names.
    pub fn parse_for(name: &str, n_layer: usize) -> Result<Hook> {
        let ok = name
            .parse::<Hook>()
            .ok()
            .filter(|h| h.layer().is_none_or(|l| l < n_layer));
        ok.ok_or_else(|| {
            Error::input(format!(
                "unknown hook '{name}'; valid hooks: hook_embed, hook_pos_embed, ln_final.hook_normalized, \
                 blocks.{{0..{}}}.hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out, \
                 blocks.{{0..{}}}.attn.hook_q|hook_k|hook_v|hook_z|hook_pattern",
                n_layer.saturating_sub(1),
                n_layer.saturating_sub(1)
            ))
        })
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Hook::*;
        match *self {
            Embed => write!(f, "hook_embed"),
            PosEmbed => write!(f, "hook_pos_embed"),
            LnFinal => write!(f, "ln_final.hook_normalized"),
            ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            Q(l) => write!(f, "blocks.{l}.attn.hook_q"),
            K(l) => write!(f, "blocks.{l}.attn.hook_k"),
            V(l) => write!(f, "blocks.{l}.attn.hook_v"),
            Z(l) => write!(f, "blocks.{l}.attn.hook_z"),
            Pattern(l) => write!(f, "blocks.{l}.attn.hook_pattern"),
        }
    }
}

/// Serialised as its TransformerLens name.
impl serde::Serialize for Hook {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read back from its TransformerLens name.
impl<'de> serde::Deserialize<'de> for Hook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Hook, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Hook {
    type Err = Error;
    /// Parses TransformerLens names (`blocks.3.hook_resid_pre`, `blocks.0.attn.hook_z`, ...).
    /// Layer bounds are not checked here: use [`Hook::parse_for`].
    fn from_str(s: &str) -> Result<Hook> {
        use Hook::*;
        let bad = || Error::input(format!("unknown hook '{s}'"));
        match s {
            "hook_embed" => return Ok(Embed),
            "hook_pos_embed" => return Ok(PosEmbed),
            "ln_final.hook_normalized" => return Ok(LnFinal),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (layer, name) = rest.split_once('.').ok_or_else(bad)?;
        let l: usize = layer.parse().map_err(|_| bad())?;
        Ok(match name {
            "hook_resid_pre" => ResidPre(l),
            "hook_resid_mid" => ResidMid(l),
            "hook_resid_post" => ResidPost(l),
            "hook_attn_out" => AttnOut(l),
            "hook_mlp_out" => MlpOut(l),
            "attn.hook_q" => Q(l),
            "attn.hook_k" => K(l),
            "attn.hook_v" => V(l),
            "attn.hook_z" => Z(l),
            "attn.hook_pattern" => Pattern(l),
            _ => return Err(bad()),
        })
    }
}

/// Activations recorded during a forward pass, indexed by hook.
#[derive(Default, Debug, Clone)]
pub struct Cache {
    map: HashMap<Hook, Tensor>,
}

impl Cache {
    /// The recorded value of `hook`, or an error naming it when it was not requested.
    pub fn get(&self, hook: Hook) -> Result<&Tensor> {
        self.map
            .get(&hook)
            .ok_or_else(|| Error::input(format!("hook {hook} was not cached in this run")))
    }
    /// Recorded hooks in forward order, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (Hook, &Tensor)> {
        let mut keys: Vec<&Hook> = self.map.keys().collect();
        keys.sort();
        keys.into_iter().map(move |h| (*h, &self.map[h]))
    }
    /// Refuse non-finite activations: an error naming the first hook (in forward order) whose
    /// value has a NaN or infinite element. Analyses call this on the activations they read, so
    /// an overflowing model gives a clear message instead of NaN tables.
    pub fn check_finite(&self) -> Result<()> {
        for (hook, t) in self.iter() {
            check_finite(hook, t)?;
        }
        Ok(())
    }
    /// Number of recorded hooks.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub(crate) fn insert(&mut self, hook: Hook, t: Tensor) {
        self.map.insert(hook, t);
    }
}

/// Error naming `hook` when `t` has a NaN or infinite element.
pub fn check_finite(hook: Hook, t: &Tensor) -> Result<()> {
    // 0·x is 0 for finite x and NaN for ±inf and NaN, so the sum is 0 exactly when all are
    // finite (no copy to the host, and no overflow from summing huge finite values).
    let t = t.to_dtype(DType::F32)?;
    let s = (t.zeros_like()? * &t)?.sum_all()?.to_scalar::<f32>()?;
    if s != 0.0 {
        return Err(Error::input(format!(
            "hook {hook}: activations contain NaN or infinite values (the weights overflow on this input)"
        )));
    }
    Ok(())
}

/// What an intervention does to the hook's value where its mask is on.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Write this value (broadcastable to the hook's shape).
    Replace(Tensor),
    /// Add this value (broadcastable to the hook's shape); a zero `Var` here gives the
    /// gradient with respect to the hook's activation (attribution patching).
    Add(Tensor),
    /// Set to zero.
    Zero,
    /// Remove the component along this unit vector (length = the hook's last dimension):
    /// `x − (x·u) u` (direction ablation).
    ProjectOut(Tensor),
}

/// An edit of one hook's value, restricted to some positions, heads and batch rows.
///
/// Positions are absolute sequence positions (also when a run starts at an offset); for
/// `hook_pattern` they are query positions. With no restriction the whole tensor is edited.
#[derive(Clone, Debug)]
pub struct Intervention {
    /// Which hook to edit.
    pub hook: Hook,
    /// The edit.
    pub edit: Edit,
    positions: Option<Vec<usize>>,
    heads: Option<Vec<usize>>,
    mask: Option<Tensor>,
}

impl Intervention {
    /// Replace the hook's value by `value`.
    pub fn replace(hook: Hook, value: Tensor) -> Self {
        Self::new(hook, Edit::Replace(value))
    }
    /// Add `value` to the hook's value.
    pub fn add(hook: Hook, value: Tensor) -> Self {
        Self::new(hook, Edit::Add(value))
    }
    /// Zero the hook's value.
    pub fn zero(hook: Hook) -> Self {
        Self::new(hook, Edit::Zero)
    }
    /// Project the unit vector `u` out of the hook's value.
    pub fn project_out(hook: Hook, u: Tensor) -> Self {
        Self::new(hook, Edit::ProjectOut(u))
    }
    fn new(hook: Hook, edit: Edit) -> Self {
        Intervention {
            hook,
            edit,
            positions: None,
            heads: None,
            mask: None,
        }
    }
    /// Only at these absolute positions (all batch rows).
    pub fn at_positions(mut self, positions: &[usize]) -> Self {
        self.positions = Some(positions.to_vec());
        self
    }
    /// Only at these heads (per-head hooks and `hook_pattern`).
    pub fn at_heads(mut self, heads: &[usize]) -> Self {
        self.heads = Some(heads.to_vec());
        self
    }
    /// An explicit 0/1 f32 mask, one value per (row, position) of the run's window:
    /// `[batch, pos]`, or `[batch, pos, head]` for per-head hooks (`[batch, head, q]` for
    /// `hook_pattern`). Lets every batch row edit a different cell (patching sweeps).
    /// Combined with `at_positions` / `at_heads` by multiplication.
    pub fn with_mask(mut self, mask: Tensor) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Apply to `x`, the hook's value over the window that starts at absolute position `offset`.
    pub(crate) fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let mask = self.mask_for(&dims, offset, x)?;
        // The component along u, `(x·u) u`, for direction ablation.
        let along = |u: &Tensor| -> Result<Tensor> {
            let dot = x.broadcast_mul(u)?.sum_keepdim(x.rank() - 1)?;
            Ok(dot.broadcast_mul(u)?)
        };
        let out = match (&self.edit, mask) {
            (Edit::ProjectOut(u), None) => (x - along(u)?)?,
            (Edit::ProjectOut(u), Some(m)) => (x - along(u)?.broadcast_mul(&m)?)?,
            (Edit::Replace(v), None) => v.broadcast_as(x.shape())?.contiguous()?,
            (Edit::Add(v), None) => x.broadcast_add(v)?,
            (Edit::Zero, None) => x.zeros_like()?,
            // x·(1−m) + v·m is exact where m is 0 or 1 (finite values).
            (Edit::Replace(v), Some(m)) => {
                let keep = m.affine(-1.0, 1.0)?;
                (x.broadcast_mul(&keep)? + v.broadcast_mul(&m)?.broadcast_as(x.shape())?)?
            }
            (Edit::Add(v), Some(m)) => (x + v.broadcast_mul(&m)?.broadcast_as(x.shape())?)?,
            (Edit::Zero, Some(m)) => x.broadcast_mul(&m.affine(-1.0, 1.0)?)?,
        };
        if out.dims() != dims.as_slice() {
            input_err!(
                "intervention at {}: value of shape {:?} does not fit the hook's shape {:?}",
                self.hook,
                out.dims(),
                dims
            );
        }
        Ok(out)
    }

    /// The 0/1 mask, shaped to broadcast against the hook's value, or None for "everywhere".
    fn mask_for(&self, dims: &[usize], offset: usize, x: &Tensor) -> Result<Option<Tensor>> {
        if self.positions.is_none() && self.heads.is_none() && self.mask.is_none() {
            return Ok(None);
        }
        let hook = self.hook;
        // Layout of the (row, pos, head) cell grid inside the hook's value.
        let (b, npos, nhead, pattern) = match (hook, dims.len()) {
            (Hook::Pattern(_), 4) => (dims[0], dims[2], dims[1], true),
            (h, 4) if h.is_per_head() => (dims[0], dims[1], dims[2], false),
            (_, 3) => (dims[0], dims[1], 1, false),
            _ => input_err!("intervention at {hook}: unexpected shape {dims:?}"),
        };
        if self.heads.is_some() && !(hook.is_per_head() || pattern) {
            input_err!("intervention at {hook}: heads can only be chosen on per-head hooks");
        }
        let mut grid = vec![1f32; npos * nhead];
        if let Some(ps) = &self.positions {
            let mut on = vec![false; npos];
            for &p in ps {
                if p < offset || p >= offset + npos {
                    input_err!(
                        "intervention at {hook}: position {p} is outside the run's positions {offset}..{}",
                        offset + npos
                    );
                }
                on[p - offset] = true;
            }
            for (i, g) in grid.iter_mut().enumerate() {
                if !on[i / nhead] {
                    *g = 0.0;
                }
            }
        }
        if let Some(hs) = &self.heads {
            let mut on = vec![false; nhead];
            for &h in hs {
                if h >= nhead {
                    input_err!("intervention at {hook}: head {h} out of range 0..{nhead}");
                }
                on[h] = true;
            }
            for (i, g) in grid.iter_mut().enumerate() {
                if !on[i % nhead] {
                    *g = 0.0;
                }
            }
        }
        // [1, pos, head] (or [1, head, q] for the pattern, whose grid is head-major).
        let mut m = Tensor::from_vec(grid, (1, npos, nhead), x.device())?;
        if pattern {
            m = m.transpose(1, 2)?.contiguous()?;
        }
        if let Some(user) = &self.mask {
            let want: &[usize] = if nhead == 1 && !pattern {
                &[b, npos]
            } else if pattern {
                &[b, nhead, npos]
            } else {
                &[b, npos, nhead]
            };
            if user.dims() != want {
                input_err!(
                    "intervention at {hook}: mask of shape {:?}, expected {want:?}",
                    user.dims()
                );
            }
            let user = user
                .to_dtype(DType::F32)?
                .reshape(m.dims3().map(|(_, a, c)| (b, a, c))?)?;
            m = user.broadcast_mul(&m)?;
        }
        // Trailing singleton so the mask broadcasts over d_model / d_head / k_pos.
        let m = if dims.len() == 3 { m } else { m.unsqueeze(3)? };
        Ok(Some(m))
    }
}
