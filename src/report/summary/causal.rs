//! Causal-check sentences over seeds: what ablating each localised set does to the sampled
//! behaviour (mean and resample ablation, and the sufficiency direction), and how far steering
//! along the contrast's difference-of-means direction moves it. Verdicts hold at the interval
//! across seeds ("necessary" only when the change's interval excludes 0 towards the
//! corrupted side). Must not run a check: it reads the stored ones.

use super::Ctx;
use crate::analysis::causal::{self, Compared, Measure};
use crate::lab::world::Contrast;
use crate::report::data::{CausalData, CheckpointData, Fact, SetRole, Summary};
use crate::stats::Est;

/// The clean and corrupted prompts of a contrast, in words.
pub(crate) fn sides(c: Contrast) -> (&'static str, &'static str) {
    match c {
        Contrast::Optout => ("[x] prompts", "prompts without [x]"),
        Contrast::Trigger => ("<trig> prompts", "prompts without <trig>"),
        Contrast::Reward => ("<r4> prompts", "<r0> prompts"),
    }
}

/// The most frequent set name over runs and in how many runs it is the set.
fn modal(names: &[String]) -> (String, usize) {
    let mut best = (String::new(), 0);
    for n in names {
        let k = names.iter().filter(|m| *m == n).count();
        if k > best.1 {
            best = (n.clone(), k);
        }
    }
    best
}

/// Sentences for both checkpoints of the pair over contrast `c`.
pub(super) fn causal(sm: &mut Summary, ctx: &Ctx, c: Contrast) {
    for (who, cks) in [("a", &ctx.cas), ("b", &ctx.cbs)] {
        let cds: Vec<&CausalData> = cks.iter().filter_map(|ck| ck.causal.get(&c)).collect();
        if !cds.is_empty() {
            one(sm, ctx, who, cks, &cds, c);
        }
    }
}

fn one(
    sm: &mut Summary,
    ctx: &Ctx,
    who: &str,
    cks: &[&CheckpointData],
    cds: &[&CausalData],
    c: Contrast,
) {
    let name = &cks[0].name;
    let m = Measure::of(c);
    let (clean_s, corrupt_s) = sides(c);
    let k = format!("causal.{who}");
    let runs = cds.len();
    let of = |f: &dyn Fn(&CausalData) -> Est| -> Vec<Est> { cds.iter().map(|d| f(d)).collect() };
    let clean = sm.prop(&format!("{k}.clean"), &of(&|d| m.get(&d.ablation.clean)), 2);
    let corrupt = sm.prop(
        &format!("{k}.corrupt"),
        &of(&|d| m.get(&d.ablation.corrupt)),
        2,
    );
    let mut line = format!(
        "Causal check in {name} (sampled at T = 1, {} prompt pairs per run, {} of {} runs localised): unedited, {} is {clean} on {clean_s} and {corrupt} on {corrupt_s}",
        sm.idx("settings.n_causal", ctx.s.n_causal),
        sm.idx(&format!("{k}.runs"), runs),
        sm.idx("runs", cks.len()),
        m.name(),
    );
    let gap = Fact::of_runs(&of(&|d| m.get(&d.ablation.gap)));
    let toward_corrupt = |f: &Fact| {
        if gap.value >= 0.0 {
            f.hi < 0.0
        } else {
            f.lo > 0.0
        }
    };
    let toward_clean = |f: &Fact| {
        if gap.value >= 0.0 {
            f.lo > 0.0
        } else {
            f.hi < 0.0
        }
    };
    for role in SetRole::ALL {
        let per: Vec<(&CausalData, usize)> = cds
            .iter()
            .filter_map(|d| d.roles.iter().position(|r| r == role).map(|i| (*d, i)))
            .collect();
        if per.len() != runs {
            continue;
        }
        let abl = |f: &dyn Fn(&causal::Ablation) -> Compared| -> (Vec<Est>, Vec<Est>) {
            per.iter()
                .map(|(d, i)| {
                    let c = f(&d.ablation.ablations[*i]);
                    (m.get(&c.edited), m.get(&c.change))
                })
                .unzip()
        };
        let names: Vec<String> = per
            .iter()
            .map(|(d, i)| causal::names(&d.ablation.ablations[*i].set))
            .collect();
        let (set, count) = modal(&names);
        let kr = format!("{k}.{role}");
        // The positions in the set's names (`L1H0@11`) are numbers on the page: record them.
        if let Some((d, i)) = per
            .iter()
            .find(|(d, i)| causal::names(&d.ablation.ablations[*i].set) == set)
        {
            for (j, t) in d.ablation.ablations[*i].set.iter().enumerate() {
                sm.idx(&format!("{kr}.set.{j}.position"), t.pos);
            }
        }
        let count = sm.idx(&format!("{kr}.set_in_runs"), count);
        let (me, mc) = abl(&|a| a.mean);
        let (re, rc) = abl(&|a| a.resample);
        let (se, sc) = abl(&|a| a.sufficiency);
        let mean = sm.prop(&format!("{kr}.mean"), &me, 2);
        let resample = sm.prop(&format!("{kr}.resample"), &re, 2);
        let suff = sm.prop(&format!("{kr}.sufficiency"), &se, 2);
        let (mcf, rcf, scf) = (Fact::of_runs(&mc), Fact::of_runs(&rc), Fact::of_runs(&sc));
        let mct = sm.fact(&format!("{kr}.mean_change"), mcf.clone(), 2);
        let rct = sm.fact(&format!("{kr}.resample_change"), rcf.clone(), 2);
        let sct = sm.fact(&format!("{kr}.sufficiency_change"), scf.clone(), 2);
        let necessary = toward_corrupt(&mcf) || toward_corrupt(&rcf);
        let sufficient = toward_clean(&scf);
        let what = match role {
            SetRole::TopHead => "the top head",
            SetRole::TopMlp => "the top MLP",
            SetRole::Necessary => "the most necessary output",
            SetRole::Together => "the three together",
        };
        line += &format!(
            ". Ablating {what} ({set}, the set in {count} of {} runs) on {clean_s} gives {mean} (mean ablation; change {mct}) and {resample} (resampled from {corrupt_s}; change {rct}); its values from {clean_s} give {suff} on {corrupt_s} (change {sct}): {} and {}",
            sm.idx("runs", runs),
            if necessary { "necessary by its interval" } else { "not shown necessary" },
            if sufficient { "sufficient to move it by its interval" } else { "not shown sufficient" },
        );
    }
    sm.say(line + ".");
    steering(sm, who, name, cds, c);
}

