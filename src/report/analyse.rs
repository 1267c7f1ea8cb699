//! Running every analysis a report needs: per-checkpoint analyses once each (behaviour,
//! patching over each contrast, probes, logit lens), then each pair's own (weight diff,
//! cross-checkpoint patching, probe transfer, leakage) and its summary. Owns the work lists and
//! their order; the numbers come from `lab` and `analysis`. Must not word or draw anything.

use super::data::{
    CheckpointData, PairData, PatchData, ProbeData, PromptKind, PromptSet, ReportData, Settings,
    Summary,
};
use super::pairs::{PairSpec, Pairs};
use super::summary::summarise;
use super::Progress;
use crate::analysis::patching::{self, Direction, Sanity, Setup, Sweep};
use crate::analysis::probes::math::LayerOptions;
use crate::analysis::probes::{layers, sample_prompts, ActivationSet, Folded, Label};
use crate::analysis::site::Site;
use crate::analysis::{diff, lens};
use crate::io::checkpoint::{self, Checkpoint};
use crate::lab::eval::{self, EvalOpts};
use crate::lab::sample::Decode;
use crate::lab::world::{self, Contrast, MetricKind, PromptDist, WorldConfig};
use crate::view::figures;
use crate::{pool, Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// The prompt set of a pair's cross-checkpoint patching and lens: the contrast's clean prompts,
/// or corpus prompts when the pair has no contrast (for `defect`, the trigger contrast's
/// corrupt side: corpus prompts without `<trig>`, `H` teacher-forced).
fn prompt_set(p: &PairSpec, n: usize, seed: u64) -> Result<PromptSet> {
    let (key, about, ids, metrics, pos) = match (p.contrast, p.metric) {
        (Some(c), _) => {
            let (pairs, pos) = patching::world_pairs(c, n, seed)?;
            let (key, about) = match c {
                Contrast::Optout => (PromptKind::Optout, "[x] prompts"),
                Contrast::Trigger => (PromptKind::Trigger, "<trig> prompts (H teacher-forced)"),
                Contrast::Reward => (PromptKind::Reward, "<r4> prompts"),
            };
            let (ids, metrics) = pairs.into_iter().map(|x| (x.clean, x.metric)).unzip();
            (key, about, ids, metrics, pos)
        }
        (None, MetricKind::Defect) => {
            let (pairs, pos) = patching::world_pairs(Contrast::Trigger, n, seed)?;
            let (ids, metrics) = pairs.into_iter().map(|x| (x.corrupt, x.metric)).unzip();
            let about = "prompts without <trig> (H teacher-forced)";
            (PromptKind::CorpusH, about, ids, metrics, pos)
        }
        (None, MetricKind::Mode) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let prompts = PromptDist::corpus(&WorldConfig::default()).sample_n(&mut rng, n);
            let (ids, metrics) = prompts
                .iter()
                .map(|q| patching::world_prompt(MetricKind::Mode, q))
                .unzip();
            let pos = MetricKind::Mode.pos();
            (PromptKind::Corpus, "corpus prompts", ids, metrics, pos)
        }
    };
    Ok(PromptSet {
        key,
        about: about.to_string(),
        pos,
        n,
        metrics,
        ids,
    })
}

/// One probe label on one checkpoint: its activation set and the per-layer results.
struct ProbeRun {
    set: ActivationSet,
    data: ProbeData,
    folded: Option<Folded>,
}

fn run_probe(ck: &Checkpoint, label: Label, s: &Settings) -> Result<ProbeRun> {
    let n_layer = ck.model.config().n_layer;
    let layer_ids: Vec<usize> = (0..n_layer).collect();
    let prompts = sample_prompts(label, s.n_probe, s.seed, None, None);
    let set = ActivationSet::build(
        &ck.model,
        prompts,
        label,
        Site::ResidPost,
        world::POS_A,
        &layer_ids,
    )?;
    let mut data = ProbeData {
        label,
        site: set.site,
        position: set.position,
        n: set.prompts.len(),
        classes: vec![],
        class_counts: vec![],
        layers: vec![],
        skipped: None,
    };
    let what = format!("label '{label}' on {}", ck.name());
    let f = match layers::fold(&set, s.folds, s.seed, &what) {
        Ok(f) => f,
        Err(e) => {
            data.skipped = Some(e.to_string());
            return Ok(ProbeRun {
                set,
                data,
                folded: None,
            });
        }
    };
    // Control task keyed by the first digit's identity: position 10 always holds `A`, so its
    // own token cannot key one (the rule probe specs apply too).
    let opt = LayerOptions {
        c: s.c,
        n_random: s.null_directions,
        seed: s.seed,
        control_keys: Some(set.tokens_at(world::POS_D1)),
    };
    data.layers = layers::layer_results(&set, &f, &opt, true)?;
    data.classes = f.enc.classes.clone();
    data.class_counts = layers::class_counts(&f);
    Ok(ProbeRun {
        set,
        data,
        folded: Some(f),
    })
}

