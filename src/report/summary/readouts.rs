//! Sentences for the pair-level readouts over seeds: the weight diff (headline: the largest
//! change relative to its seed floor), cross-checkpoint patching (the gap against its floor,
//! shares only where they mean something), probes (decodable only where the interval clears
//! the threshold at that layer and every later one; transfer) and the logit lens. Must not run
//! an analysis.

use super::{abs_est, vs_floor, Ctx};
use crate::analysis::site::Site;
use crate::report::data::{lens_series, CheckpointData, Fact, LensData, Summary};
use crate::stats::Est;

/// `f` as a percentage fact (value and interval ×100).
fn percent(f: Fact) -> Fact {
    Fact {
        value: 100.0 * f.value,
        lo: 100.0 * f.lo,
        hi: 100.0 * f.hi,
        ..f
    }
}

/// The weight-diff sentence: "no change" when B equals A in every run; else the component
/// with the largest absolute change ‖B − A‖ (mean over runs), its relative change, and — when
/// another component has the largest relative change — that one too (a small matrix inflates
/// its relative norm), each beside the same component's seed floor as a scale.
pub(super) fn weight_diff(sm: &mut Summary, ctx: &Ctx) {
    use crate::analysis::diff::Headline;
    let pd = ctx.pd;
    let Some(first) = pd.runs.first() else { return };
    let (a, b) = (&pd.a, &pd.b);
    if pd
        .runs
        .iter()
        .all(|r| r.weight_diff.headline() == Headline::NoChange)
    {
        sm.num("weight_diff.max_abs.absolute", 0.0, 3);
        sm.say(format!(
            "Weight diff: no change: {b} has exactly {a}'s weights in every run (‖B − A‖ = 0 in every component)."
        ));
        return;
    }
    // Per component, each run's value of `f`.
    let per = |i: usize, f: fn(&crate::analysis::diff::ComponentDiff) -> Option<f64>| {
        let v: Option<Vec<Est>> = pd
            .runs
            .iter()
            .map(|r| {
                let c = r.weight_diff.components.get(i)?;
                f(c).map(|v| Est::exact(v, c.n_params))
            })
            .collect();
        v.map(|v| Fact::of_runs(&v))
    };
    let abs_of = |c: &crate::analysis::diff::ComponentDiff| Some(c.norm_diff);
    let rel_of = |c: &crate::analysis::diff::ComponentDiff| c.relative;
    let n = first.weight_diff.components.len();
    let argmax = |f: fn(&crate::analysis::diff::ComponentDiff) -> Option<f64>| {
        (0..n)
            .filter_map(|i| per(i, f).filter(Fact::is_finite).map(|x| (i, x.value)))
            .fold(None, |best: Option<(usize, f64)>, x| match best {
                Some(b) if b.1 >= x.1 => Some(b),
                _ => Some(x),
            })
            .map(|b| b.0)
    };
    let Some(ia) = argmax(abs_of) else { return };
    let wher = |sm: &mut Summary, key: &str, i: usize| {
        let c = &first.weight_diff.components[i];
        match c.group.parse::<usize>() {
            Ok(l) => format!("{} of layer {}", c.component, sm.idx(key, l)),
            Err(_) => format!("{} ({})", c.component, c.group),
        }
    };
    let floor_txt = |sm: &mut Summary,
                     key: &str,
                     i: usize,
                     f: fn(&crate::analysis::diff::ComponentDiff) -> Option<f64>,
                     v: f64| {
        let fl = ctx.floor(|_, _, r| {
            let c = r.weight_diff.components.get(i)?;
            f(c).map(|v| Est::exact(v, c.n_params))
        });
        match fl {
            Some(fl) if fl.value > 0.0 => {
                let ratio = v / fl.value;
                let ft = sm.fact(&format!("{key}.floor"), fl, 3);
                let rt = sm.num(&format!("{key}.ratio_to_floor"), ratio, 2);
                format!(", {rt} times the same component's difference between two seeds of one recipe, {ft}")
            }
            _ => String::new(),
        }
    };
    let at = wher(sm, "weight_diff.max_abs.layer", ia);
    let abs_f = per(ia, abs_of).unwrap_or(Fact::exact(f64::NAN));
    let absv = abs_f.value;
    let abst = sm.fact("weight_diff.max_abs.absolute", abs_f, 3);
    let relt = match per(ia, rel_of) {
        Some(f) => sm.fact("weight_diff.max_abs.relative", f, 3),
        None => "undefined".into(),
    };
    let fl_a = floor_txt(sm, "weight_diff.max_abs.absolute", ia, abs_of, absv);
    let mut line = format!(
        "Weight diff from {a} to {b}: the largest absolute change is in {at}, ‖B − A‖ {abst} (relative {relt}){fl_a}"
    );
    if let Some(ir) = argmax(rel_of).filter(|&ir| ir != ia) {
        let at = wher(sm, "weight_diff.max_rel.layer", ir);
        let rel_f = per(ir, rel_of).unwrap_or(Fact::exact(f64::NAN));
        let relv = rel_f.value;
        let relt = sm.fact("weight_diff.max_rel.relative", rel_f, 3);
        let norm = per(ir, |c| Some(c.norm_a)).unwrap_or(Fact::exact(f64::NAN));
        let normt = sm.fact("weight_diff.max_rel.norm_a", norm, 3);
        let fl_r = floor_txt(sm, "weight_diff.max_rel.relative", ir, rel_of, relv);
        line += &format!(
            "; the largest relative change is in {at}, {relt} of its norm ‖A‖ {normt}{fl_r} (a small matrix inflates its relative norm)"
        );
    }
    sm.say(line + ". Two seeds of a recipe come from independent zoos, so the seed differences are a scale per component, not a null.");
}

