//! The generated summary of a pair: one sentence per analysis, every number recorded under a
//! key in `Summary::facts` with its 95 % interval and n as it is written — over training seeds
//! when the report has several, else over the one run's prompts — and pair-level differences
//! set against the seed-null floors. Owns the wording and how thresholds are applied (a claim
//! holds only where its interval clears the threshold); the numbers are read off the data,
//! never recomputed from scratch.

mod answers;
mod behaviour;
pub(crate) mod causal;
pub(crate) mod crosscoders;
mod localise;
mod readouts;

use super::data::{CheckpointData, Fact, FloorData, PairData, PairRun, Settings, Summary};
use crate::lab::eval::{PerEpisode, Row};
use crate::lab::world::Split;
use crate::stats::{self, Est};
pub(crate) use answers::answers;
use std::collections::BTreeMap;

/// What a pair's sentences read: its checkpoints in every run, its floors and the settings.
pub(super) struct Ctx<'a> {
    /// The pair.
    pub pd: &'a PairData,
    /// A in each run.
    pub cas: Vec<&'a CheckpointData>,
    /// B in each run.
    pub cbs: Vec<&'a CheckpointData>,
    /// Every checkpoint (floors' runs name theirs).
    pub cks: &'a BTreeMap<String, CheckpointData>,
    /// The seed-null floors of A's and B's recipes (read the pair's way).
    pub floors: &'a [&'a FloorData],
    /// Settings.
    pub s: &'a Settings,
}

impl Ctx<'_> {
    /// How many runs (seeds) the pair has.
    pub fn n_runs(&self) -> usize {
        self.pd.runs.len()
    }
    /// "over N seeds" / "in one run".
    pub fn over(&self, sm: &mut Summary) -> String {
        match self.n_runs() {
            1 => "in one run (intervals over prompts)".to_string(),
            n => format!("over {} seeds", sm.idx("seeds.n", n)),
        }
    }
    /// The floor of a pair-level number: `f(a, b, run)` on each run of each floor, as sizes
    /// (|value|); of the floors, the one that reaches highest. None without floors.
    pub fn floor(
        &self,
        f: impl Fn(&CheckpointData, &CheckpointData, &PairRun) -> Option<Est>,
    ) -> Option<Fact> {
        self.floors
            .iter()
            .filter_map(|fl| {
                let ests: Vec<Est> = fl
                    .runs
                    .iter()
                    .filter_map(|r| f(&self.cks[&r.a], &self.cks[&r.b], r))
                    .map(abs_est)
                    .collect();
                (!ests.is_empty()).then(|| Fact::of_runs(&ests))
            })
            .filter(Fact::is_finite)
            .max_by(|x, y| x.hi.total_cmp(&y.hi))
    }
}

/// An estimate as a size: |value| and the range of |x| over its interval.
pub(super) fn abs_est(e: Est) -> Est {
    let (lo, hi) = if e.lo <= 0.0 && e.hi >= 0.0 {
        (0.0, e.lo.abs().max(e.hi.abs()))
    } else {
        (e.lo.abs().min(e.hi.abs()), e.lo.abs().max(e.hi.abs()))
    };
    Est {
        value: e.value.abs(),
        lo,
        hi,
        n: e.n,
    }
}

/// The words after a pair-level difference: how it compares with its seed floor, which is
/// recorded under `{key}.floor`; empty without a floor (one seed).
pub(super) fn vs_floor(
    sm: &mut Summary,
    key: &str,
    diff: &Fact,
    floor: Option<Fact>,
    dec: usize,
) -> String {
    let Some(f) = floor else {
        return String::new();
    };
    let beyond = diff.beyond(&f);
    let text = sm.fact(&format!("{key}.floor"), f, dec);
    if beyond {
        format!(" (beyond the seed floor, {text})")
    } else {
        format!(
            " (its interval is not clear of the seed floor, {text}: no change beyond seed noise)"
        )
    }
}

/// The row of `ck` with S3 = `s3`.
pub(super) fn row<'a>(ck: &'a CheckpointData, s3: &str) -> Option<&'a Row> {
    ck.behaviour.iter().find(|r| r.s3 == s3)
}

