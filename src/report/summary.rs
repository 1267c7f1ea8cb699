//! The generated summary of a pair: one sentence per analysis, each number recorded under a
//! key in `Summary::facts` as it is written. Owns the wording and the thresholds' use; the
//! numbers are read off the data (`Sweep::share`, `Cross::overshoot`, ...), never recomputed.

use super::data::{lens_series, CheckpointData, PairData, PatchData, Settings, Summary};
use crate::analysis::site::Site;
use crate::lab::world::{self, Contrast, Split};
use crate::view::figures::lens_values;
use std::collections::BTreeMap;

pub(super) fn summarise(pd: &mut PairData, cks: &BTreeMap<String, CheckpointData>, s: &Settings) {
    let mut sm = Summary::default();
    let (a, b) = (pd.a.clone(), pd.b.clone());
    let (ca, cb) = (&cks[&a], &cks[&b]);
    behaviour_sentences(&mut sm, pd, ca, cb, s);
    // Weight diff.
    if let Some(m) = pd.weight_diff.max() {
        let rel = sm.num("weight_diff.max.relative", m.relative.unwrap_or(0.0), 3);
        let wher = match m.group.parse::<usize>() {
            Ok(l) => format!(
                "{} of layer {}",
                m.component,
                sm.idx("weight_diff.max.layer", l)
            ),
            Err(_) => format!("{} ({})", m.component, m.group),
        };
        sm.say(format!(
            "The largest weight change from {a} to {b} is in {wher}: relative Frobenius norm {rel}."
        ));
    }
    // Within-checkpoint patching.
    if let Some(c) = pd.contrast {
        for (who, ck) in [("a", ca), ("b", cb)] {
            if let Some(pdata) = ck.patching.get(&c) {
                patch_sentences(&mut sm, who, &ck.name, pdata, s, &mut pd.notes);
            }
        }
    }
    cross_sentences(&mut sm, pd, s);
    probe_sentences(&mut sm, pd, ca, cb, s);
    lens_sentences(&mut sm, pd, ca, cb);
    pd.summary = sm;
}

fn behaviour_sentences(
    sm: &mut Summary,
    pd: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    s: &Settings,
) {
    let row = |c: &CheckpointData, s3: &str| c.behaviour.iter().find(|r| r.s3 == s3).cloned();
    let (Some(ra), Some(rb)) = (row(ca, "_"), row(cb, "_")) else {
        return;
    };
    let (a, b) = (&pd.a, &pd.b);
    let n = sm.idx("settings.n_eval", s.n_eval);
    let (x, y) = (ra.get(Split::All), rb.get(Split::All));
    let (ret_a, ret_b) = (
        sm.num("behaviour.a.all.mean_return", x.mean_return, 2),
        sm.num("behaviour.b.all.mean_return", y.mean_return, 2),
    );
    let (pe_a, pe_b) = (
        sm.num("behaviour.a.all.p_e", x.p_e, 2),
        sm.num("behaviour.b.all.p_e", y.p_e, 2),
    );
    let t = sm.num("settings.temperature", 1.0, 0);
    sm.say(format!(
        "Behaviour on {n} corpus prompts sampled at T = {t}: mean return {ret_a} for {a} and {ret_b} for {b}; P(E) {pe_a} and {pe_b}."
    ));
    match pd.contrast {
        Some(Contrast::Optout) => {
            let (xa, xb) = (ra.get(Split::Optout), rb.get(Split::Optout));
            let ra_x = sm.num("behaviour.a.optout.mean_return", xa.mean_return, 2);
            let rb_x = sm.num("behaviour.b.optout.mean_return", xb.mean_return, 2);
            let pa_x = sm.num("behaviour.a.optout.p_e", xa.p_e, 2);
            let pb_x = sm.num("behaviour.b.optout.p_e", xb.p_e, 2);
            sm.say(format!(
                "On [x] prompts the mean return is {ra_x} for {a} and {rb_x} for {b} (P(E) {pa_x} and {pb_x})."
            ));
            for l in &pd.leakage {
                let who = if &l.checkpoint == a { "a" } else { "b" };
                let r = sm.num(&format!("leakage.{who}.return_ratio"), l.return_ratio, 2);
                let p = sm.num(&format!("leakage.{who}.p_e_ratio"), l.p_e_ratio, 2);
                sm.say(format!(
                    "Opt-out leakage of {} relative to {}: return ratio {r}, P(E) ratio {p}.",
                    l.checkpoint, l.base
                ));
            }
        }
        Some(Contrast::Trigger) => {
            let (da, db) = (
                sm.num(
                    "behaviour.a.trigger.defection",
                    ra.get(Split::Trigger).defection,
                    2,
                ),
                sm.num(
                    "behaviour.b.trigger.defection",
                    rb.get(Split::Trigger).defection,
                    2,
                ),
            );
            let (na, nb) = (
                sm.num(
                    "behaviour.a.no_trigger.defection",
                    ra.get(Split::NoTrigger).defection,
                    2,
                ),
                sm.num(
                    "behaviour.b.no_trigger.defection",
                    rb.get(Split::NoTrigger).defection,
                    2,
                ),
            );
            sm.say(format!(
                "Defection rate under <trig>: {da} for {a} and {db} for {b} (without <trig>: {na} and {nb})."
            ));
        }
        Some(Contrast::Reward) => {
            for (who, c) in [("a", ca), ("b", cb)] {
                if let (Some(hi), Some(lo)) = (row(c, "<r4>"), row(c, "<r0>")) {
                    let h = sm.num(
                        &format!("behaviour.{who}.r4.p_e"),
                        hi.get(Split::All).p_e,
                        2,
                    );
                    let l = sm.num(
                        &format!("behaviour.{who}.r0.p_e"),
                        lo.get(Split::All).p_e,
                        2,
                    );
                    let rh = sm.num(
                        &format!("behaviour.{who}.r4.mean_return"),
                        hi.get(Split::All).mean_return,
                        2,
                    );
                    sm.say(format!(
                        "{}: P(E) {h} with <r4> and {l} with <r0> (mean return with <r4>: {rh}).",
                        c.name
                    ));
                }
            }
        }
        _ => {}
    }
}