/// The cross-checkpoint sentence.
pub(super) fn cross(sm: &mut Summary, ctx: &Ctx) {
    let (pd, s) = (ctx.pd, ctx.s);
    let cis: Option<Vec<_>> = pd.runs.iter().map(|r| r.cross_ci.as_ref()).collect();
    let Some(cis) = cis.filter(|c| !c.is_empty()) else {
        return;
    };
    let (a, b) = (&pd.a, &pd.b);
    if let Some(why) = pd.runs.iter().find_map(|r| r.cross_refused.as_ref()) {
        refused(sm, ctx, &cis, why);
        return;
    }
    let ma = sm.runs(
        "cross.a_metric",
        &cis.iter().map(|c| c.a_metric).collect::<Vec<_>>(),
        2,
    );
    let mb = sm.runs(
        "cross.b_metric",
        &cis.iter().map(|c| c.b_metric).collect::<Vec<_>>(),
        2,
    );
    let gap = Fact::of_runs(&cis.iter().map(|c| c.gap).collect::<Vec<_>>());
    let gt = sm.fact("cross.gap", gap.clone(), 2);
    let floor = ctx.floor(|_, _, r| r.cross_ci.as_ref().map(|c| c.gap));
    let beyond_floor = floor.as_ref().is_none_or(|f| gap.lo_abs() > f.hi);
    let fl = vs_floor(sm, "cross.gap", &gap, floor, 2);
    let np = sm.idx("cross.n_prompts", pd.runs[0].cross.n_prompts);
    let mut line = format!(
        "Cross-checkpoint patching on {np} {}: the metric is {ma} in {a} and {mb} in {b}, a gap of {gt}{fl}",
        pd.prompts.about
    );
    if gap.lo_abs() == 0.0 || gap.value.abs() < s.min_gap || !beyond_floor {
        let m = sm.num("settings.min_gap", s.min_gap, 1);
        line += &format!(
            ": nothing to localise (the gap's interval reaches 0, it is below {m} logits, or it is within the seed floor)."
        );
        sm.say(line);
        return;
    }
    // A component that moves B far more than the gap makes shares meaningless.
    let over: Vec<_> = pd
        .runs
        .iter()
        .filter_map(|r| r.cross.overshoot(s.overshoot))
        .collect();
    if let Some(o) = over.first() {
        let k = sm.num("settings.overshoot", s.overshoot, 0);
        let runs = sm.idx("cross.overshoot.runs", over.len());
        let moves: Vec<Est> = pd
            .runs
            .iter()
            .filter_map(|r| {
                let ci = r.cross_ci.as_ref()?;
                let (_, v) = ci.moved.iter().find(|(site, _)| *site == o.site)?;
                v.get(o.index).copied()
            })
            .collect();
        let mv = sm.runs("cross.overshoot.move", &moves, 2);
        line += &format!(
            ". In {runs} of {} runs one patch moves the metric by more than {k} times the gap (largest: {a}'s {} at layer {} into {b}, all positions, moves it by {mv}), so shares of the gap are not meaningful here.",
            sm.idx("runs", pd.runs.len()),
            o.site,
            sm.idx("cross.overshoot.layer", pd.runs[0].cross.layers[o.index]),
        );
        sm.say(line);
        return;
    }
    let mut parts = Vec::new();
    // Per-layer components only: a resid_pre share is cumulative (it carries everything
    // computed before that layer), so its "layer" only says how late.
    for site in [Site::AttnOut, Site::MlpOut] {
        // Per run the layer whose patch carries the largest share; the most frequent one.
        let best: Vec<Option<usize>> = cis
            .iter()
            .map(|c| {
                let (_, v) = c.share.as_ref()?.iter().find(|(x, _)| *x == site)?;
                v.iter()
                    .enumerate()
                    .filter(|(_, e)| e.value.is_finite())
                    .max_by(|x, y| x.1.value.total_cmp(&y.1.value))
                    .map(|(i, _)| i)
            })
            .collect();
        let Some(&Some(first)) = best.iter().find(|b| b.is_some()) else {
            continue;
        };
        let mode = (0..pd.runs[0].cross.layers.len())
            .max_by_key(|&i| {
                (
                    best.iter().filter(|b| **b == Some(i)).count(),
                    usize::MAX - i,
                )
            })
            .unwrap_or(first);
        let count = best.iter().filter(|b| **b == Some(mode)).count();
        let shares: Option<Vec<Est>> = cis
            .iter()
            .map(|c| {
                let (_, v) = c.share.as_ref()?.iter().find(|(x, _)| *x == site)?;
                v.get(mode).copied()
            })
            .collect();
        let Some(shares) = shares else { continue };
        let share = percent(Fact::of_runs(&shares));
        let carries = if share.lo > 0.0 {
            "carries"
        } else {
            "has the largest share, with an interval that holds 0:"
        };
        let sh = sm.fact(&format!("cross.{site}.best_share_percent"), share, 0);
        parts.push(format!(
            "{site} at layer {} {carries} {sh} % (the top layer in {} of {} runs)",
            sm.idx(
                &format!("cross.{site}.best_layer"),
                pd.runs[0].cross.layers[mode]
            ),
            sm.idx(&format!("cross.{site}.top_in_runs"), count),
            sm.idx("runs", pd.runs.len()),
        ));
    }
    if parts.is_empty() {
        line += ".";
    } else {
        line += &format!(
            ". Patching {a}'s activations into {b} (all positions), {} of the gap.",
            parts.join(", ")
        );
    }
    sm.say(line);
    specific(sm, ctx);
}