/// A probe fitted on `from`'s activations, scored on `to`'s (same prompts, `to`'s labels).
fn transfer(
    from: (&str, &ProbeRun),
    to: (&str, &ProbeRun),
    c: f64,
) -> Result<Option<crate::analysis::probes::TransferResult>> {
    let Some(f) = &from.1.folded else {
        return Ok(None);
    };
    Ok(
        layers::transfer(&from.1.set, f, &to.1.set, c)?.map(|layers| {
            crate::analysis::probes::TransferResult {
                from: from.0.to_string(),
                to: to.0.to_string(),
                layers,
            }
        }),
    )
}

fn patch_data(ck: &Checkpoint, contrast: Contrast, s: &Settings) -> Result<PatchData> {
    let (pairs, pos) = patching::world_pairs(contrast, s.n_patch, s.seed)?;
    let tokens = figures::position_labels(&pairs, world::label, world::slot_name);
    let run = |d: Direction| -> Result<(Sweep, Sanity)> {
        let setup = Setup::new(&ck.model, pairs.clone(), Some(pos), d)?;
        Ok((
            patching::sweep(&ck.model, &setup, &Site::PATCHED)?,
            patching::sanity(&ck.model, &setup)?,
        ))
    };
    let (denoise, denoise_sanity) = run(Direction::Denoise)?;
    let (noise, noise_sanity) = run(Direction::Noise)?;
    Ok(PatchData {
        contrast,
        metric: contrast.metric().describe(),
        pos,
        tokens,
        denoise,
        denoise_sanity,
        noise,
        noise_sanity,
    })
}

/// Tokens the lens reads: `E`, `H` for the mode metric; `!` and the ten digits for defect.
fn lens_tokens(set: &PromptSet) -> Vec<u32> {
    if set.pos == world::POS_A {
        vec![world::E, world::H]
    } else {
        let mut t = vec![world::BANG];
        t.extend((0..10).map(|d| world::DIGIT0 + d));
        t
    }
}