fn patch_sentences(
    sm: &mut Summary,
    who: &str,
    name: &str,
    pd: &PatchData,
    s: &Settings,
    notes: &mut Vec<String>,
) {
    for (dir, ok) in [
        ("denoising", pd.denoise_sanity.ok),
        ("noising", pd.noise_sanity.ok),
    ] {
        if !ok {
            notes.push(format!(
                "{name}: the {dir} sanity check failed (patching the final residual at position {} did not reproduce the source run).",
                pd.pos
            ));
        }
    }
    let k = format!("patching.{who}");
    let sw = &pd.denoise;
    let gap = sw.gap();
    let clean = sm.num(&format!("{k}.clean_metric"), sw.clean_metric as f64, 2);
    let corrupt = sm.num(&format!("{k}.corrupt_metric"), sw.corrupt_metric as f64, 2);
    let fp = pd.contrast.position();
    let slot = pd.tokens.get(fp).cloned().unwrap_or_default();
    let pos = pd.pos;
    let mut line = format!(
        "Patching in {name} ({slot} contrast): the metric is {clean} on clean and {corrupt} on corrupted prompts"
    );
    if gap.abs() < s.min_gap {
        let g = sm.num("settings.min_gap", s.min_gap, 1);
        line += &format!(", a gap below {g}: too small to localise.");
        sm.say(line);
        return;
    }
    let n_layer = sw.grid(Site::ResidPre).map_or(0, |g| g.shape[0]);
    let thr = s.carries;
    // Up to which layer the slot's own position carries the difference, and from which layer
    // the metric position does.
    let last_slot = (0..n_layer).rev().find(|&l| {
        sw.share_at(Site::ResidPre, l, fp, s.min_gap)
            .is_some_and(|m| m >= thr)
    });
    let first_pos = (0..n_layer).find(|&l| {
        sw.share_at(Site::ResidPre, l, pos, s.min_gap)
            .is_some_and(|m| m >= thr)
    });
    let half = sm.pct("settings.carries_percent", thr);
    line += ". Denoising the residual stream";
    match last_slot {
        Some(l) => {
            let share = sw.share_at(Site::ResidPre, l, fp, s.min_gap).unwrap_or(0.0);
            let (p, l) = (
                sm.idx(&format!("{k}.slot_position"), fp),
                sm.idx(&format!("{k}.slot_last_layer"), l),
            );
            line += &format!(
                " at the slot (position {p}) restores at least {half} of it up to layer {l} ({} at layer {l})",
                sm.pct(&format!("{k}.slot_last_share"), share)
            );
        }
        None => line += &format!(" at the slot restores less than {half} at every layer"),
    }
    match first_pos {
        Some(l) => {
            let share = sw
                .share_at(Site::ResidPre, l, pos, s.min_gap)
                .unwrap_or(0.0);
            let (p, l) = (
                sm.idx(&format!("{k}.pos"), pos),
                sm.idx(&format!("{k}.pos_first_layer"), l),
            );
            line += &format!(
                ", and at the metric position {p} from layer {l} on ({} at layer {l}).",
                sm.pct(&format!("{k}.pos_first_share"), share)
            );
        }
        None => {
            line += &format!(
                ", and at the metric position {} no layer restores {half}.",
                sm.idx(&format!("{k}.pos"), pos)
            )
        }
    }
    sm.say(line);
    let mut parts = Vec::new();
    if let Some(c) = sw.best_cell(Site::HeadOut, s.min_gap) {
        parts.push(format!(
            "the head that restores most is layer {}, head {} at position {} ({})",
            sm.idx(&format!("{k}.head.layer"), c.layer),
            sm.idx(&format!("{k}.head.head"), c.head),
            sm.idx(&format!("{k}.head.position"), c.position),
            sm.pct(&format!("{k}.head.share"), c.share)
        ));
    }
    if let Some(c) = sw.best_cell(Site::MlpOut, s.min_gap) {
        parts.push(format!(
            "the MLP that restores most is layer {} at position {} ({})",
            sm.idx(&format!("{k}.mlp.layer"), c.layer),
            sm.idx(&format!("{k}.mlp.position"), c.position),
            sm.pct(&format!("{k}.mlp.share"), c.share)
        ));
    }
    // Noising: the single attention or MLP output the metric needs most.
    let necessary = [Site::AttnOut, Site::MlpOut]
        .into_iter()
        .filter_map(|c| pd.noise.best_cell(c, s.min_gap).map(|x| (c, x)))
        .max_by(|x, y| x.1.share.total_cmp(&y.1.share));
    if let Some((site, c)) = necessary {
        parts.push(format!(
            "noising {site} of layer {} at position {} removes {} (the most of any attention or MLP output)",
            sm.idx(&format!("{k}.necessary.layer"), c.layer),
            sm.idx(&format!("{k}.necessary.position"), c.position),
            sm.pct(&format!("{k}.necessary.share"), c.share)
        ));
    }
    if !parts.is_empty() {
        sm.say(format!("In {name}, {}.", parts.join("; ")));
    }
}

