//! Running every analysis a report needs: per-checkpoint analyses once each (behaviour,
//! patching over each contrast, probes, logit lens), then each pair's own (weight diff,
//! cross-checkpoint patching, probe transfer, leakage) and its summary. Owns the work lists and
//! their order; the numbers come from `lab` and `analysis`. Must not word or draw anything.

use super::data::{
    CheckpointData, FloorData, PairData, PairRun, PromptKind, PromptSet, ReportData, Settings,
    Summary,
};
use super::pairs::{PairSpec, Pairs};
use super::summary::{summarise, summarise_anchoring, summarise_floor};
use super::Progress;
use crate::analysis::probes::Label;
use crate::io::checkpoint::{self, Checkpoint};
use crate::lab::eval::{self, EvalOpts};
use crate::lab::sample::Decode;
use crate::lab::world::{Contrast, WorldConfig};
use crate::{budget, pool, Error, Result};
use std::collections::{BTreeMap, BTreeSet};

mod per_checkpoint;
mod per_pair;
use per_checkpoint::{causal_data, lens_data, patch_data, prompt_set, run_probe, ProbeRun};
use per_pair::{anchoring_points, init_root, pair_run, FloorKey, RunItem};

/// Refuse settings whose largest per-checkpoint analyses, `s.jobs` at a time, would not fit in
/// memory (`budget`): the probe activation sets of both sides and a patching sweep.
fn check_memory(cks: &BTreeMap<String, Checkpoint>, s: &Settings) -> Result<()> {
    let Some(cfg) = cks
        .values()
        .map(|c| c.model.config())
        .max_by_key(|c| c.n_layer * c.n_embd)
    else {
        return Ok(());
    };
    let t = crate::lab::world::PROMPT_LEN as u64 + 1;
    let per_job = budget::activations(cfg, s.n_probe as u64, 2)
        .saturating_add(budget::patching(cfg, s.n_patch as u64, t))
        .saturating_add(budget::patching(cfg, s.n_cross as u64, t));
    budget::check(
        &format!("--n {}", s.n_eval),
        per_job.saturating_mul(s.jobs.max(1) as u64),
    )
}

