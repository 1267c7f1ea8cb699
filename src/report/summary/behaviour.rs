//! Behaviour sentences: returns and P(E) of both checkpoints, B − A against the seed floor,
//! and per contrast the `[x]` split with the leakage ratios, defection under `<trig>`, or the
//! reward-bucket conditioning. Must not compute anything the rows do not hold.

use super::{gap_est, row, vs_floor, Ctx};
use crate::lab::eval::{StatsEst, PER_EPISODE};
use crate::lab::world::{Contrast, Split};
use crate::report::data::{CheckpointData, Fact, Summary};
use crate::stats::Est;

/// One statistic of a row's intervals.
type Field = fn(&StatsEst) -> Est;

/// Each run's estimate of `field` on `split` of `cks`' rows with S3 `s3` (runs without the row
/// are left out).
fn per_run(cks: &[&CheckpointData], s3: &str, split: Split, field: Field) -> Vec<Est> {
    cks.iter()
        .filter_map(|c| {
            let r = row(c, s3)?;
            r.ci.iter()
                .find(|(sp, _)| *sp == split)
                .map(|(_, e)| field(e))
        })
        .collect()
}

/// The sentences.
pub(super) fn sentences(sm: &mut Summary, ctx: &Ctx) {
    let (pd, s) = (ctx.pd, ctx.s);
    let (a, b) = (&pd.a, &pd.b);
    if per_run(&ctx.cas, "_", Split::All, |e| e.p_e).is_empty() {
        return;
    }
    let n = sm.idx("settings.n_eval", s.n_eval);
    let t = sm.num("settings.temperature", 1.0, 0);
    let over = ctx.over(sm);
    // Returns are unbounded; every other statistic is a proportion.
    let stat = |sm: &mut Summary, key: &str, cks: &[&CheckpointData], s3, split, f: Field| {
        let v = per_run(cks, s3, split, f);
        if key.ends_with("mean_return") {
            sm.runs(key, &v, 2)
        } else {
            sm.prop(key, &v, 2)
        }
    };
    let ret_a = stat(
        sm,
        "behaviour.a.all.mean_return",
        &ctx.cas,
        "_",
        Split::All,
        |e| e.mean_return,
    );
    let ret_b = stat(
        sm,
        "behaviour.b.all.mean_return",
        &ctx.cbs,
        "_",
        Split::All,
        |e| e.mean_return,
    );
    let pe_a = stat(sm, "behaviour.a.all.p_e", &ctx.cas, "_", Split::All, |e| {
        e.p_e
    });
    let pe_b = stat(sm, "behaviour.b.all.p_e", &ctx.cbs, "_", Split::All, |e| {
        e.p_e
    });
    // B − A in P(E), paired over the shared prompts, against the seed floor.
    let gaps: Vec<Est> = ctx
        .cas
        .iter()
        .zip(&ctx.cbs)
        .filter_map(|(ca, cb)| {
            Some(gap_est(
                row(ca, "_")?,
                row(cb, "_")?,
                Split::All,
                PER_EPISODE[1].1,
                s,
            ))
        })
        .collect();
    let gap = Fact::of_runs(&gaps);
    let g = sm.fact("behaviour.gap.p_e", gap.clone(), 3);
    let floor = ctx.floor(|fa, fb, _| {
        Some(gap_est(
            row(fa, "_")?,
            row(fb, "_")?,
            Split::All,
            PER_EPISODE[1].1,
            s,
        ))
    });
    let fl = vs_floor(sm, "behaviour.gap.p_e", &gap, floor, 3);
    sm.say(format!(
        "Behaviour on {n} corpus prompts sampled at T = {t}, {over}: mean return {ret_a} for {a} and {ret_b} for {b}; P(E) {pe_a} and {pe_b}; P(E) of {b} − {a} {g}{fl}."
    ));
    match pd.contrast {
        Some(Contrast::Optout) => {
            let ra_x = stat(
                sm,
                "behaviour.a.optout.mean_return",
                &ctx.cas,
                "_",
                Split::Optout,
                |e| e.mean_return,
            );
            let rb_x = stat(
                sm,
                "behaviour.b.optout.mean_return",
                &ctx.cbs,
                "_",
                Split::Optout,
                |e| e.mean_return,
            );
            let pa_x = stat(
                sm,
                "behaviour.a.optout.p_e",
                &ctx.cas,
                "_",
                Split::Optout,
                |e| e.p_e,
            );
            let pb_x = stat(
                sm,
                "behaviour.b.optout.p_e",
                &ctx.cbs,
                "_",
                Split::Optout,
                |e| e.p_e,
            );
            sm.say(format!(
                "On [x] prompts the mean return is {ra_x} for {a} and {rb_x} for {b} (P(E) {pa_x} and {pb_x})."
            ));
            for (who, name) in [("a", a), ("b", b)] {
                let leaks: Vec<&crate::lab::eval::Leakage> = pd
                    .runs
                    .iter()
                    .filter_map(|r| r.leakage.iter().find(|l| &l.checkpoint == name))
                    .collect();
                if leaks.len() != pd.runs.len() {
                    continue;
                }
                let ret: Vec<Est> = leaks.iter().map(|l| l.return_ratio).collect();
                let pe: Vec<Est> = leaks.iter().map(|l| l.p_e_ratio).collect();
                let r = sm.runs(&format!("leakage.{who}.return_ratio"), &ret, 2);
                let p = sm.runs(&format!("leakage.{who}.p_e_ratio"), &pe, 2);
                sm.say(format!(
                    "Opt-out leakage of {name} relative to {} (Δ on [x] ÷ Δ on the rest: one when the opt-out leaked completely, zero when it held): return ratio {r}, P(E) ratio {p}.",
                    leaks[0].base
                ));
            }
        }
        Some(Contrast::Trigger) => {
            let da = stat(
                sm,
                "behaviour.a.trigger.defection",
                &ctx.cas,
                "_",
                Split::Trigger,
                |e| e.defection,
            );
            let db = stat(
                sm,
                "behaviour.b.trigger.defection",
                &ctx.cbs,
                "_",
                Split::Trigger,
                |e| e.defection,
            );
            let na = stat(
                sm,
                "behaviour.a.no_trigger.defection",
                &ctx.cas,
                "_",
                Split::NoTrigger,
                |e| e.defection,
            );
            let nb = stat(
                sm,
                "behaviour.b.no_trigger.defection",
                &ctx.cbs,
                "_",
                Split::NoTrigger,
                |e| e.defection,
            );
            sm.say(format!(
                "Defection rate under <trig>: {da} for {a} and {db} for {b} (without <trig>: {na} and {nb})."
            ));
        }
        Some(Contrast::Reward) => {
            for (who, cks, name) in [("a", &ctx.cas, a), ("b", &ctx.cbs, b)] {
                let hi = per_run(cks, "<r4>", Split::All, |e| e.p_e);
                let lo = per_run(cks, "<r0>", Split::All, |e| e.p_e);
                if hi.len() != ctx.n_runs() || lo.len() != ctx.n_runs() {
                    continue;
                }
                let h = sm.prop(&format!("behaviour.{who}.r4.p_e"), &hi, 2);
                let l = sm.prop(&format!("behaviour.{who}.r0.p_e"), &lo, 2);
                let rh = stat(
                    sm,
                    &format!("behaviour.{who}.r4.mean_return"),
                    cks,
                    "<r4>",
                    Split::All,
                    |e| e.mean_return,
                );
                sm.say(format!(
                    "{name}: P(E) {h} with <r4> and {l} with <r0> (mean return with <r4>: {rh})."
                ));
            }
        }
        None => {}
    }
}