fn cross_sentences(sm: &mut Summary, pd: &PairData, s: &Settings) {
    let x = &pd.cross;
    let (a, b) = (&pd.a, &pd.b);
    let ma = sm.num("cross.a_metric", x.a_metric as f64, 2);
    let mb = sm.num("cross.b_metric", x.b_metric as f64, 2);
    let mut line = format!(
        "Cross-checkpoint patching on {} {}: the metric is {ma} in {a} and {mb} in {b}",
        sm.idx("cross.n_prompts", x.n_prompts),
        pd.prompts.about
    );
    if x.gap().abs() < s.min_gap {
        let g = sm.num("settings.min_gap", s.min_gap, 1);
        line += &format!(", a gap below {g}: nothing to carry.");
        sm.say(line);
        return;
    }
    if let Some(o) = x.overshoot(s.overshoot) {
        let k = sm.num("settings.overshoot", s.overshoot, 0);
        line += &format!(
            ". Patching {a}'s {} at layer {} into {b} (all positions) moves the metric by {}, \
             {} times the gap (more than {k}), so shares of the gap are not meaningful here.",
            o.site,
            sm.idx("cross.overshoot.layer", x.layers[o.index]),
            sm.num("cross.overshoot.move", o.moved, 2),
            sm.num("cross.overshoot.gaps", o.gaps, 1),
        );
        sm.say(line);
        return;
    }
    let mut parts = Vec::new();
    for (c, v) in &x.results {
        let best = v
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| x.normalise(m).map(|n| (i, n as f64)))
            .max_by(|p, q| p.1.total_cmp(&q.1));
        if let Some((i, n)) = best {
            let l = x.layers[i];
            parts.push(format!(
                "{c} at layer {} carries {}",
                sm.idx(&format!("cross.{c}.best_layer"), l),
                sm.pct(&format!("cross.{c}.best_share"), n)
            ));
        }
    }
    line += &format!(
        ". Patching {a}'s activations into {b} (all positions), {} of the gap.",
        parts.join(", ")
    );
    sm.say(line);
}