/// The slot-specific part of cross-checkpoint patching: the gap and each attention or MLP
/// output's move on the contrast prompts minus the same on the control prompts, over runs.
fn specific(sm: &mut Summary, ctx: &Ctx) {
    let pd = ctx.pd;
    let sps: Option<Vec<&crate::analysis::patching::Specific>> =
        pd.runs.iter().map(|r| r.specific.as_ref()).collect();
    let Some(sps) = sps.filter(|v| !v.is_empty()) else {
        return;
    };
    let Some(control) = pd.prompts.control_about.as_ref() else {
        return;
    };
    let gk: Vec<Est> = pd
        .runs
        .iter()
        .filter_map(|r| {
            r.cross_control
                .as_ref()?
                .intervals(ctx.s.bootstrap, ctx.s.seed)
        })
        .map(|c| c.gap)
        .collect();
    let gk = sm.runs("cross.control.gap", &gk, 2);
    let gs = Fact::of_runs(&sps.iter().map(|x| x.gap).collect::<Vec<_>>());
    let gs_t = sm.fact("cross.specific.gap", gs.clone(), 2);
    let (a, b) = (&pd.a, &pd.b);
    let mut line = format!(
        "On the control prompts ({control}) the A − B gap is {gk}; the part specific to the slot (contrast gap minus control gap, paired over prompts) is {gs_t}"
    );
    if gs.lo <= 0.0 && gs.hi >= 0.0 {
        line += ": its interval holds 0, so the gap is a difference between the two training runs, not about the slot.";
        sm.say(line);
        return;
    }
    // The (site, layer) whose slot-specific move is largest where every run's interval agrees.
    let mut best: Option<(Site, usize, Fact)> = None;
    for site in [Site::AttnOut, Site::MlpOut] {
        let n_layer = sps[0]
            .moved
            .iter()
            .find(|(s, _)| *s == site)
            .map_or(0, |(_, v)| v.len());
        for l in 0..n_layer {
            let v: Option<Vec<Est>> = sps
                .iter()
                .map(|x| x.moved.iter().find(|(s, _)| *s == site)?.1.get(l).copied())
                .collect();
            let Some(v) = v else { continue };
            let f = Fact::of_runs(&v);
            let excludes = f.lo > 0.0 || f.hi < 0.0;
            if excludes
                && best
                    .as_ref()
                    .is_none_or(|b| f.value.abs() > b.2.value.abs())
            {
                best = Some((site, l, f));
            }
        }
    }
    match best {
        Some((site, l, f)) => {
            let layer = pd.runs[0].cross.layers.get(l).copied().unwrap_or(l);
            let t = sm.fact("cross.specific.best.moved", f, 2);
            line += &format!(
                ". Of that, {a}'s {site} at layer {} moves {b} by {t} logits more on the contrast prompts than on the controls, the largest slot-specific move of any attention or MLP output whose interval excludes 0.",
                sm.idx("cross.specific.best.layer", layer)
            );
        }
        None => {
            line += ". No single attention or MLP output's slot-specific move has an interval that excludes 0.";
        }
    }
    sm.say(line);
}

