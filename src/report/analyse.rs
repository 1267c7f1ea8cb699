//! Running every analysis a report needs: per-checkpoint analyses once each (behaviour,
//! patching over each contrast, probes, logit lens), then each pair's own (weight diff,
//! cross-checkpoint patching, probe transfer, leakage) and its summary. Owns the work lists and
//! their order; the numbers come from `lab` and `analysis`. Must not word or draw anything.

use super::data::{
    lens_series, AnchorPoint, CausalData, CheckpointData, FloorData, LensData, PairData, PairRun,
    PatchData, PatchSweeps, ProbeData, PromptKind, PromptSet, ReportData, SeriesEst, SetRole,
    Settings, Summary,
};
use super::pairs::{PairSpec, Pairs};
use super::summary::{summarise, summarise_anchoring, summarise_floor};
use super::Progress;
use crate::analysis::causal::{self, AblateOpts, Component, SteerOpts, Target};
use crate::analysis::patching::{self, Direction, Sanity, Setup, Sweep, SweepCi};
use crate::analysis::probes::math::LayerOptions;
use crate::analysis::probes::{
    layers, sample_prompts, ActivationSet, Folded, Label, TransferResult,
};
use crate::analysis::site::Site;
use crate::analysis::{diff, lens};
use crate::io::checkpoint::{self, Checkpoint};
use crate::lab::eval::{self, EvalOpts};
use crate::lab::sample::Decode;
use crate::lab::world::{self, Contrast, MetricKind, PromptDist, WorldConfig};
use crate::stats;
use crate::view::figures;
use crate::{pool, Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// The prompt set of a pair's cross-checkpoint patching and lens: the contrast's clean prompts,
/// or corpus prompts when the pair has no contrast (for `defect`, the trigger contrast's
/// corrupt side: corpus prompts without `<trig>`, `H` teacher-forced).
fn prompt_set(p: &PairSpec, n: usize, seed: u64) -> Result<PromptSet> {
    let mut control: Option<(String, Vec<Vec<u32>>, Vec<patching::Metric>)> = None;
    let (key, about, ids, metrics, pos) = match (p.contrast, p.metric) {
        (Some(c), _) => {
            let (pairs, pos) = patching::world_pairs(c, n, seed)?;
            let (key, about, ctrl) = match c {
                Contrast::Optout => (
                    PromptKind::Optout,
                    "[x] prompts",
                    "the same prompts without [x]",
                ),
                Contrast::Trigger => (
                    PromptKind::Trigger,
                    "<trig> prompts (H teacher-forced)",
                    "the same prompts without <trig>",
                ),
                Contrast::Reward => (
                    PromptKind::Reward,
                    "<r4> prompts",
                    "the same prompts with <r0>",
                ),
            };
            control = Some((
                ctrl.to_string(),
                pairs.iter().map(|x| x.corrupt.clone()).collect(),
                pairs.iter().map(|x| x.metric.clone()).collect(),
            ));
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
    let (control_about, control_ids, control_metrics) = match control {
        Some((a, i, m)) => (Some(a), i, m),
        None => (None, Vec::new(), Vec::new()),
    };
    Ok(PromptSet {
        key,
        about: about.to_string(),
        pos,
        n,
        metrics,
        ids,
        control_about,
        control_metrics,
        control_ids,
    })
}

/// One probe label on one checkpoint: its activation set and the per-layer results.
struct ProbeRun {
    set: ActivationSet,
    data: ProbeData,
    folded: Option<Folded>,
    /// Per layer, the held-out folds with their fitted probes (for transfer).
    held: Vec<Vec<crate::analysis::probes::math::HeldOut>>,
}

/// `label` probed on `ck` at `position` (the decision position, or the label's slot).
fn run_probe(ck: &Checkpoint, label: Label, position: usize, s: &Settings) -> Result<ProbeRun> {
    let n_layer = ck.model.config().n_layer;
    let layer_ids: Vec<usize> = (0..n_layer).collect();
    let prompts = sample_prompts(label, s.n_probe, s.seed, None, None);
    let set = ActivationSet::build(
        &ck.model,
        prompts,
        label,
        Site::ResidPost,
        position,
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
                held: Vec::new(),
            });
        }
    };
    // Control task keyed by the first digit's identity: positions 10 and 11 always hold `A`
    // and `H`, and a slot's token is the label itself, so the probed token cannot key one.
    let opt = LayerOptions {
        c: s.c,
        n_random: s.null_directions,
        seed: s.seed,
        control_keys: Some(set.tokens_at(world::POS_D1)),
    };
    let (results, held) =
        layers::layer_results_held(&set, &f, &opt, true, Some((s.bootstrap, s.seed)))?;
    data.layers = results;
    data.classes = f.enc.classes.clone();
    data.class_counts = layers::class_counts(&f);
    Ok(ProbeRun {
        set,
        data,
        folded: Some(f),
        held,
    })
}