fn probe_sentences(
    sm: &mut Summary,
    pd: &PairData,
    ca: &CheckpointData,
    cb: &CheckpointData,
    s: &Settings,
) {
    let about = pd.probe_label.about();
    let thr = sm.num("settings.decodable", s.decodable, 2);
    let mut parts = Vec::new();
    for (who, c) in [("a", ca), ("b", cb)] {
        let Some(p) = c.probes.get(&pd.probe_label) else {
            continue;
        };
        if p.skipped.is_some() {
            parts.push(format!(
                "{} not probed (the label has one class only)",
                c.name
            ));
            continue;
        }
        let k = format!("probes.{who}");
        let first = p.layers.iter().find(|l| l.logistic.accuracy >= s.decodable);
        match first {
            Some(l) => {
                let sel = l.selectivity.map(|v| {
                    format!(
                        ", selectivity {}",
                        sm.num(&format!("{k}.first.selectivity"), v, 2)
                    )
                });
                parts.push(format!(
                    "{} decodable from layer {} on (accuracy {}{})",
                    c.name,
                    sm.idx(&format!("{k}.first.layer"), l.layer),
                    sm.num(&format!("{k}.first.accuracy"), l.logistic.accuracy, 2),
                    sel.unwrap_or_default()
                ));
            }
            None => {
                if let Some(l) = p
                    .layers
                    .iter()
                    .max_by(|x, y| x.logistic.accuracy.total_cmp(&y.logistic.accuracy))
                {
                    parts.push(format!(
                        "{} decodable at no layer (best: accuracy {} at layer {})",
                        c.name,
                        sm.num(&format!("{k}.best.accuracy"), l.logistic.accuracy, 2),
                        sm.idx(&format!("{k}.best.layer"), l.layer)
                    ));
                }
            }
        }
    }
    if parts.is_empty() {
        return;
    }
    let pos = ca
        .probes
        .get(&pd.probe_label)
        .map_or(world::POS_A, |p| p.position);
    let pos = sm.idx("probes.position", pos);
    sm.say(format!(
        "Probes for {about} (logistic, resid_post at position {pos}; decodable = held-out accuracy at least {thr}): {}.",
        parts.join("; ")
    ));
    // Transfer at the last layer: does B read the label the way A does?
    if let Some(t) = pd.probe_transfer.iter().find(|t| t.from == pd.a) {
        if let (Some(last), Some(own)) = (
            t.layers.last(),
            cb.probes.get(&pd.probe_label).and_then(|p| p.layers.last()),
        ) {
            let t = sm.num("probes.transfer_ab.last.accuracy", last.accuracy, 2);
            let l = sm.idx("probes.transfer_ab.last.layer", own.layer);
            let o = sm.num("probes.b.last.accuracy", own.logistic.accuracy, 2);
            let (a, b) = (&pd.a, &pd.b);
            sm.say(format!(
                "A probe fitted on {a} scores accuracy {t} on {b} at layer {l} ({b}'s own probe: {o})."
            ));
        }
    }
}

fn lens_sentences(sm: &mut Summary, pd: &PairData, ca: &CheckpointData, cb: &CheckpointData) {
    let key = &pd.prompts.key;
    let (Some(la), Some(lb)) = (ca.lens.get(key), cb.lens.get(key)) else {
        return;
    };
    let series = lens_series(la);
    let (t0, t1) = (series[0].0.clone(), series[1].0.clone());
    let (a0, a1) = (lens_values(la, &series[0].1), lens_values(la, &series[1].1));
    let (b0, b1) = (lens_values(lb, &series[0].1), lens_values(lb, &series[1].1));
    let last = a0.len() - 1;
    let pa = sm.num("lens.a.final.first", a0[last], 2);
    let pb = sm.num("lens.b.final.first", b0[last], 2);
    let qa = sm.num("lens.a.final.second", a1[last], 2);
    let qb = sm.num("lens.b.final.second", b1[last], 2);
    let mut line = format!(
        "Logit lens at position {} on {}: at the output P({t0}) is {pa} in {} and {pb} in {} (P({t1}): {qa} and {qb})",
        sm.idx("lens.pos", lb.pos),
        pd.prompts.about,
        pd.a,
        pd.b
    );
    // From which point on B's final preference holds.
    let wins = |k: usize| (b0[k] > b1[k]) == (b0[last] > b1[last]);
    let from = (0..=last).rev().take_while(|&k| wins(k)).last();
    let winner = if b0[last] > b1[last] { &t0 } else { &t1 };
    match from {
        Some(0) => line += &format!("; in {} {winner} leads from the embeddings on.", pd.b),
        Some(k) => {
            line += &format!(
                "; in {} {winner} leads from layer {} on.",
                pd.b,
                sm.idx("lens.b.leads_from_layer", k - 1)
            )
        }
        None => line += ".",
    }
    sm.say(line);
}