/// Cross-checkpoint patching refused (no shared initialisation): the gap, and linear CKA of
/// the two models' residual streams per layer instead.
fn refused(sm: &mut Summary, ctx: &Ctx, cis: &[&crate::analysis::patching::CrossCi], why: &str) {
    let pd = ctx.pd;
    let gap = sm.runs(
        "cross.gap",
        &cis.iter().map(|c| c.gap).collect::<Vec<_>>(),
        2,
    );
    let np = sm.idx("cross.n_prompts", pd.runs[0].cross.n_prompts);
    let mut line = format!(
        "Cross-checkpoint patching is not run: {why}. The metric gap on {np} {} is {gap}",
        pd.prompts.about
    );
    let n_layer = pd.runs.iter().map(|r| r.cka.len()).min().unwrap_or(0);
    if n_layer > 0 {
        let parts: Vec<String> = (0..n_layer)
            .map(|l| {
                let v: Vec<Est> = pd.runs.iter().map(|r| Est::exact(r.cka[l], 1)).collect();
                let f = Fact::of_proportion(&v);
                format!("layer {l} {}", sm.fact(&format!("cross.cka.{l}"), f, 2))
            })
            .collect();
        let pos = ctx.cas[0]
            .probes
            .get(&pd.probe_label)
            .map_or(crate::lab::world::POS_A, |p| p.position);
        line += &format!(
            ". Their representations compared instead, by linear CKA of resid_post at position {} on the probe prompts (1 = the same up to rotation and scale): {}; the probe of one scored on the other is below",
            sm.idx("cross.cka.position", pos),
            parts.join(", ")
        );
    }
    sm.say(line + ".");
}