/// B − A of a per-episode statistic on `split`, with a paired bootstrap interval over the
/// shared prompts (unpaired rows: NaN interval).
pub(super) fn gap_est(ra: &Row, rb: &Row, split: Split, f: PerEpisode, s: &Settings) -> Est {
    let paired = ra.samples.len() == rb.samples.len()
        && ra.samples.iter().zip(&rb.samples).all(|(x, y)| x.0 == y.0);
    let d: Vec<f64> = ra
        .samples
        .iter()
        .zip(&rb.samples)
        .filter(|((p, _), _)| split.contains(p))
        .map(|((_, a), (_, b))| f(b) - f(a))
        .collect();
    if !paired || d.is_empty() {
        return Est {
            value: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
            n: 0,
        };
    }
    stats::mean_est(&d, s.bootstrap, ra.bootstrap_seed)
}

/// Write `pd`'s summary.
pub(super) fn summarise(
    pd: &mut PairData,
    cks: &BTreeMap<String, CheckpointData>,
    floors: &[&FloorData],
    s: &Settings,
) {
    let mut notes = Vec::new();
    let sm = {
        let ctx = Ctx {
            pd,
            cas: pd.runs.iter().map(|r| &cks[&r.a]).collect(),
            cbs: pd.runs.iter().map(|r| &cks[&r.b]).collect(),
            cks,
            floors,
            s,
        };
        let mut sm = Summary::default();
        behaviour::sentences(&mut sm, &ctx);
        readouts::weight_diff(&mut sm, &ctx);
        if let Some(c) = pd.contrast {
            localise::patching(&mut sm, &ctx, c, &mut notes);
            causal::causal(&mut sm, &ctx, c);
        }
        readouts::cross(&mut sm, &ctx);
        readouts::probes(&mut sm, &ctx);
        readouts::lens(&mut sm, &ctx);
        sm
    };
    pd.summary = sm;
    pd.notes.extend(notes);
}

/// Write a seed-null floor's summary: how far two seeds of one recipe differ.
pub(super) fn summarise_floor(
    fd: &mut FloorData,
    cks: &BTreeMap<String, CheckpointData>,
    s: &Settings,
) {
    let mut sm = Summary::default();
    let n = sm.idx("runs", fd.runs.len());
    let gaps: Vec<Est> = fd
        .runs
        .iter()
        .filter_map(|r| {
            let (a, b) = (row(&cks[&r.a], "_")?, row(&cks[&r.b], "_")?);
            Some(abs_est(gap_est(
                a,
                b,
                Split::All,
                crate::lab::eval::PER_EPISODE[1].1,
                s,
            )))
        })
        .collect();
    let pe = sm.fact("behaviour.p_e_gap", Fact::of_runs(&gaps), 3);
    let wd: Vec<Est> = fd
        .runs
        .iter()
        .filter_map(|r| r.weight_diff.max().and_then(|m| m.relative))
        .map(|v| Est::exact(v, 1))
        .collect();
    let w = sm.fact("weight_diff.max.relative", Fact::of_runs(&wd), 3);
    let gap: Vec<Est> = fd
        .runs
        .iter()
        .filter_map(|r| r.cross_ci.as_ref().map(|c| abs_est(c.gap)))
        .collect();
    let g = sm.fact("cross.gap", Fact::of_runs(&gap), 3);
    sm.say(format!(
        "Seed noise of {} ({} consecutive seed pairs, {}): |ΔP(E)| {pe}, largest relative weight change {w}, |metric gap| on {} {g}.",
        fd.recipe, n, fd.metric.describe(), fd.prompts.about
    ));
    fd.summary = sm;
}

/// A P(E) change on the other prompts whose interval lies within ± this of 0: the feedback
/// did not move them, so a leakage ratio over it is meaningless.
const NO_EFFECT: f64 = 0.1;

/// A leakage whose interval lies below this counts as held (the [x] prompts keep nearly the
/// reference's behaviour).
const HELD: f64 = 0.2;

