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
    for site in [Site::ResidPre, Site::AttnOut, Site::MlpOut] {
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
        let sh = sm.fact(
            &format!("cross.{site}.best_share_percent"),
            percent(Fact::of_runs(&shares)),
            0,
        );
        parts.push(format!(
            "{site} at layer {} carries {sh} % (the top layer in {} of {} runs)",
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
}

/// Per run, one layer's accuracy interval of the pair's probe on checkpoint `ck`.
fn acc_at(ck: &CheckpointData, label: crate::analysis::probes::Label, l: usize) -> Option<Est> {
    let p = ck.probes.get(&label)?;
    p.layers.get(l)?.ci.as_ref().map(|c| c.accuracy)
}

/// The probe sentences.
pub(super) fn probes(sm: &mut Summary, ctx: &Ctx) {
    let (pd, s) = (ctx.pd, ctx.s);
    let label = pd.probe_label;
    let thr = sm.num("settings.decodable", s.decodable, 2);
    let mut parts = Vec::new();
    for (who, cks) in [("a", &ctx.cas), ("b", &ctx.cbs)] {
        let name = &cks[0].name;
        let probed: Vec<_> = cks.iter().filter_map(|c| c.probes.get(&label)).collect();
        if probed.len() != cks.len() {
            continue;
        }
        if probed.iter().any(|p| p.skipped.is_some()) {
            let k = probed.iter().filter(|p| p.skipped.is_some()).count();
            parts.push(format!(
                "{name} not probed in {} of {} runs (the label has one class only)",
                sm.idx(&format!("probes.{who}.skipped_runs"), k),
                sm.idx("runs", cks.len())
            ));
            continue;
        }
        let n_layer = probed[0].layers.len();
        let acc = |l: usize| -> Option<Fact> {
            let v: Option<Vec<Est>> = cks.iter().map(|c| acc_at(c, label, l)).collect();
            v.map(|v| Fact::of_proportion(&v))
        };
        let k = format!("probes.{who}");
        // Decodable from L on: the interval clears the threshold at L and every later layer.
        let first = (0..n_layer)
            .rev()
            .take_while(|&l| acc(l).is_some_and(|f| f.clears(s.decodable)))
            .last();
        match first {
            Some(l) => {
                let a = acc(l).map_or("undefined".into(), |f| {
                    sm.fact(&format!("{k}.first.accuracy"), f, 2)
                });
                parts.push(format!(
                    "{name} decodable from layer {} on (accuracy {a})",
                    sm.idx(&format!("{k}.first.layer"), l)
                ));
            }
            None => {
                let best = (0..n_layer)
                    .filter_map(|l| acc(l).map(|f| (l, f)))
                    .max_by(|x, y| x.1.value.total_cmp(&y.1.value));
                if let Some((l, f)) = best {
                    let a = sm.fact(&format!("{k}.best.accuracy"), f, 2);
                    parts.push(format!(
                        "{name} decodable at no layer by its interval (best: accuracy {a} at layer {})",
                        sm.idx(&format!("{k}.best.layer"), l)
                    ));
                }
            }
        }
    }
    if parts.is_empty() {
        return;
    }
    let pos = ctx.cas[0]
        .probes
        .get(&label)
        .map_or(crate::lab::world::POS_A, |p| p.position);
    let pos = sm.idx("probes.position", pos);
    sm.say(format!(
        "Probes for {} (logistic, resid_post at position {pos}; decodable = the held-out accuracy's interval at least {thr} at that layer and every later one): {}.",
        label.about(),
        parts.join("; ")
    ));
    // Transfer at the last layer: does B read the label the way A does?
    let last: Option<Vec<(Est, Est)>> = pd
        .runs
        .iter()
        .zip(&ctx.cbs)
        .map(|(r, cb)| {
            let t = r.probe_transfer.iter().find(|t| t.from == r.a)?;
            let own = cb.probes.get(&label)?.layers.last()?.ci.as_ref()?.accuracy;
            Some((t.ci.last()?.accuracy, own))
        })
        .collect();
    if let Some(v) = last.filter(|v| !v.is_empty()) {
        let n_layer = ctx.cbs[0].probes.get(&label).map_or(0, |p| p.layers.len());
        let t = sm.prop(
            "probes.transfer_ab.last.accuracy",
            &v.iter().map(|x| x.0).collect::<Vec<_>>(),
            2,
        );
        let o = sm.prop(
            "probes.b.last.accuracy",
            &v.iter().map(|x| x.1).collect::<Vec<_>>(),
            2,
        );
        let l = sm.idx("probes.transfer_ab.last.layer", n_layer.saturating_sub(1));
        let (a, b) = (&pd.a, &pd.b);
        sm.say(format!(
            "A probe fitted on {a} scores accuracy {t} on {b} at layer {l} ({b}'s own probe: {o})."
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