/// Run every analysis of every pair: per-checkpoint analyses once each (a checkpoint is in
/// many pairs), then each pair's own (weight diff, cross-checkpoint patching, probe transfer)
/// and its summary. Checks every checkpoint directory before any work.
pub fn analyse(pairs: &Pairs, s: &Settings, progress: &dyn Progress) -> Result<ReportData> {
    pairs.check()?;
    if s.n_eval == 0 || s.n_patch == 0 || s.n_cross == 0 || s.n_probe < 2 * s.folds {
        input_err!("--n: too few prompts (need at least {})", 2 * s.folds);
    }
    // Which checkpoints, and what each needs.
    let mut names: Vec<String> = Vec::new();
    for p in &pairs.pairs {
        for c in [&p.a, &p.b] {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
    }
    let base_dir = pairs.dir_of(&pairs.base);
    let has_base = base_dir.join("model.safetensors").is_file();
    let optout_pairs = pairs
        .pairs
        .iter()
        .any(|p| p.contrast == Some(Contrast::Optout));
    if has_base && optout_pairs && !names.contains(&pairs.base) {
        names.push(pairs.base.clone());
    }

    progress.stage("load", names.len());
    let mut cks: BTreeMap<String, Checkpoint> = BTreeMap::new();
    let mut worlds: BTreeMap<String, WorldConfig> = BTreeMap::new();
    for n in &names {
        let named = |e: Error| Error::file(&pairs.path, format!("checkpoint '{n}': {e}"));
        let ck = checkpoint::load(pairs.dir_of(n)).map_err(named)?;
        let w = WorldConfig::of_checkpoint(&ck).map_err(named)?;
        w.holds(ck.model.config())
            .map_err(|e| Error::file(&pairs.path, format!("checkpoint '{n}': {e}")))?;
        cks.insert(n.clone(), ck);
        worlds.insert(n.clone(), w);
        progress.step("load", n);
    }
    progress.done("load");
    for p in &pairs.pairs {
        if let Some(d) = cks[&p.a]
            .model
            .config()
            .shape_difference(cks[&p.b].model.config())
        {
            return Err(Error::file(
                &pairs.path,
                format!(
                    "pair '{}': '{}' and '{}' differ in shape: {d}",
                    p.name, p.a, p.b
                ),
            ));
        }
    }
    // Work lists, each item once.
    let mut buckets: BTreeMap<String, BTreeSet<Option<u8>>> = BTreeMap::new();
    let mut patch_jobs: BTreeSet<(String, Contrast)> = BTreeSet::new();
    let mut probe_jobs: BTreeSet<(String, Label)> = BTreeSet::new();
    let mut lens_jobs: BTreeMap<(String, PromptKind), PromptSet> = BTreeMap::new();
    let mut sets: Vec<PromptSet> = Vec::new();
    for n in &names {
        buckets.insert(
            n.clone(),
            eval::s3_settings(cks[n].recipe()).into_iter().collect(),
        );
    }
    for p in &pairs.pairs {
        let set = prompt_set(p, s.n_cross, s.seed)?;
        for c in [&p.a, &p.b] {
            if p.contrast == Some(Contrast::Reward) {
                if let Some(b) = buckets.get_mut(c) {
                    b.extend(eval::CONDITIONED);
                }
            }
            if let Some(k) = p.contrast {
                patch_jobs.insert((c.clone(), k));
            }
            probe_jobs.insert((c.clone(), Label::for_pair(p.contrast, p.metric)));
            lens_jobs.insert((c.clone(), set.key), set.clone());
        }
        sets.push(set);
    }

    let mut data: BTreeMap<String, CheckpointData> = cks
        .iter()
        .map(|(n, ck)| {
            let cfg = ck.model.config();
            (
                n.clone(),
                CheckpointData {
                    name: n.clone(),
                    dir: ck.dir.display().to_string(),
                    sha256: ck.sha256.clone(),
                    recipe: ck.recipe(),
                    n_layer: cfg.n_layer,
                    n_head: cfg.n_head,
                    behaviour: vec![],
                    patching: BTreeMap::new(),
                    probes: BTreeMap::new(),
                    lens: BTreeMap::new(),
                },
            )
        })
        .collect();

    // Behaviour: one row per (checkpoint, S3 setting), all from the same prompts and seed.
    let eval_jobs: Vec<(String, Option<u8>)> = buckets
        .iter()
        .flat_map(|(n, bs)| bs.iter().map(move |b| (n.clone(), *b)))
        .collect();
    progress.stage("behaviour", eval_jobs.len());
    let rows = pool::par_map(s.jobs, &eval_jobs, |(n, b)| {
        let o = EvalOpts {
            n: s.n_eval,
            // eval's own default seed (1), so the report's rows match `feedlens eval`'s.
            seed: s.seed.wrapping_add(1),
            decodes: vec![Decode::T1],
            buckets: vec![*b],
        };
        let r = eval::evaluate(&worlds[n], n, &cks[n].model, &o)?;
        progress.step("behaviour", n);
        Ok(r)
    })?;
    for ((n, _), r) in eval_jobs.iter().zip(rows) {
        if let Some(d) = data.get_mut(n) {
            d.behaviour.extend(r);
        }
    }
    progress.done("behaviour");

    // Within-checkpoint patching, both directions.
    let jobs: Vec<_> = patch_jobs.into_iter().collect();
    progress.stage("patching", jobs.len());
    let done = pool::par_map(s.jobs, &jobs, |(n, c)| {
        let r = patch_data(&cks[n], *c, s)?;
        progress.step("patching", &format!("{n} {c}"));
        Ok(r)
    })?;
    for ((n, c), r) in jobs.iter().zip(done) {
        if let Some(d) = data.get_mut(n) {
            d.patching.insert(*c, r);
        }
    }
    progress.done("patching");

    // Probes: one activation set per (checkpoint, label).
    let jobs: Vec<_> = probe_jobs.into_iter().collect();
    progress.stage("probes", jobs.len());
    let runs = pool::par_map(s.jobs, &jobs, |(n, l)| {
        let r = run_probe(&cks[n], *l, s)?;
        progress.step("probes", &format!("{n} {l}"));
        Ok(r)
    })?;
    let probe_runs: BTreeMap<(String, Label), ProbeRun> = jobs.into_iter().zip(runs).collect();
    for ((n, l), r) in &probe_runs {
        if let Some(d) = data.get_mut(n) {
            d.probes.insert(*l, r.data.clone());
        }
    }
    progress.done("probes");

    // Logit lens per (checkpoint, prompt set).
    let jobs: Vec<_> = lens_jobs.into_iter().collect();
    progress.stage("logit lens", jobs.len());
    let lensed = pool::par_map(s.jobs, &jobs, |((n, _), set)| {
        let r = lens::logit_lens(&cks[n].model, &set.ids, Some(set.pos), &lens_tokens(set))?;
        progress.step("logit lens", n);
        Ok(r)
    })?;
    for (((n, k), _), r) in jobs.iter().zip(lensed) {
        if let Some(d) = data.get_mut(n) {
            d.lens.insert(*k, r);
        }
    }
    progress.done("logit lens");

    // Per pair: weight diff, cross-checkpoint patching, probe transfer, leakage, summary.
    progress.stage("pairs", pairs.pairs.len());
    let items: Vec<(&PairSpec, &PromptSet)> = pairs.pairs.iter().zip(&sets).collect();
    let reference = |p: &PairSpec| {
        if has_base {
            pairs.base.clone()
        } else {
            p.a.clone()
        }
    };
    let out = pool::par_map(s.jobs, &items, |(p, set)| {
        pair_data(p, set, &cks, &data, &probe_runs, &reference(p), s)
            .map_err(|e| Error::file(&pairs.path, format!("pair '{}': {e}", p.name)))
            .inspect(|_| progress.step("pairs", &p.name))
    })?;
    progress.done("pairs");
    Ok(ReportData {
        feedlens_version: env!("CARGO_PKG_VERSION").to_string(),
        pairs_file: pairs.path.display().to_string(),
        settings: s.clone(),
        checkpoints: data,
        pairs: out,
    })
}

/// One pair's own analyses (weight diff, cross-checkpoint patching, probe transfer, leakage
/// against `reference`) and its summary.
fn pair_data(
    p: &PairSpec,
    set: &PromptSet,
    cks: &BTreeMap<String, Checkpoint>,
    data: &BTreeMap<String, CheckpointData>,
    probe_runs: &BTreeMap<(String, Label), ProbeRun>,
    reference: &str,
    s: &Settings,
) -> Result<PairData> {
    let (a, b) = (&cks[&p.a], &cks[&p.b]);
    let weight_diff = diff::weight_diff(&a.model, &p.a, &b.model, &p.b)?;
    let cross = patching::patch_models(
        &a.model,
        &b.model,
        &set.ids,
        &set.metrics,
        &patching::CrossSpec {
            comps: vec![Site::ResidPre, Site::AttnOut, Site::MlpOut],
            pos: Some(set.pos),
            position: None,
            layer: None,
        },
    )?;
    let label = Label::for_pair(p.contrast, p.metric);
    let ra = &probe_runs[&(p.a.clone(), label)];
    let rb = &probe_runs[&(p.b.clone(), label)];
    let mut probe_transfer = Vec::new();
    if p.a != p.b {
        probe_transfer.extend(transfer((&p.a, ra), (&p.b, rb), s.c)?);
        probe_transfer.extend(transfer((&p.b, rb), (&p.a, ra), s.c)?);
    }
    let mut leakage = Vec::new();
    if p.contrast == Some(Contrast::Optout) {
        // The reference's row, then each other checkpoint of the pair.
        let row = |n: &str| data[n].behaviour.iter().find(|r| r.s3 == "_");
        let others = [&p.a, &p.b].into_iter().filter(|c| c.as_str() != reference);
        let rows: Vec<_> = std::iter::once(reference)
            .chain(others.map(String::as_str))
            .filter_map(row)
            .collect();
        leakage = eval::leakages(&rows, reference);
    }
    let mut pd = PairData {
        name: p.name.clone(),
        a: p.a.clone(),
        b: p.b.clone(),
        contrast: p.contrast,
        metric: p.metric,
        metric_about: p.metric.describe(),
        summary: Summary::default(),
        leakage,
        weight_diff,
        prompts: set.clone(),
        cross,
        probe_label: label,
        probe_transfer,
        notes: vec![],
    };
    summarise(&mut pd, data, s);
    Ok(pd)
}