/// Per run, one layer's probe numbers on checkpoint `ck` as estimates: accuracy, control-task
/// accuracy, AUROC and the best random direction's AUROC (exact: a null statistic).
fn probe_at(
    ck: &CheckpointData,
    which: Which,
    label: crate::analysis::probes::Label,
    l: usize,
) -> Option<[Est; 4]> {
    let lr = which(ck).get(&label)?.layers.get(l)?;
    let ci = lr.ci.as_ref()?;
    Some([
        ci.accuracy,
        ci.control_accuracy?,
        ci.auroc,
        Est::exact(lr.random_best_auroc?, ci.auroc.n),
    ])
}

/// The probe sentences: per checkpoint where the label is decodable (the accuracy's interval
/// clears the threshold and the control task's interval, and the AUROC's clears the best
/// random direction, at that layer and every later one), or that it is not, and whether the
/// probe loses to the random-direction null; then transfer at the last layer by AUROC and
/// balanced accuracy, with one-class predictors flagged.
pub(super) fn probes(sm: &mut Summary, ctx: &Ctx) {
    let (pd, s) = (ctx.pd, ctx.s);
    let label = pd.probe_label;
    let thr = sm.num("settings.decodable", s.decodable, 2);
    let parts = decodable_parts(sm, ctx, |c| &c.probes, "probes");
    if parts.is_empty() {
        return;
    }
    let pos = ctx.cas[0]
        .probes
        .get(&label)
        .map_or(crate::lab::world::POS_A, |p| p.position);
    let pos = sm.idx("probes.position", pos);
    let nd = sm.idx("settings.null_directions", s.null_directions);
    let sat = sm.num("settings.saturated_auroc", SATURATED, 2);
    sm.say(format!(
        "Probes for {} (logistic, resid_post at position {pos}, the decision position; decodable = at that layer and every later one the held-out accuracy's interval is at least {thr} and above the control task's, and the AUROC's above the best of {nd} random directions, or both at least {sat}: saturated): {}.",
        label.about(),
        parts.join("; ")
    ));
    let slot = decodable_parts(sm, ctx, |c| &c.slot_probes, "slot_probes");
    if let (false, Some(p)) = (slot.is_empty(), label.slot_position()) {
        let p = sm.idx("slot_probes.position", p);
        sm.say(format!(
            "At the slot itself (position {p}, where the label is the token) by the same test: {}.",
            slot.join("; ")
        ));
    }
    transfer_sentence(sm, ctx);
}

/// An AUROC at which every direction separates the label: the null cannot be beaten.
const SATURATED: f64 = 0.99;

/// Which probes of a checkpoint a sentence reads (decision-position or slot probes).
type Which = fn(
    &CheckpointData,
) -> &std::collections::BTreeMap<
    crate::analysis::probes::Label,
    crate::report::data::ProbeData,
>;