/// A probe fitted on `from`'s activations, scored on `to`'s (same prompts, `to`'s labels).
fn transfer(
    from: (&str, &ProbeRun),
    to: (&str, &ProbeRun),
    s: &Settings,
) -> Result<Option<TransferResult>> {
    let Some(f) = &from.1.folded else {
        return Ok(None);
    };
    let t = layers::transfer_held(&from.1.held, f, &to.1.set, Some((s.bootstrap, s.seed)));
    Ok(t.map(|(layers, ci)| TransferResult {
        from: from.0.to_string(),
        to: to.0.to_string(),
        layers,
        ci,
    }))
}

fn patch_data(ck: &Checkpoint, contrast: Contrast, s: &Settings) -> Result<PatchData> {
    let (pairs, pos) = patching::world_pairs(contrast, s.n_patch, s.seed)?;
    let tokens = figures::position_labels(&pairs, world::label, world::slot_name);
    let setup = Setup::new(&ck.model, pairs.clone(), Some(pos), Direction::Denoise)?;
    let (clean, corrupt) = patching::pair_metrics(&ck.model, &setup)?;
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let d: Vec<f64> = clean
        .iter()
        .zip(&corrupt)
        .map(|(a, b)| (a - b) as f64)
        .collect();
    let gap = stats::mean_est(&d, s.bootstrap, s.seed);
    // A gap whose interval reaches 0, or below `min_gap`, has nothing to localise: shares of
    // it are noise, and the maps of a null effect would only look like findings.
    let skipped = (!gap.excludes(0.0) || gap.value.abs() < s.min_gap).then(|| {
        format!(
            "the clean–corrupt gap is {:.3} [{:.3}, {:.3}] logits: its interval reaches 0 or it is below {} logits, too small to localise",
            gap.value, gap.lo, gap.hi, s.min_gap
        )
    });
    let sweeps = match skipped {
        Some(_) => None,
        None => {
            let run = |d: Direction| -> Result<((Sweep, Option<SweepCi>), Sanity)> {
                let setup = Setup::new(&ck.model, pairs.clone(), Some(pos), d)?;
                let sw = patching::sweep(&ck.model, &setup, &Site::PATCHED)?;
                let ci = sw.intervals(s.bootstrap, s.seed);
                Ok(((sw, ci), patching::sanity(&ck.model, &setup)?))
            };
            let (denoise, denoise_sanity) = run(Direction::Denoise)?;
            let (noise, noise_sanity) = run(Direction::Noise)?;
            Some(PatchSweeps {
                denoise,
                denoise_sanity,
                noise,
                noise_sanity,
            })
        }
    };
    Ok(PatchData {
        contrast,
        metric: contrast.metric().describe(),
        pos,
        tokens,
        n_pairs: pairs.len(),
        clean: stats::mean_est(&f(&clean), s.bootstrap, s.seed),
        corrupt: stats::mean_est(&f(&corrupt), s.bootstrap, s.seed),
        gap,
        skipped,
        sweeps,
    })
}

/// The sets a run's patching names (its own top head, top MLP and most necessary output, and
/// the three together), each at the position of its cell.
fn localised_sets(sw: &PatchSweeps, min_gap: f64) -> Vec<(SetRole, Vec<Target>)> {
    let mut v = Vec::new();
    let den = &sw.denoise.0;
    if let Some(c) = den.best_cell(Site::HeadOut, min_gap) {
        let t = Target {
            comp: Component::head(c.layer, c.head),
            pos: c.position,
        };
        v.push((SetRole::TopHead, vec![t]));
    }
    if let Some(c) = den.best_cell(Site::MlpOut, min_gap) {
        let t = Target {
            comp: Component::at(Site::MlpOut, c.layer),
            pos: c.position,
        };
        v.push((SetRole::TopMlp, vec![t]));
    }
    let noise = &sw.noise.0;
    let best = [Site::AttnOut, Site::MlpOut]
        .into_iter()
        .filter_map(|site| noise.best_cell(site, min_gap).map(|c| (site, c)))
        .max_by(|x, y| x.1.share.total_cmp(&y.1.share));
    if let Some((site, c)) = best {
        let t = Target {
            comp: Component::at(site, c.layer),
            pos: c.position,
        };
        v.push((SetRole::Necessary, vec![t]));
    }
    if v.len() > 1 {
        let mut all: Vec<Target> = Vec::new();
        for t in v.iter().flat_map(|(_, s)| s) {
            if !all.contains(t) {
                all.push(*t);
            }
        }
        v.push((SetRole::Together, all));
    }
    v
}

