//! `Site`: the short names of the activations an analysis reads or patches at one layer
//! (`resid_pre`, `attn_out`, `head_out`, ...), shared by patching and probes, and the hook each
//! names. Owns the names and which analysis accepts which; the hooks themselves are `model`'s.
//! Must not run a model.

use crate::{Hook, Result};

named! {
    /// An activation at one layer, by its short TransformerLens name.
    pub enum Site("component") {
        /// `blocks.{l}.hook_resid_pre`: the residual stream entering block l.
        ResidPre = "resid_pre",
        /// `blocks.{l}.hook_resid_mid`: after attention, before the MLP.
        ResidMid = "resid_mid",
        /// `blocks.{l}.hook_resid_post`: the residual stream leaving block l.
        ResidPost = "resid_post",
        /// `blocks.{l}.hook_attn_out`.
        AttnOut = "attn_out",
        /// `blocks.{l}.hook_mlp_out`.
        MlpOut = "mlp_out",
        /// One head's output: `blocks.{l}.attn.hook_z` at one head (TransformerLens's
        /// `get_act_patch_attn_head_out_by_pos`).
        HeadOut = "head_out",
    }
}

impl Site {
    /// What a patching sweep can patch, in output order.
    pub const PATCHED: [Site; 4] = [Site::ResidPre, Site::AttnOut, Site::MlpOut, Site::HeadOut];
    /// What a probe can read: every `[batch, pos, d_model]` site.
    pub const PROBED: [Site; 5] = [
        Site::ResidPre,
        Site::ResidMid,
        Site::ResidPost,
        Site::AttnOut,
        Site::MlpOut,
    ];

    /// The hook at layer `l`.
    pub fn hook(self, l: usize) -> Hook {
        match self {
            Site::ResidPre => Hook::ResidPre(l),
            Site::ResidMid => Hook::ResidMid(l),
            Site::ResidPost => Hook::ResidPost(l),
            Site::AttnOut => Hook::AttnOut(l),
            Site::MlpOut => Hook::MlpOut(l),
            Site::HeadOut => Hook::Z(l),
        }
    }

    /// The hook at layer `l` of a model with `n_layer` layers; an error names the range.
    pub fn hook_in(self, l: usize, n_layer: usize) -> Result<Hook> {
        if l >= n_layer {
            input_err!("layer {l} is out of range (the model has {n_layer} layers: 0..{n_layer})");
        }
        Ok(self.hook(l))
    }

    /// Cells per (layer, position): `n_head` for heads, else 1.
    pub fn width(self, n_head: usize) -> usize {
        if self == Site::HeadOut {
            n_head
        } else {
            1
        }
    }

    /// Check that `self` is one of `allowed`; the error starts with `what` (the argument or field).
    pub fn check_in(self, allowed: &[Site], what: &str) -> Result<Site> {
        if !allowed.contains(&self) {
            let names: Vec<&str> = allowed.iter().map(|s| s.name()).collect();
            input_err!("{what}: takes {}, not '{self}'", names.join(", "));
        }
        Ok(self)
    }

    /// Parse a comma-separated list (`resid_pre,attn_out`) of sites in `allowed`, without
    /// repeats; `what` names the argument.
    pub fn parse_list(s: &str, allowed: &[Site], what: &str) -> Result<Vec<Site>> {
        let mut v = Vec::new();
        for name in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let c = name
                .parse::<Site>()
                .map_err(|e| crate::Error::input(format!("{what}: {e}")))?
                .check_in(allowed, what)?;
            if !v.contains(&c) {
                v.push(c);
            }
        }
        if v.is_empty() {
            input_err!("{what}: no components given");
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lists_are_checked() {
        for &s in Site::ALL {
            assert_eq!(s.name().parse::<Site>().unwrap(), s);
            assert_eq!(s.hook(2).layer(), Some(2));
        }
        let e = "resid_side".parse::<Site>().unwrap_err().to_string();
        assert!(e.contains("unknown component 'resid_side'"), "{e}");
        assert_eq!(
            Site::parse_list("attn_out, resid_pre,attn_out", &Site::PATCHED, "--hooks").unwrap(),
            vec![Site::AttnOut, Site::ResidPre]
        );
        let e = Site::parse_list("resid_mid", &Site::PATCHED, "--hooks").unwrap_err();
        assert!(e.to_string().contains("--hooks"), "{e}");
        assert!(Site::parse_list(" , ", &Site::PATCHED, "--hooks").is_err());
        assert!(Site::ResidPost.hook_in(4, 4).is_err());
    }
}