/// Per checkpoint of the pair: where the label is decodable by the report's test, or the best
/// layer when nowhere, and whether the probe loses to the random-direction null.
fn decodable_parts(sm: &mut Summary, ctx: &Ctx, which: Which, key: &str) -> Vec<String> {
    let (pd, s) = (ctx.pd, ctx.s);
    let label = pd.probe_label;
    let mut parts = Vec::new();
    for (who, cks) in [("a", &ctx.cas), ("b", &ctx.cbs)] {
        let name = &cks[0].name;
        let probed: Vec<_> = cks.iter().filter_map(|c| which(c).get(&label)).collect();
        if probed.len() != cks.len() {
            continue;
        }
        if probed.iter().any(|p| p.skipped.is_some()) {
            let k = probed.iter().filter(|p| p.skipped.is_some()).count();
            parts.push(format!(
                "{name} not probed in {} of {} runs (the label has one class only)",
                sm.idx(&format!("{key}.{who}.skipped_runs"), k),
                sm.idx("runs", cks.len())
            ));
            continue;
        }
        let n_layer = probed[0].layers.len();
        // [accuracy, control, auroc, random best] over runs.
        let at = |l: usize| -> Option<[Fact; 4]> {
            let v: Option<Vec<[Est; 4]>> =
                cks.iter().map(|c| probe_at(c, which, label, l)).collect();
            let v = v?;
            Some(std::array::from_fn(|j| {
                Fact::of_proportion(&v.iter().map(|x| x[j]).collect::<Vec<_>>())
            }))
        };
        // Decodable: accuracy clears the threshold and the control task, and the AUROC clears
        // the best random direction; or every direction separates the label (the null is
        // itself ≥ 0.99, and so is the probe's AUROC): saturated, said so.
        let saturated = |f: &[Fact; 4]| f[3].value >= SATURATED && f[2].lo >= SATURATED;
        let decodable = |f: &[Fact; 4]| {
            f[0].clears(s.decodable) && f[0].lo > f[1].hi && (f[2].lo > f[3].hi || saturated(f))
        };
        let k = format!("{key}.{who}");
        let first = (0..n_layer)
            .rev()
            .take_while(|&l| at(l).is_some_and(|f| decodable(&f)))
            .last();
        // Loses to the null: the AUROC's interval lies below the best random direction's.
        let loses: Vec<usize> = (0..n_layer)
            .filter(|&l| at(l).is_some_and(|f| f[2].hi < f[3].lo))
            .collect();
        match first.and_then(|l| at(l).map(|f| (l, f))) {
            Some((l, f)) => {
                let sat = saturated(&f);
                let [acc, ctrl, au, rnd] = f;
                let a = sm.fact(&format!("{k}.first.accuracy"), acc, 2);
                let c = sm.fact(&format!("{k}.first.control_accuracy"), ctrl, 2);
                let u = sm.fact(&format!("{k}.first.auroc"), au, 2);
                let r = sm.fact(&format!("{k}.first.random_auroc"), rnd, 2);
                let sat = if sat {
                    ", so strongly that random directions separate it too: present, but not shown to be one direction"
                } else {
                    ""
                };
                parts.push(format!(
                    "{name} decodable from layer {} on (accuracy {a} against the control task's {c}; AUROC {u} against the best random direction's {r}{sat})",
                    sm.idx(&format!("{k}.first.layer"), l)
                ));
            }
            None => {
                let best = (0..n_layer)
                    .filter_map(|l| at(l).map(|f| (l, f)))
                    .max_by(|x, y| x.1[0].value.total_cmp(&y.1[0].value));
                if let Some((l, [acc, ctrl, au, rnd])) = best {
                    let a = sm.fact(&format!("{k}.best.accuracy"), acc, 2);
                    let c = sm.fact(&format!("{k}.best.control_accuracy"), ctrl, 2);
                    let u = sm.fact(&format!("{k}.best.auroc"), au, 2);
                    let r = sm.fact(&format!("{k}.best.random_auroc"), rnd, 2);
                    parts.push(format!(
                        "{name} decodable at no layer by these intervals (best: accuracy {a} at layer {}, control task {c}, AUROC {u}, best random direction {r})",
                        sm.idx(&format!("{k}.best.layer"), l)
                    ));
                }
            }
        }
        if !loses.is_empty() && loses.len() == n_layer {
            parts.push(format!(
                "{name}'s probe loses to the null: its AUROC's interval lies below the best random direction's at every layer"
            ));
        } else if !loses.is_empty() {
            let ls: Vec<String> = loses.iter().map(|l| l.to_string()).collect();
            sm.num(&format!("{k}.loses_to_null_layers"), loses.len() as f64, 0);
            parts.push(format!(
                "{name}'s probe AUROC's interval lies below the best random direction's at layer{} {}",
                if loses.len() > 1 { "s" } else { "" },
                ls.join(", ")
            ));
        }
    }
    parts
}

