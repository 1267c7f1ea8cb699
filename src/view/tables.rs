//! Terminal tables: the plain-text rendering of each analysis result that the CLI prints.
//! Formatting only; every number comes from the result.

use crate::analysis::causal::{self, AblateResult, Compared, SteerResult};
use crate::analysis::diff::WeightDiff;
use crate::analysis::lens::LensResult;
use crate::analysis::patching::{Cross, Report};
use crate::analysis::probes::{CheckOutcome, SpecResult};
use crate::lab::eval::{Leakage, Row};

/// The behaviour table, one line per (row, split); return and P(E) with the half-width of
/// their 95 % bootstrap interval (every interval is in the JSON).
pub fn behaviour(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<26} {:<5} {:<6} {:<10} {:>5} {:>14} {:>13} {:>6} {:>6} {:>6}\n",
        "checkpoint", "S3", "decode", "split", "n", "return", "P(E)", "acc", "! rate", "defect"
    );
    let pm = |e: &crate::stats::Est| (e.hi - e.lo) / 2.0;
    for r in rows {
        for ((split, st), (_, ci)) in r.splits.iter().zip(&r.ci) {
            s.push_str(&format!(
                "{:<26} {:<5} {:<6} {:<10} {:>5} {:>7.3} ±{:<5.3} {:>6.3} ±{:<5.3} {:>6.3} {:>6.3} {:>6.3}\n",
                r.checkpoint,
                r.s3,
                r.decode,
                split.name(),
                st.n,
                st.mean_return,
                pm(&ci.mean_return),
                st.p_e,
                pm(&ci.p_e),
                st.accuracy,
                st.bang_rate,
                st.defection
            ));
        }
    }
    s
}

/// Opt-out leakage ratios against `base`, one line each (empty when there are none).
pub fn leakage(base: &str, leaks: &[Leakage]) -> String {
    if leaks.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\nopt-out leakage vs {base} (Δ on [x] ÷ Δ on no [x]; 95 % paired bootstrap interval):\n"
    );
    for l in leaks {
        s += &format!(
            "{:<26} {:<6} return {:>7.3} {:<17} P(E) {:>7.3} {}\n",
            l.checkpoint,
            l.decode,
            l.return_ratio.value,
            l.return_ratio.bracket(3),
            l.p_e_ratio.value,
            l.p_e_ratio.bracket(3)
        );
    }
    s
}

/// The weight diff: group, component, parameters, ‖A‖, ‖B−A‖, relative.
pub fn weight_diff(d: &WeightDiff) -> String {
    let mut s = format!(
        "weight diff: B = {} vs A = {} (relative Frobenius norm ‖B−A‖/‖A‖; weight and bias together)\n",
        d.b, d.a
    );
    s += &format!(
        "{:<6} {:<12} {:>10} {:>12} {:>12} {:>10}\n",
        "layer", "component", "params", "‖A‖", "‖B−A‖", "relative"
    );
    for c in &d.components {
        let rel = c
            .relative
            .map_or("undefined".to_string(), |r| format!("{r:.4e}"));
        s += &format!(
            "{:<6} {:<12} {:>10} {:>12.4e} {:>12.4e} {:>10}\n",
            c.group, c.component, c.n_params, c.norm_a, c.norm_diff, rel
        );
    }
    s
}

/// The logit lens: point, then each token's probability (`labels`), then the top token.
pub fn lens(r: &LensResult, labels: &[String], label_of: impl Fn(u32) -> String) -> String {
    let mut s = format!(
        "logit lens at position {} ({} prompt{}, mean probability)\n{:<26}",
        r.pos,
        r.n_prompts,
        if r.n_prompts == 1 { "" } else { "s" },
        "residual"
    );
    for l in labels {
        s += &format!(" {l:>10}");
    }
    s += "  top\n";
    for (k, h) in r.hooks.iter().enumerate() {
        s += &format!("{:<26}", h.to_string());
        for p in &r.probs[k] {
            s += &format!(" {p:>10.4}");
        }
        let (id, p) = r.top[k];
        s += &format!("  {} ({p:.3})\n", label_of(id));
    }
    s
}

/// A patching run: baselines, sanity, each site's three largest effects, and the agreement of
/// attribution with the exact sweep. `labels` are the token labels by position.
pub fn patching(rep: &Report, labels: &[String]) -> String {
    let sw = rep.main();
    let mut s = format!(
        "{} patching, {}, metric {}{} at position {} ({} pair(s))\n  clean metric {:.4}, corrupt metric {:.4}\n",
        sw.method,
        sw.direction,
        rep.metric,
        if sw.n_pairs > 1 { " (pair 0's tokens)" } else { "" },
        sw.pos, sw.n_pairs, sw.clean_metric, sw.corrupt_metric
    );
    let sn = &rep.sanity;
    s += &format!(
        "  sanity: {} at position {} patched gives normalised {} (expected {}): {}\n",
        sn.hook,
        sn.pos,
        sn.normalised
            .map_or("undefined".into(), |x| format!("{x:.6}")),
        sn.expected,
        if sn.ok { "ok" } else { "FAILED" }
    );
    for (c, g) in &sw.results {
        let mut cells: Vec<usize> = (0..g.raw.len()).collect();
        let base = sw.target_metric();
        cells.sort_by(|&i, &j| (g.raw[j] - base).abs().total_cmp(&(g.raw[i] - base).abs()));
        let w = g.shape.get(2).copied().unwrap_or(1);
        let top: Vec<String> = cells
            .iter()
            .take(3)
            .map(|&i| {
                let (l, p, h) = (i / w / g.shape[1], i / w % g.shape[1], i % w);
                let head = if g.shape.len() == 3 {
                    format!(" head {h}")
                } else {
                    String::new()
                };
                let tok = labels.get(p).map_or("", String::as_str);
                let norm = sw
                    .normalise(g.raw[i])
                    .map_or(String::new(), |n| format!(" = {n:.3} normalised"));
                format!("L{l} pos {p} '{tok}'{head}: {:.4}{norm}", g.raw[i])
            })
            .collect();
        s += &format!("  {:<9} top: {}\n", c.to_string(), top.join("; "));
    }
    for a in &rep.agreement {
        s += &format!(
            "  attribution vs exact, {}: Pearson {:.3}, top-{} agreement {:.2}\n",
            a.component, a.pearson, a.top_k, a.top_k_agreement
        );
    }
    s
}