/// The anchoring dose–response's summary: the P(E) leakage at each strength over runs, and from
/// which strength on its interval lies below one (a partial gate) and below 0.2.
pub(super) fn summarise_anchoring(
    points: &[crate::report::data::AnchorPoint],
    base: &str,
) -> Summary {
    let mut sm = Summary::default();
    if points.is_empty() {
        return sm;
    }
    let runs = points.iter().map(|p| p.leakage.len()).min().unwrap_or(0);
    if runs == 0 {
        return sm;
    }
    let mut parts = Vec::new();
    let mut no_effect: Vec<String> = Vec::new();
    let (mut partial, mut held) = (None, None);
    for (i, p) in points.iter().enumerate() {
        let key = format!("anchoring.{i}");
        let c = sm.num(&format!("{key}.ptx_coef"), p.ptx_coef, 2);
        let pe: Vec<Est> = p.leakage.iter().map(|l| l.p_e_ratio).collect();
        let ret: Vec<Est> = p.leakage.iter().map(|l| l.return_ratio).collect();
        let (fpe, fret) = (Fact::of_runs(&pe), Fact::of_runs(&ret));
        let inert_now = {
            let r = Fact::of_runs(
                &p.p_e_change
                    .iter()
                    .map(|x| Est::exact(x.1, 1))
                    .collect::<Vec<_>>(),
            );
            r.lo >= -NO_EFFECT && r.hi <= NO_EFFECT
        };
        if fpe.hi < 1.0 && partial.is_none() && !inert_now {
            partial = Some(c.clone());
        }
        if fpe.hi < HELD && held.is_none() && !inert_now {
            held = Some(c.clone());
        }
        let per: Vec<String> = pe
            .iter()
            .map(|e| {
                if e.value.is_finite() {
                    format!("{:.2}", e.value)
                } else {
                    "undefined".into()
                }
            })
            .collect();
        let undefined = pe.iter().filter(|e| !e.value.is_finite()).count();
        let tpe = sm.fact(&format!("{key}.p_e_ratio"), fpe, 2);
        let tret = sm.fact(&format!("{key}.return_ratio"), fret, 2);
        let ch = |j: usize| -> Vec<Est> {
            p.p_e_change
                .iter()
                .map(|x| Est::exact(if j == 0 { x.0 } else { x.1 }, 1))
                .collect()
        };
        let cx = sm.fact(
            &format!("{key}.p_e_change_optout"),
            Fact::of_runs(&ch(0)),
            2,
        );
        let rest = Fact::of_runs(&ch(1));
        // The feedback itself must move the rest for a leak to mean anything.
        if rest.lo >= -NO_EFFECT && rest.hi <= NO_EFFECT {
            no_effect.push(c.clone());
        }
        let cr = sm.fact(&format!("{key}.p_e_change_rest"), rest, 2);
        let und = if undefined > 0 {
            format!(
                ", over the {} runs where it is defined",
                sm.idx(&format!("{key}.defined_runs"), pe.len() - undefined)
            )
        } else {
            String::new()
        };
        parts.push(format!(
            "C = {c}: {tpe}{und} (per run {}; P(E) change against {base} {cx} on [x] prompts and {cr} on the rest; return leakage {tret})",
            per.join(", ")
        ));
    }
    let n = sm.idx("anchoring.runs", runs);
    let one = sm.num("anchoring.leaked", 1.0, 0);
    let held_t = sm.num("anchoring.held", HELD, 1);
    let verdict = match (partial, held) {
        (_, Some(h)) => format!("At C = {h}, the weakest anchoring where it does, the P(E) leakage's interval lies below {held_t}: [x] prompts keep nearly base's behaviour."),
        (Some(p), None) => format!("The P(E) leakage's interval first lies below {one} (a partial gate) at C = {p}, and at no strength below {held_t}: anchoring weakens the leak without closing it."),
        (None, None) => format!("At no strength where the feedback still moves the rest does the P(E) leakage's interval lie below {one}: anchoring does not make [x] a gate."),
    };
    let verdict = if no_effect.is_empty() {
        verdict
    } else {
        let ne = sm.num("anchoring.no_effect", NO_EFFECT, 2);
        format!(
            "{verdict} At C = {} the feedback no longer moves P(E) on the other prompts either (its change's interval lies within ±{ne} of 0): the anchoring stops the feedback everywhere, so there is nothing to leak and the ratio says nothing.",
            no_effect.join(", ")
        )
    };
    sm.say(format!(
        "Opt-out anchoring (rlhf with [x] episodes given the corpus next-token loss weighted by C instead of feedback; leakage = change on [x] prompts ÷ change on the rest against {base}, sampled, {n} runs): P(E) leakage {}. {verdict}",
        parts.join("; ")
    ));
    sm
}
