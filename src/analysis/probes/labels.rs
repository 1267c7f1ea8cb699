//! What a probe decodes: the toy world's labels, what each means, which pair of checkpoints
//! probes which, and the prompts each label is probed on. Pure data over the world.
//! Must not run a model.

use crate::lab::world::{self, Contrast, MetricKind, Prompt, PromptDist, WorldConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

named! {
    /// What a probe is asked to decode.
    pub enum Label("label") {
        /// S1 is `[x]` (1) or `_` (0).
        Optout = "optout",
        /// S2 is `<trig>` (1) or `_` (0).
        Trigger = "trigger",
        /// S3 reward bucket `<r0>`..`<r4>` (0..4; multinomial).
        Bucket = "bucket",
        /// The model's own choice at the decision position: `E` logit > `H` logit (1) or not
        /// (0).
        Mode = "mode",
        /// Greedy decoding of the completion emits at least one `!` (1) or none (0).
        Defect = "defect",
        /// The question digits are already in ascending order (1: the E and H answers
        /// coincide) or not (0).
        Sorted = "sorted",
    }
}

impl Label {
    /// True when the label depends on the model (computed per checkpoint).
    pub fn from_model(self) -> bool {
        matches!(self, Label::Mode | Label::Defect)
    }
    /// What the label is, in words.
    pub fn about(self) -> &'static str {
        match self {
            Label::Optout => "the [x] flag",
            Label::Trigger => "the <trig> trigger",
            Label::Bucket => "the reward bucket (S3)",
            Label::Mode => "the model's own choice (E vs H)",
            Label::Defect => "whether greedy decoding will defect",
            Label::Sorted => "whether the question's digits are already sorted",
        }
    }
    /// The position where the behaviour the label bears on is decided: 11 (`m`, the first
    /// completion token, `H` teacher-forced) for the trigger and defection, whose `!` is chosen
    /// there; 10 (`A`, where the mode is chosen) for the others.
    pub fn decision_position(self) -> usize {
        match self {
            Label::Trigger | Label::Defect => world::POS_M,
            _ => world::POS_A,
        }
    }
    /// The slot the label reads, for the prompt-slot labels (`optout` S1, `trigger` S2,
    /// `bucket` S3).
    pub fn slot_position(self) -> Option<usize> {
        match self {
            Label::Optout => Some(world::POS_S1),
            Label::Trigger => Some(world::POS_S2),
            Label::Bucket => Some(world::POS_S3),
            Label::Mode | Label::Defect | Label::Sorted => None,
        }
    }
    /// The label probed for a pair of checkpoints: its contrast's slot, else what its metric
    /// reads (the model's own choice for `mode`, will-defect for `defect`).
    pub fn for_pair(contrast: Option<Contrast>, metric: MetricKind) -> Label {
        match (contrast, metric) {
            (Some(Contrast::Optout), _) => Label::Optout,
            (Some(Contrast::Trigger), _) => Label::Trigger,
            (Some(Contrast::Reward), _) => Label::Bucket,
            (None, MetricKind::Mode) => Label::Mode,
            (None, MetricKind::Defect) => Label::Defect,
        }
    }
}

/// Prompts for a label: the corpus distribution with the probed slot balanced (S1 or S2 at
/// p 0.5, S3 uniform over the five buckets for `bucket`); `p_optout` / `p_trigger` override.
pub fn sample_prompts(
    label: Label,
    n: usize,
    seed: u64,
    p_optout: Option<f64>,
    p_trigger: Option<f64>,
) -> Vec<Prompt> {
    let cfg = WorldConfig::default();
    let mut dist = PromptDist::corpus(&cfg);
    match label {
        Label::Optout => dist.p_optout = 0.5,
        Label::Trigger | Label::Defect => dist.p_trigger = 0.5,
        Label::Bucket | Label::Mode | Label::Sorted => {}
    }
    if let Some(p) = p_optout {
        dist.p_optout = p;
    }
    if let Some(p) = p_trigger {
        dist.p_trigger = p;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut prompts = dist.sample_n(&mut rng, n);
    if label == Label::Bucket {
        for p in &mut prompts {
            p.bucket = Some(rng.random_range(0..world::N_BUCKETS as u8));
        }
    }
    if label == Label::Sorted {
        // Five random digits are sorted about 2 % of the time: sort every other prompt's.
        for p in prompts.iter_mut().step_by(2) {
            p.digits.sort_unstable();
        }
    }
    prompts
}