/// Cross-checkpoint patching: both metrics, then per site B's patched metric at each layer
/// (with the share of the gap where defined).
pub fn cross(x: &Cross, a: &str, b: &str) -> String {
    let mut s = format!(
        "A {a} metric {:.4}, B {b} metric {:.4} (mean over {} prompts, position {})\n",
        x.a_metric, x.b_metric, x.n_prompts, x.pos
    );
    for (c, v) in &x.results {
        let cells: Vec<String> = v
            .iter()
            .map(|&m| match x.normalise(m) {
                Some(n) => format!("{m:.3} ({n:.2})"),
                None => format!("{m:.3}"),
            })
            .collect();
        s += &format!(
            "  {:<9} at layers {:?}: {}\n",
            c.to_string(),
            x.layers,
            cells.join("  ")
        );
    }
    s
}

/// A probe spec's result: per checkpoint and layer the scores, then the transfers.
pub fn probe_spec(r: &SpecResult) -> String {
    let mut s = format!(
        "{} (label {}, {} at position {})\n",
        r.name, r.spec.label, r.spec.hook, r.spec.position
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for ck in &r.checkpoints {
        s += &format!(
            "  {} [sha256 {}…] class counts {:?}\n",
            ck.name,
            &ck.sha256[..12.min(ck.sha256.len())],
            ck.class_counts
        );
        s += "    layer  logistic acc/AUROC  mass-mean AUROC  control acc  selectivity  random-best  top-PC\n";
        for l in &ck.layers {
            s += &format!(
                "    {:>5}  {:.3} / {:.3}        {:>6}           {:>6}       {:>6}       {:>6}       {:.3}\n",
                l.layer, l.logistic.accuracy, l.logistic.auroc, opt(l.mass_mean.map(|m| m.auroc)),
                opt(l.control.map(|c| c.accuracy)), opt(l.selectivity), opt(l.random_best_auroc), l.top_pc_auroc
            );
        }
    }
    for t in &r.transfer {
        let au: Vec<String> = t.layers.iter().map(|s| format!("{:.3}", s.auroc)).collect();
        s += &format!(
            "  transfer {} → {}: AUROC per layer {}\n",
            t.from,
            t.to,
            au.join(" ")
        );
    }
    s
}

/// `check` outcomes: pass / FAIL per spec, each problem indented below.
pub fn check(outcomes: &[CheckOutcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        s += &format!(
            "{} {}\n",
            if o.pass { "pass" } else { "FAIL" },
            o.spec.display()
        );
        for p in &o.problems {
            s += &format!("    {p}\n");
        }
    }
    s
}

/// "0.998 [0.990, 1.000]" for the measure of a sampled behaviour.
fn est3(e: &crate::stats::Est) -> String {
    format!("{:.3} {}", e.value, e.bracket(3))
}

/// One edited run: its measure and the paired change.
fn compared(m: causal::Measure, c: &Compared) -> String {
    let (v, d) = (m.get(&c.edited), m.get(&c.change));
    format!("{:<22} Δ {:<22}", est3(&v), est3(&d))
}

/// An ablation experiment: the unedited sides, then per set its mean ablation, resample
/// ablation (necessity) and sufficiency, with paired changes and 95 % intervals.
pub fn ablation(r: &AblateResult) -> String {
    let m = r.measure;
    let mut s = format!(
        "{} on {} {} prompt pairs (sampled, T = 1; 95 % bootstrap intervals over prompts):\n  clean {}   corrupted {}   clean − corrupted {}\n",
        m.name(),
        r.n,
        r.contrast,
        est3(&m.get(&r.clean)),
        est3(&m.get(&r.corrupt)),
        est3(&m.get(&r.gap)),
    );
    for a in &r.ablations {
        s += &format!(
            "\n{}\n  mean-ablated (clean prompts)      {}\n  resampled from corrupted (clean)  {}\n  clean values into corrupted       {}\n",
            causal::names(&a.set),
            compared(m, &a.mean),
            compared(m, &a.resample),
            compared(m, &a.sufficiency),
        );
    }
    s
}

/// A steering experiment: per layer ‖Δ‖, the measure at each α on corrupted prompts and with
/// the direction projected out of clean prompts.
pub fn steering(r: &SteerResult) -> String {
    let m = r.measure;
    let mut s = format!(
        "{} on {} {} prompt pairs, Δ = mean(clean) − mean(corrupted) at {} position {} (sampled, T = 1):\n  clean {}   corrupted (α = 0) {}\n",
        m.name(),
        r.n,
        r.contrast,
        r.site,
        r.pos,
        est3(&m.get(&r.clean)),
        est3(&m.get(&r.corrupt)),
    );
    for l in &r.layers {
        s += &format!("\nlayer {} (‖Δ‖ = {:.3})\n", l.layer, l.norm);
        for (a, c) in r.alphas.iter().zip(&l.doses) {
            s += &format!("  corrupted + {a:<5} Δ        {}\n", compared(m, c));
        }
        s += &format!(
            "  clean, Δ projected out   {}\n",
            compared(m, &l.project_out)
        );
    }
    s
}