/// The causal checks of one checkpoint's patching over one contrast, when it localised.
fn causal_data(
    ck: &Checkpoint,
    world: &WorldConfig,
    pd: &PatchData,
    s: &Settings,
) -> Result<Option<CausalData>> {
    let Some(sw) = &pd.sweeps else {
        return Ok(None);
    };
    let sets = localised_sets(sw, s.min_gap);
    let (roles, sets): (Vec<SetRole>, Vec<Vec<Target>>) = sets.into_iter().unzip();
    let ablation = causal::ablate(
        &ck.model,
        world,
        &sets,
        &AblateOpts {
            contrast: pd.contrast,
            n: s.n_causal,
            seed: s.seed,
            bootstrap: s.bootstrap,
        },
    )?;
    let steering = causal::steer(
        &ck.model,
        world,
        &SteerOpts {
            contrast: pd.contrast,
            layers: Vec::new(),
            alphas: s.steer_alphas.clone(),
            n: s.n_causal,
            seed: s.seed,
            bootstrap: s.bootstrap,
        },
    )?;
    Ok(Some(CausalData {
        roles,
        ablation,
        steering,
    }))
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

/// The lens on `set` with the report's two series and their intervals.
fn lens_data(ck: &Checkpoint, set: &PromptSet, s: &Settings) -> Result<LensData> {
    let result = lens::logit_lens(&ck.model, &set.ids, Some(set.pos), &lens_tokens(set))?;
    let series = lens_series(&result)
        .into_iter()
        .map(|(name, toks)| SeriesEst {
            name,
            values: result
                .per_prompt
                .iter()
                .map(|pt| {
                    let n = pt.first().map_or(0, Vec::len);
                    let per: Vec<f64> = (0..n)
                        .map(|i| toks.iter().map(|&t| pt[t][i]).sum())
                        .collect();
                    stats::mean_est(&per, s.bootstrap, s.seed)
                })
                .collect(),
        })
        .collect();
    Ok(LensData { result, series })
}

/// The key of a seed-null floor: a recipe read with one pair kind's prompts, metric and label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FloorKey {
    recipe: String,
    contrast: Option<Contrast>,
    metric: MetricKind,
}

