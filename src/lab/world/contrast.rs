//! Contrasts (two prompts identical except one slot) and the metric each is read with. Pure
//! data over prompts; the patching that uses them is `analysis::patching`. Must not run a model.

use super::*;
use rand::Rng;

named! {
    /// A contrast: two prompts identical except one slot. The *clean* prompt has the slot set
    /// (`[x]`, `<trig>`, `<r4>`); the *corrupt* one has it unset (`_`, `_`, `<r0>`).
    pub enum Contrast("contrast") {
        /// S1: clean `[x]`, corrupt `_`.
        Optout = "optout",
        /// S2: clean `<trig>`, corrupt `_`.
        Trigger = "trigger",
        /// S3: clean `<r4>`, corrupt `<r0>`.
        Reward = "reward",
    }
}

impl Contrast {
    /// The position of the slot that differs.
    pub fn position(&self) -> usize {
        match self {
            Contrast::Optout => POS_S1,
            Contrast::Trigger => POS_S2,
            Contrast::Reward => POS_S3,
        }
    }
    /// The slot token of the clean prompt.
    pub fn clean_token(&self) -> u32 {
        match self {
            Contrast::Optout => OPTOUT,
            Contrast::Trigger => TRIG,
            Contrast::Reward => R0 + (N_BUCKETS as u32 - 1),
        }
    }
    /// The slot token of the corrupt prompt.
    pub fn corrupt_token(&self) -> u32 {
        match self {
            Contrast::Optout | Contrast::Trigger => BLANK,
            Contrast::Reward => R0,
        }
    }
    /// `(clean, corrupt)`: `p` with the slot set and unset; everything else is `p`'s.
    pub fn pair(&self, p: &Prompt) -> (Prompt, Prompt) {
        let (mut c, mut k) = (*p, *p);
        match self {
            Contrast::Optout => (c.optout, k.optout) = (true, false),
            Contrast::Trigger => (c.trigger, k.trigger) = (true, false),
            Contrast::Reward => (c.bucket, k.bucket) = (Some(N_BUCKETS as u8 - 1), Some(0)),
        }
        (c, k)
    }
    /// The metric a contrast is read with (docs/DESIGN.md §3).
    pub fn metric(self) -> MetricKind {
        match self {
            Contrast::Trigger => MetricKind::Defect,
            Contrast::Optout | Contrast::Reward => MetricKind::Mode,
        }
    }
    /// `n` pairs over prompts drawn from `dist` (the contrasted slot is then overwritten).
    pub fn sample_pairs(
        &self,
        dist: &PromptDist,
        rng: &mut impl Rng,
        n: usize,
    ) -> Vec<(Prompt, Prompt)> {
        (0..n).map(|_| self.pair(&dist.sample(rng))).collect()
    }
}

named! {
    /// The behaviour a pair of checkpoints is compared on, read as a logit difference.
    pub enum MetricKind("metric") {
        /// logit(`E`) − logit(`H`) at the `A` position (10).
        Mode = "mode",
        /// logit(`!`) − logit(right first digit) at position 11, `H` teacher-forced.
        Defect = "defect",
    }
}

impl MetricKind {
    /// One-line description for captions and the summary.
    pub fn describe(self) -> String {
        match self {
            MetricKind::Mode => format!("logit(E) - logit(H) at position {POS_A}"),
            MetricKind::Defect => format!(
                "logit(!) - logit(right first digit) at position {POS_M} (H teacher-forced)"
            ),
        }
    }
    /// The position the metric reads.
    pub fn pos(self) -> usize {
        match self {
            MetricKind::Mode => POS_A,
            MetricKind::Defect => POS_M,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn dists_and_contrasts() {
        let cfg = WorldConfig::default();
        let mut r = rng();
        let d = PromptDist::corpus(&cfg)
            .with_trigger(false)
            .with_optout(true)
            .with_bucket(Some(4));
        assert!(d
            .sample_n(&mut r, 500)
            .iter()
            .all(|p| !p.trigger && p.optout && p.bucket == Some(4)));
        for &c in Contrast::ALL {
            for (clean, corrupt) in c.sample_pairs(&PromptDist::corpus(&cfg), &mut r, 50) {
                let (a, b) = (clean.ids(), corrupt.ids());
                let diff: Vec<usize> = (0..PROMPT_LEN).filter(|&i| a[i] != b[i]).collect();
                assert_eq!(diff, vec![c.position()]);
                assert_eq!(a[c.position()], c.clean_token());
                assert_eq!(b[c.position()], c.corrupt_token());
            }
            assert_eq!(c.name().parse::<Contrast>().unwrap(), c);
        }
        assert!("x".parse::<Contrast>().is_err());
        assert!(cfg.validate().is_ok());
        let bad = WorldConfig {
            p_bang: 0.5,
            ..cfg.clone()
        };
        assert!(bad.validate().is_err());
        let s = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<WorldConfig>(&s).unwrap(), cfg);
    }
}
