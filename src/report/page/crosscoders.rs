//! The crosscoder section's layout: per pair its sentences, the scoreboard over seeds and the
//! decoder-norm histogram. Layout only; the numbers and words are `report::crosscoders` and
//! `summary::crosscoders`.

use super::Figs;
use crate::report::crosscoders::{CrossData, COLUMNS};
use crate::report::data::ReportData;
use crate::view::{figures, html};

/// The section, or None when the report has no crosscoders.
pub(super) fn section(data: &ReportData, figs: &mut Figs) -> Option<html::Section> {
    if data.crosscoders.is_empty() {
        return None;
    }
    let groups = data.crosscoders.iter().map(|c| group(c, figs)).collect();
    Some(html::Section {
        id: "crosscoders".into(),
        title: "Model diffing without labels: crosscoders".into(),
        summary: vec![
            "Per pair and seed, a BatchTopK crosscoder (one encoder over both checkpoints' activations, one decoder each; Minder et al. 2025) trained on toy-world corpus episodes. Each latent's relative decoder norm says whose it is (≤ 0.1 A-only, 0.4–0.6 shared, ≥ 0.9 B-only); Latent Scaling drops one-model latents the other model carries too.".into(),
            "The scoreboard: for each world variable, the single best latent of each kind, chosen on half of the prompts and scored (held-out AUROC, sign-free) on the other half, beside the best of 100 random directions in the same activations (chosen the same way) and a 5-fold logistic probe on each checkpoint. Cells are means over seeds with the 95 % t interval across them, clipped to [0, 1]; a dash where no run has a latent of that kind; a variable with one value only on every run's prompts (a model that always chooses H) is left out.".into(),
        ],
        groups,
        ..Default::default()
    })
}

fn group(c: &CrossData, figs: &mut Figs) -> html::Group {
    let headers = [
        "variable",
        "any latent",
        "its relative norm",
        "A-only",
        "shared",
        "B-only",
        "random direction",
        "probe on A",
        "probe on B",
    ]
    .map(String::from)
    .to_vec();
    // AUROCs and relative norms live in [0, 1]; their facts come clipped there (`Fact::of_proportion`).
    let fmt = |f: &Option<crate::report::data::Fact>| match f {
        Some(f) if f.lo.is_finite() && f.hi.is_finite() && f.lo < f.hi => {
            format!("{:.3} [{:.3}, {:.3}] n={}", f.value, f.lo, f.hi, f.n)
        }
        Some(f) => format!("{:.3} n={}", f.value, f.n),
        None => "—".into(),
    };
    let rows = c
        .rows
        .iter()
        .map(|r| {
            let col = |name: &str| {
                let k = COLUMNS.iter().position(|x| *x == name).unwrap_or(0);
                fmt(&r.cells[k])
            };
            vec![
                r.variable.clone(),
                col("any"),
                fmt(&r.any_relative_norm),
                col("a_only"),
                col("shared"),
                col("b_only"),
                col("random"),
                col("probe_a"),
                col("probe_b"),
            ]
        })
        .collect();
    let mut figures = Vec::new();
    if let Some(run) = c.runs.iter().find(|r| r.unused.is_none()) {
        let stem = format!("crosscoder-{}", html::slug(&c.pair));
        let title = format!("{}: {} → {}, {}", c.pair, c.a, c.b, run.folder);
        let norms = run.relative_norms.clone();
        figures.push(figs.add(
            &stem,
            format!(
                "Active latents by relative decoder norm ({}; 0 = {} only, 1 = {} only).",
                run.folder, c.a, c.b
            ),
            || figures::decoder_norms(&title, &norms),
        ));
    }
    let mut tables = vec![html::Table {
        caption: format!("Scoreboard of {} (held-out AUROC)", c.pair),
        headers,
        rows,
    }];
    tables.extend(lens_table(c));
    html::Group {
        title: format!("{}: {} vs {}", c.pair, c.a, c.b),
        tables,
        figures,
        notes: c.summary.sentences.clone(),
        collapsed: false,
    }
}

/// The Activation Difference Lens per layer, over the runs that have it.
fn lens_table(c: &CrossData) -> Option<html::Table> {
    let lenses: Vec<&crate::analysis::difflens::DiffLens> =
        c.runs.iter().filter_map(|r| r.difflens.as_ref()).collect();
    let first = lenses.first()?;
    let pos = c.metric.pos();
    let rows = (0..first.layers.len())
        .map(|l| {
            let shifts: Vec<crate::stats::Est> =
                lenses.iter().map(|d| d.layers[l].steer_shift).collect();
            let f = crate::report::data::Fact::of_runs(&shifts);
            let norm =
                lenses.iter().map(|d| d.layers[l].norm[pos]).sum::<f64>() / lenses.len() as f64;
            let share: Vec<f64> = lenses.iter().filter_map(|d| d.layers[l].closes).collect();
            let top: Vec<String> = first.layers[l]
                .top
                .iter()
                .map(|(t, v)| format!("{t} {v:+.2}"))
                .collect();
            vec![
                l.to_string(),
                format!("{norm:.3}"),
                top.join(", "),
                format!("{:.3} {} n={}", f.value, f.bracket(3), f.n),
                if share.is_empty() {
                    "—".into()
                } else {
                    format!("{:.2}", share.iter().sum::<f64>() / share.len() as f64)
                },
            ]
        })
        .collect();
    Some(html::Table {
        caption: format!(
            "Activation Difference Lens of {}: mean h_B − h_A (resid_post) over {} corpus episodes; tokens from the first run at position {pos}; steering adds it to A at every prompt position",
            c.pair, first.episodes
        ),
        headers: [
            "layer",
            "‖mean difference‖ at the metric position",
            "tokens it raises (logit lens)",
            "A's metric shift when added [95 % interval]",
            "share of the B − A gap",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}