impl FloorKey {
    fn name(&self) -> String {
        match self.contrast {
            Some(c) => format!("null {} ({c})", self.recipe),
            None => format!("null {} ({})", self.recipe, self.metric),
        }
    }
    /// The pair whose prompts, metric and label the floor is read with.
    fn spec(&self) -> PairSpec {
        PairSpec {
            name: self.name(),
            a: self.recipe.clone(),
            b: self.recipe.clone(),
            contrast: self.contrast,
            metric: self.metric,
        }
    }
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
    // The anchoring dose–response: each strength's leakage against the reference, per run.
    let mut anchor: Vec<AnchorPoint> = Vec::new();
    for c in &anchoring {
        let first = &cks[&Pairs::key(runs[0], c)];
        let ptx_coef = ptx_coef_of(first)
            .ok_or_else(|| Error::file(&pairs.path, format!("anchoring: checkpoint '{c}' is not an rlhf checkpoint with --optout ptx (its manifest says otherwise)")))?;
        let (leakage, p_e_change) = runs
            .iter()
            .filter_map(|&r| {
                let row = |n: &str| {
                    data[&Pairs::key(r, n)]
                        .behaviour
                        .iter()
                        .find(|x| x.s3 == "_")
                };
                let (b, v) = (row(&pairs.base)?, row(c)?);
                let d = |s: world::Split| v.get(s).p_e - b.get(s).p_e;
                Some((
                    eval::leakage(b, v),
                    (d(world::Split::Optout), d(world::Split::NoOptout)),
                ))
            })
            .unzip();
        anchor.push(AnchorPoint {
            checkpoint: c.clone(),
            ptx_coef,
            leakage,
            p_e_change,
        });
    }
    anchor.sort_by(|x, y| x.ptx_coef.total_cmp(&y.ptx_coef));
    let anchoring_summary = summarise_anchoring(&anchor, &pairs.base);
    let mut report = ReportData {
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

/// The checkpoint whose weights checkpoint `name` of run `seed` started from: its manifest's
/// parent chain followed to a checkpoint trained from a fresh initialisation (its own key).
/// None when a manifest on the way is missing (lineage unknown).
fn init_root(
    pairs: &Pairs,
    seed: Option<u64>,
    name: &str,
    cks: &BTreeMap<String, Checkpoint>,
) -> Option<String> {
    let mut name = name.to_string();
    for _ in 0..32 {
        let key = Pairs::key(seed, &name);
        let parent = match cks.get(&key) {
            Some(ck) => ck.manifest.as_ref()?.parent.clone(),
            None => {
                let bytes =
                    crate::io::fsio::read_small(&pairs.dir_of(seed, &name).join("feedlens.json"))
                        .ok()?;
                serde_json::from_slice::<checkpoint::Manifest>(&bytes)
                    .ok()?
                    .parent
            }
        };
        match parent {
            None => return Some(key),
            Some(p) => name = p,
        }
    }
    None
}

/// The `ptx_coef` of an rlhf checkpoint trained with `--optout ptx` (1 when its manifest
/// predates the coefficient); None for any other checkpoint.
fn ptx_coef_of(ck: &Checkpoint) -> Option<f64> {
    use crate::lab::train::{Hyper, OptOut, Recipe};
    let h: Hyper = serde_json::from_value(ck.manifest.as_ref()?.hyper.clone()).ok()?;
    match h.recipe {
        Recipe::Rlhf {
            optout: OptOut::Ptx,
            ptx_coef,
            ..
        } => Some(ptx_coef),
        _ => None,
    }
}

/// One unit of pair work: checkpoints `a` and `b` (keys into the loaded checkpoints) read as
/// pair `pair`, or as seed floor `floor` when set.
struct RunItem {
    pair: usize,
    floor: Option<usize>,
    a: String,
    b: String,
    seed: Option<u64>,
}

/// One run of a pair (checkpoints `ka` and `kb`): weight diff, cross-checkpoint patching, probe
/// transfer and, given a reference, the opt-out leakage.
#[allow(clippy::too_many_arguments)]
fn pair_run(
    p: &PairSpec,
    set: &PromptSet,
    (ka, kb, seed): (&str, &str, Option<u64>),
    shared: Option<bool>,
    cks: &BTreeMap<String, Checkpoint>,
    data: &BTreeMap<String, CheckpointData>,
    probe_runs: &BTreeMap<(String, Label), ProbeRun>,
    reference: Option<&str>,
    s: &Settings,
) -> Result<PairRun> {
    let (a, b) = (&cks[ka], &cks[kb]);
    let weight_diff = diff::weight_diff(&a.model, &p.a, &b.model, &p.b)?;
    // Patching one model's activations into another needs a shared basis: a shared
    // initialisation. Without one only the metric gap is computed.
    let cross_refused = (shared == Some(false)).then(|| {
        format!(
            "{ka} and {kb} share no initialisation (their manifests' lineages start from different weights), so their residual streams share no basis and patching one into the other would mean nothing"
        )
    });
    let spec = |comps: Vec<Site>| patching::CrossSpec {
        comps,
        pos: Some(set.pos),
        position: None,
        layer: None,
    };
    let comps = match cross_refused {
        Some(_) => vec![],
        None => vec![Site::ResidPre, Site::AttnOut, Site::MlpOut],
    };
    let cross = patching::patch_models(&a.model, &b.model, &set.ids, &set.metrics, &spec(comps))?;
    let cross_ci = cross.intervals(s.bootstrap, s.seed);
    // The same patches on the control prompts: what is specific to the slot.
    let (cross_control, specific) = if cross_refused.is_none() && !set.control_ids.is_empty() {
        let c = patching::patch_models(
            &a.model,
            &b.model,
            &set.control_ids,
            &set.control_metrics,
            &spec(vec![Site::AttnOut, Site::MlpOut]),
        )?;
        let sp = patching::specific(&cross, &c, s.bootstrap, s.seed);
        (Some(c), sp)
    } else {
        (None, None)
    };
    let label = Label::for_pair(p.contrast, p.metric);
    let ra = &probe_runs[&(ka.to_string(), label)];
    let rb = &probe_runs[&(kb.to_string(), label)];
    let cka = match cross_refused {
        Some(_) if ra.set.prompts == rb.set.prompts => ra
            .set
            .acts
            .iter()
            .zip(&rb.set.acts)
            .map(|(x, y)| crate::analysis::similarity::linear_cka(x.view(), y.view()))
            .collect(),
        _ => Vec::new(),
    };
    let mut probe_transfer = Vec::new();
    if ka != kb {
        probe_transfer.extend(transfer((ka, ra), (kb, rb), s)?);
        probe_transfer.extend(transfer((kb, rb), (ka, ra), s)?);
    }
    let mut leakage = Vec::new();
    if let (Some(reference), Some(Contrast::Optout)) = (reference, p.contrast) {
        // The reference's row, then each other checkpoint of the pair.
        let row = |n: &str| data[n].behaviour.iter().find(|r| r.s3 == "_");
        let others = [ka, kb].into_iter().filter(|c| *c != reference);
        let rows: Vec<_> = std::iter::once(reference)
            .chain(others)
            .filter_map(row)
            .collect();
        let base_name = &data[reference].name;
        leakage = eval::leakages(&rows, base_name);
    }
    Ok(PairRun {
        seed,
        a: ka.to_string(),
        b: kb.to_string(),
        leakage,
        weight_diff,
        cross,
        cross_ci,
        cross_refused,
        cross_control,
        specific,
        cka,
        probe_transfer,
    })
}