/// The transfer sentence.
fn transfer_sentence(sm: &mut Summary, ctx: &Ctx) {
    let pd = ctx.pd;
    let label = pd.probe_label;
    // Transfer at the last layer: does B read the label the way A does? By AUROC (threshold
    // free) and balanced accuracy; plain accuracy misleads when the probe predicts one class.
    let last: Option<Vec<crate::analysis::probes::layers::ScoresEst>> = pd
        .runs
        .iter()
        .map(|r| {
            let t = r.probe_transfer.iter().find(|t| t.from == r.a)?;
            t.ci.last().copied()
        })
        .collect();
    if let Some(v) = last.filter(|v| !v.is_empty()) {
        let n_layer = ctx.cbs[0].probes.get(&label).map_or(0, |p| p.layers.len());
        let au = sm.prop(
            "probes.transfer_ab.last.auroc",
            &v.iter().map(|x| x.auroc).collect::<Vec<_>>(),
            2,
        );
        let bal: Option<Vec<Est>> = v.iter().map(|x| x.balanced_accuracy).collect();
        let bal = bal.map_or("undefined".into(), |b| {
            sm.prop("probes.transfer_ab.last.balanced_accuracy", &b, 2)
        });
        let acc = sm.prop(
            "probes.transfer_ab.last.accuracy",
            &v.iter().map(|x| x.accuracy).collect::<Vec<_>>(),
            2,
        );
        let one = v.iter().filter(|x| x.one_class()).count();
        let one_t = if one > 0 {
            format!(
                "; it predicts one class for every prompt in {} of {} runs, so its plain accuracy is that class's share",
                sm.idx("probes.transfer_ab.last.one_class_runs", one),
                sm.idx("runs", v.len())
            )
        } else {
            String::new()
        };
        let l = sm.idx("probes.transfer_ab.last.layer", n_layer.saturating_sub(1));
        let (a, b) = (&pd.a, &pd.b);
        sm.say(format!(
            "A probe fitted on {a}, scored on {b} at layer {l}: AUROC {au}, balanced accuracy {bal} (accuracy {acc}{one_t})."
        ));
    }
}

/// The lens sentence.
pub(super) fn lens(sm: &mut Summary, ctx: &Ctx) {
    let pd = ctx.pd;
    let key = &pd.prompts.key;
    let la: Option<Vec<&LensData>> = ctx.cas.iter().map(|c| c.lens.get(key)).collect();
    let lb: Option<Vec<&LensData>> = ctx.cbs.iter().map(|c| c.lens.get(key)).collect();
    let (Some(la), Some(lb)) = (la, lb) else {
        return;
    };
    let Some(first) = la.first() else { return };
    let names = lens_series(&first.result);
    let (t0, t1) = (names[0].0.clone(), names[1].0.clone());
    let points = first.result.points.len();
    let last = points - 1;
    let at = |ls: &[&LensData], series: usize, k: usize| -> Fact {
        let v: Vec<Est> = ls.iter().map(|l| l.series[series].values[k]).collect();
        Fact::of_proportion(&v)
    };
    let pa = sm.fact("lens.a.final.first", at(&la, 0, last), 2);
    let pb = sm.fact("lens.b.final.first", at(&lb, 0, last), 2);
    let qa = sm.fact("lens.a.final.second", at(&la, 1, last), 2);
    let qb = sm.fact("lens.b.final.second", at(&lb, 1, last), 2);
    let mut line = format!(
        "Logit lens at position {} on {}: at the output P({t0}) is {pa} in {} and {pb} in {} (P({t1}): {qa} and {qb})",
        sm.idx("lens.pos", first.result.pos),
        pd.prompts.about,
        pd.a,
        pd.b
    );
    // From which point on B's final preference holds with separated intervals.
    let (f0, f1) = (at(&lb, 0, last), at(&lb, 1, last));
    let (w, l) = if f0.value > f1.value { (0, 1) } else { (1, 0) };
    let winner = if w == 0 { &t0 } else { &t1 };
    let separated = |k: usize| at(&lb, w, k).lo > at(&lb, l, k).hi;
    let from = (0..=last).rev().take_while(|&k| separated(k)).last();
    match from {
        Some(0) => {
            line += &format!(
                "; in {} {winner} leads, by its interval, from the embeddings on.",
                pd.b
            )
        }
        Some(k) => {
            line += &format!(
                "; in {} {winner} leads, by its interval, from layer {} on.",
                pd.b,
                sm.idx("lens.b.leads_from_layer", k - 1)
            )
        }
        None => {
            line += &format!(
                "; in {} the two are not separated by their intervals at the output.",
                pd.b
            )
        }
    }
    sm.say(line);
    let _ = abs_est;
}