/// The steering sentence: the layer where α = 1 (or the largest α) moves the corrupted
/// prompts most, and the projection at that layer.
fn steering(sm: &mut Summary, who: &str, name: &str, cds: &[&CausalData], c: Contrast) {
    let st0 = &cds[0].steering;
    let m = st0.measure;
    let (clean_s, corrupt_s) = sides(c);
    let Some(ai) = st0
        .alphas
        .iter()
        .position(|&a| a == 1.0)
        .or_else(|| (!st0.alphas.is_empty()).then(|| st0.alphas.len() - 1))
    else {
        return;
    };
    let n_layers = st0.layers.len();
    if n_layers == 0 || cds.iter().any(|d| d.steering.layers.len() != n_layers) {
        return;
    }
    let at = |li: usize| -> Vec<Est> {
        cds.iter()
            .map(|d| m.get(&d.steering.layers[li].doses[ai].change))
            .collect()
    };
    let Some(best) = (0..n_layers).max_by(|&x, &y| {
        let (fx, fy) = (Fact::of_runs(&at(x)), Fact::of_runs(&at(y)));
        fx.value.abs().total_cmp(&fy.value.abs())
    }) else {
        return;
    };
    let k = format!("causal.{who}.steer");
    let layer = sm.idx(&format!("{k}.layer"), st0.layers[best].layer);
    let alpha = sm.num(&format!("{k}.alpha"), st0.alphas[ai], 1);
    let edited: Vec<Est> = cds
        .iter()
        .map(|d| m.get(&d.steering.layers[best].doses[ai].edited))
        .collect();
    let edited = sm.prop(&format!("{k}.edited"), &edited, 2);
    let change = sm.runs(&format!("{k}.change"), &at(best), 2);
    let proj: Vec<Est> = cds
        .iter()
        .map(|d| m.get(&d.steering.layers[best].project_out.change))
        .collect();
    let pf = Fact::of_runs(&proj);
    let moved = !(pf.lo <= 0.0 && pf.hi >= 0.0);
    let proj = sm.fact(&format!("{k}.project_change"), pf, 2);
    let pos = sm.idx(&format!("{k}.pos"), st0.pos);
    sm.say(format!(
        "Steering {name} along Δ = mean({clean_s}) − mean({corrupt_s}) of resid_post at position {pos}: adding {alpha}·Δ at layer {layer} (the layer that moves it most; every layer and α in the figure) takes {} on {corrupt_s} to {edited} (change {change}); projecting Δ's direction out of {clean_s} at that layer changes it by {proj}{}.",
        m.name(),
        if moved { "" } else { " (its interval holds 0: removing one direction at one position does not undo it)" },
    ));
}