/// Run every analysis of every pair in every seed: per-checkpoint analyses once each (a
/// checkpoint is in many pairs), then each pair's own (weight diff, cross-checkpoint patching,
/// probe transfer) per seed, the seed-null floors (each recipe of a pair at consecutive seeds,
/// read the pair's way), and the summaries. Checks every checkpoint directory before any work.
pub fn analyse(pairs: &Pairs, s: &Settings, progress: &dyn Progress) -> Result<ReportData> {
    pairs.check()?;
    if s.n_eval == 0 || s.n_patch == 0 || s.n_cross == 0 || s.n_probe < 2 * s.folds {
        input_err!("--n: too few prompts (need at least {})", 2 * s.folds);
    }
    let runs = pairs.runs();
    // Which checkpoints, and what each needs.
    let mut names: Vec<String> = Vec::new();
    for p in &pairs.pairs {
        for c in [&p.a, &p.b] {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
    }
    let has_base = runs.iter().all(|&r| {
        pairs
            .dir_of(r, &pairs.base)
            .join("model.safetensors")
            .is_file()
    });
    let optout_pairs = pairs
        .pairs
        .iter()
        .any(|p| p.contrast == Some(Contrast::Optout));
    let anchoring = if has_base {
        pairs.anchoring.clone()
    } else {
        Vec::new()
    };
    if has_base && (optout_pairs || !anchoring.is_empty()) && !names.contains(&pairs.base) {
        names.push(pairs.base.clone());
    }
    for c in &anchoring {
        if !names.contains(c) {
            names.push(c.clone());
        }
    }
    // (seed, name) of every checkpoint, keyed `seed-S/NAME` (or `NAME`).
    let keys: Vec<(Option<u64>, String, String)> = runs
        .iter()
        .flat_map(|&r| names.iter().map(move |n| (r, n.clone(), Pairs::key(r, n))))
        .collect();

    progress.stage("load", keys.len());
    let mut cks: BTreeMap<String, Checkpoint> = BTreeMap::new();
    let mut worlds: BTreeMap<String, WorldConfig> = BTreeMap::new();
    for (seed, n, key) in &keys {
        let named = |e: Error| Error::file(&pairs.path, format!("checkpoint '{key}': {e}"));
        let ck = checkpoint::load(pairs.dir_of(*seed, n)).map_err(named)?;
        let w = WorldConfig::of_checkpoint(&ck).map_err(named)?;
        w.holds(ck.model.config())
            .map_err(|e| Error::file(&pairs.path, format!("checkpoint '{key}': {e}")))?;
        cks.insert(key.clone(), ck);
        worlds.insert(key.clone(), w);
        progress.step("load", key);
    }
    progress.done("load");
    check_memory(&cks, s)?;
    for &r in &runs {
        for p in &pairs.pairs {
            let (ka, kb) = (Pairs::key(r, &p.a), Pairs::key(r, &p.b));
            if let Some(d) = cks[&ka]
                .model
                .config()
                .shape_difference(cks[&kb].model.config())
            {
                return Err(Error::file(
                    &pairs.path,
                    format!("pair '{}': '{ka}' and '{kb}' differ in shape: {d}", p.name),
                ));
            }
        }
    }
    // Seed-null floors: each recipe of a pair, read the pair's way, at consecutive seeds.
    let mut floor_keys: Vec<FloorKey> = Vec::new();
    if runs.len() > 1 {
        for p in &pairs.pairs {
            for r in [&p.a, &p.b] {
                let k = FloorKey {
                    recipe: r.clone(),
                    contrast: p.contrast,
                    metric: p.metric,
                };
                if !floor_keys.contains(&k) {
                    floor_keys.push(k);
                }
            }
        }
    }
    // Work lists, each item once.
    let mut buckets: BTreeMap<String, BTreeSet<Option<u8>>> = BTreeMap::new();
    let mut patch_jobs: BTreeSet<(String, Contrast)> = BTreeSet::new();
    let mut probe_jobs: BTreeSet<(String, Label)> = BTreeSet::new();
    let mut lens_jobs: BTreeMap<(String, PromptKind), PromptSet> = BTreeMap::new();
    let mut sets: Vec<PromptSet> = Vec::new();
    for (_, _, key) in &keys {
        buckets.insert(
            key.clone(),
            eval::s3_settings(cks[key].recipe()).into_iter().collect(),
        );
    }
    for p in &pairs.pairs {
        let set = prompt_set(p, s.n_cross, s.seed)?;
        for &r in &runs {
            for c in [&p.a, &p.b] {
                let key = Pairs::key(r, c);
                if p.contrast == Some(Contrast::Reward) {
                    if let Some(b) = buckets.get_mut(&key) {
                        b.extend(eval::CONDITIONED);
                    }
                }
                if let Some(k) = p.contrast {
                    patch_jobs.insert((key.clone(), k));
                }
                probe_jobs.insert((key.clone(), Label::for_pair(p.contrast, p.metric)));
                lens_jobs.insert((key.clone(), set.key), set.clone());
            }
        }
        sets.push(set);
    }

    let mut data: BTreeMap<String, CheckpointData> = keys
        .iter()
        .map(|(seed, n, key)| {
            let ck = &cks[key];
            let cfg = ck.model.config();
            (
                key.clone(),
                CheckpointData {
                    name: n.clone(),
                    seed: *seed,
                    dir: ck.dir.display().to_string(),
                    sha256: ck.sha256.clone(),
                    recipe: ck.recipe(),
                    n_layer: cfg.n_layer,
                    n_head: cfg.n_head,
                    behaviour: vec![],
                    patching: BTreeMap::new(),
                    causal: BTreeMap::new(),
                    probes: BTreeMap::new(),
                    slot_probes: BTreeMap::new(),
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
        let name = &data[n].name;
        let r = eval::evaluate(&worlds[n], name, &cks[n].model, &o)?;
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

    // Causal checks of what each sweep localised, while the checkpoint samples.
    let jobs: Vec<(String, Contrast)> = data
        .iter()
        .flat_map(|(n, d)| {
            d.patching
                .iter()
                .filter(|(_, p)| p.sweeps.is_some())
                .map(move |(c, _)| (n.clone(), *c))
        })
        .collect();
    progress.stage("causal checks", jobs.len());
    let done = pool::par_map(s.jobs, &jobs, |(n, c)| {
        let r = causal_data(&cks[n], &worlds[n], &data[n].patching[c], s)?;
        progress.step("causal checks", &format!("{n} {c}"));
        Ok(r)
    })?;
    for ((n, c), r) in jobs.iter().zip(done) {
        if let (Some(d), Some(r)) = (data.get_mut(n), r) {
            d.causal.insert(*c, r);
        }
    }
    progress.done("causal checks");

    // Probes: one activation set per (checkpoint, label).
    let jobs: Vec<_> = probe_jobs.into_iter().collect();
    progress.stage(
        "probes",
        jobs.len()
            + jobs
                .iter()
                .filter(|(_, l)| l.slot_position().is_some())
                .count(),
    );
    // Each at the label's decision position, and the slot labels also at their slot.
    let all: Vec<(String, Label, usize)> = jobs
        .iter()
        .map(|(n, l)| (n.clone(), *l, l.decision_position()))
        .chain(
            jobs.iter()
                .filter_map(|(n, l)| l.slot_position().map(|p| (n.clone(), *l, p))),
        )
        .collect();
    let probe_out = pool::par_map(s.jobs, &all, |(n, l, p)| {
        let r = run_probe(&cks[n], *l, *p, s)?;
        progress.step("probes", &format!("{n} {l} @{p}"));
        Ok(r)
    })?;
    let mut probe_runs: BTreeMap<(String, Label), ProbeRun> = BTreeMap::new();
    for ((n, l, p), r) in all.into_iter().zip(probe_out) {
        let Some(d) = data.get_mut(&n) else { continue };
        if p == l.decision_position() {
            d.probes.insert(l, r.data.clone());
            probe_runs.insert((n, l), r);
        } else {
            d.slot_probes.insert(l, r.data);
        }
    }
    progress.done("probes");

    // Logit lens per (checkpoint, prompt set).
    let jobs: Vec<_> = lens_jobs.into_iter().collect();
    progress.stage("logit lens", jobs.len());
    let lensed = pool::par_map(s.jobs, &jobs, |((n, _), set)| {
        let r = lens_data(&cks[n], set, s)?;
        progress.step("logit lens", n);
        Ok(r)
    })?;
    for (((n, k), _), r) in jobs.iter().zip(lensed) {
        if let Some(d) = data.get_mut(n) {
            d.lens.insert(*k, r);
        }
    }
    progress.done("logit lens");

    // Per pair and seed, and per floor and consecutive seeds: weight diff, cross-checkpoint
    // patching, probe transfer, leakage.
    let floor_specs: Vec<(PairSpec, PromptSet)> = floor_keys
        .iter()
        .map(|k| {
            let spec = k.spec();
            let set = prompt_set(&spec, s.n_cross, s.seed)?;
            Ok((spec, set))
        })
        .collect::<Result<_>>()?;
    let mut items: Vec<RunItem> = Vec::new();
    for (i, p) in pairs.pairs.iter().enumerate() {
        for &r in &runs {
            items.push(RunItem {
                pair: i,
                floor: None,
                a: Pairs::key(r, &p.a),
                b: Pairs::key(r, &p.b),
                seed: r,
            });
        }
    }
    for (f, (spec, _)) in floor_specs.iter().enumerate() {
        for w in runs.windows(2) {
            items.push(RunItem {
                pair: 0,
                floor: Some(f),
                a: Pairs::key(w[0], &spec.a),
                b: Pairs::key(w[1], &spec.b),
                seed: w[0],
            });
        }
    }
    // Lineage: the checkpoint each one's weights started from (its manifests' parent chain).
    let roots: BTreeMap<String, Option<String>> = keys
        .iter()
        .map(|(seed, n, key)| (key.clone(), init_root(pairs, *seed, n, &cks)))
        .collect();
    let shared = |ka: &str, kb: &str| -> Option<bool> {
        match (roots.get(ka)?, roots.get(kb)?) {
            (Some(x), Some(y)) => Some(x == y),
            _ => None,
        }
    };
    let reference = |r: Option<u64>, p: &PairSpec| {
        if has_base {
            Pairs::key(r, &pairs.base)
        } else {
            Pairs::key(r, &p.a)
        }
    };
    progress.stage("pairs", items.len());
    let pair_runs = pool::par_map(s.jobs, &items, |it| {
        let (p, set, leak) = match it.floor {
            None => (&pairs.pairs[it.pair], &sets[it.pair], true),
            Some(f) => (&floor_specs[f].0, &floor_specs[f].1, false),
        };
        let refk = leak.then(|| reference(it.seed, p));
        pair_run(
            p,
            set,
            (&it.a, &it.b, it.seed),
            shared(&it.a, &it.b),
            &cks,
            &data,
            &probe_runs,
            refk.as_deref(),
            s,
        )
        .map_err(|e| Error::file(&pairs.path, format!("pair '{}': {e}", p.name)))
        .inspect(|_| progress.step("pairs", &p.name))
    })?;
    progress.done("pairs");
    let mut runs_of: Vec<Vec<PairRun>> = vec![Vec::new(); pairs.pairs.len()];
    let mut floor_runs: Vec<Vec<PairRun>> = vec![Vec::new(); floor_specs.len()];
    for (it, run) in items.iter().zip(pair_runs) {
        match it.floor {
            None => runs_of[it.pair].push(run),
            Some(f) => floor_runs[f].push(run),
        }
    }
    let floors: Vec<FloorData> = floor_specs
        .into_iter()
        .zip(floor_runs)
        .map(|((spec, set), runs)| {
            let mut fd = FloorData {
                name: spec.name.clone(),
                recipe: spec.a.clone(),
                contrast: spec.contrast,
                metric: spec.metric,
                probe_label: Label::for_pair(spec.contrast, spec.metric),
                prompts: set,
                runs,
                summary: Summary::default(),
            };
            summarise_floor(&mut fd, &data, s);
            fd
        })
        .collect();
    let out: Vec<PairData> = pairs
        .pairs
        .iter()
        .zip(sets)
        .zip(runs_of)
        .map(|((p, set), runs)| {
            let label = Label::for_pair(p.contrast, p.metric);
            let key = FloorKey {
                recipe: p.b.clone(),
                contrast: p.contrast,
                metric: p.metric,
            };
            let mut pd = PairData {
                name: p.name.clone(),
                a: p.a.clone(),
                b: p.b.clone(),
                contrast: p.contrast,
                metric: p.metric,
                metric_about: p.metric.describe(),
                probe_label: label,
                prompts: set,
                runs,
                floor: floors
                    .iter()
                    .any(|f| f.name == key.name())
                    .then(|| key.name()),
                summary: Summary::default(),
                notes: vec![],
            };
            let floor_a = FloorKey {
                recipe: p.a.clone(),
                ..key.clone()
            };
            let fl: Vec<&FloorData> = floors
                .iter()
                .filter(|f| f.name == key.name() || f.name == floor_a.name())
                .collect();
            summarise(&mut pd, &data, &fl, s);
            pd
        })
        .collect();
    let anchor = anchoring_points(pairs, &anchoring, &runs, &cks, &data)?;
    let anchoring_summary = summarise_anchoring(&anchor, &pairs.base);
    let mut crosscoders = super::crosscoders::load(pairs)?;
    super::crosscoders::add_difflens(
        &mut crosscoders,
        |k| cks.get(k).map(|c| &c.model),
        s.jobs,
        s.bootstrap,
        s.seed,
    )?;
    for c in &mut crosscoders {
        super::summary::crosscoders::summarise(c);
    }
    let mut report = ReportData {
        crosscoders,
        answers: Vec::new(),
        answers_summary: Summary::default(),
        anchoring: anchor,
        anchoring_summary,
        feedlens_version: env!("CARGO_PKG_VERSION").to_string(),
        pairs_file: pairs.path.display().to_string(),
        settings: s.clone(),
        seeds: pairs.seeds.clone(),
        checkpoints: data,
        pairs: out,
        floors,
    };
    let (answers, facts) = super::summary::answers(&report);
    report.answers = answers;
    report.answers_summary = facts;
    Ok(report)
}
