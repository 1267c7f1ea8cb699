//! Running every analysis a report needs: per-checkpoint analyses once each (behaviour,
//! patching over each contrast, probes, logit lens), then each pair's own (weight diff,
//! cross-checkpoint patching, probe transfer, leakage), the difference lenses, and the merge
//! into one report with its summaries; in one process or as work units (`units`). Owns the
//! plan, its work lists and their order; the numbers come from `lab` and `analysis`. Must not
//! word or draw anything.

use super::crosscoders::CrossData;
use super::data::{
    CheckpointData, FloorData, PairData, PairRun, PromptKind, PromptSet, ReportData, Settings,
    Summary,
};
use super::pairs::{PairSpec, Pairs};
use super::summary::{summarise, summarise_anchoring, summarise_floor};
use super::Progress;
use crate::analysis::difflens::DiffLens;
use crate::analysis::probes::Label;
use crate::io::checkpoint::{self, Checkpoint, Manifest};
use crate::io::wire;
use crate::lab::eval::{self, EvalOpts};
use crate::lab::sample::Decode;
use crate::lab::world::{Contrast, WorldConfig};
use crate::{budget, pool, Error, Result};
use std::collections::{BTreeMap, BTreeSet};

mod per_checkpoint;
mod per_pair;
mod units;
use per_checkpoint::{causal_data, lens_data, patch_data, prompt_set, run_probe, ProbeRun};
use per_pair::{anchoring_points, init_root, pair_run, FloorKey, RunItem};
pub use units::{Selection, UnitRun};

/// Refuse settings whose largest per-checkpoint analyses, `s.jobs` at a time, would not fit in
/// memory (`budget`): the probe activation sets of both sides and a patching sweep.
fn check_memory<'c>(
    configs: impl Iterator<Item = &'c crate::model::config::Config>,
    s: &Settings,
) -> Result<()> {
    let Some(cfg) = configs.max_by_key(|c| c.n_layer * c.n_embd) else {
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

/// One checkpoint of a report: `name` of run `seed`, keyed `seed-S/NAME` (or `NAME`).
#[derive(Clone, Debug)]
struct CkKey {
    seed: Option<u64>,
    name: String,
    key: String,
}

/// What one checkpoint's analyses are: its behaviour rows (one per S3 setting), the contrasts
/// it is patched over, the probe labels, the logit-lens prompt sets.
#[derive(Clone, Debug, Default)]
struct CkWork {
    buckets: BTreeSet<Option<u8>>,
    contrasts: BTreeSet<Contrast>,
    labels: BTreeSet<Label>,
    lens: BTreeMap<PromptKind, PromptSet>,
}

/// Everything one report runs, planned from the pairs file, the settings and the checkpoints'
/// manifests (no weights read): the same plan in every process, so a work unit is named by its
/// place in it ([`Plan::units`]).
pub struct Plan<'a> {
    pairs: &'a Pairs,
    s: &'a Settings,
    runs: Vec<Option<u64>>,
    keys: Vec<CkKey>,
    work: BTreeMap<String, CkWork>,
    has_base: bool,
    anchoring: Vec<String>,
    sets: Vec<PromptSet>,
    floor_specs: Vec<(PairSpec, PromptSet)>,
    items: Vec<RunItem>,
    /// Difference lenses: (index into `crosscoders::pairs_of`, index into `runs`, which is
    /// also the index into that crosscoder's runs as `crosscoders::load` gives them).
    lenses: Vec<(usize, usize)>,
}

impl<'a> Plan<'a> {
    /// Plan every analysis of every pair in every seed: per-checkpoint analyses once each (a
    /// checkpoint is in many pairs), each pair's own per seed, the seed-null floors (each
    /// recipe of a pair at consecutive seeds, read the pair's way) and the difference lenses of
    /// the crosscoder pairs. Checks every checkpoint directory, the settings and the memory the
    /// analyses would need (from the checkpoints' configs) first.
    pub fn new(pairs: &'a Pairs, s: &'a Settings) -> Result<Plan<'a>> {
        pairs.check()?;
        if s.n_eval == 0 || s.n_patch == 0 || s.n_cross == 0 || s.n_probe < 2 * s.folds {
            input_err!("--n: too few prompts (need at least {})", 2 * s.folds);
        }
        let runs = pairs.runs();
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
        let keys: Vec<CkKey> = runs
            .iter()
            .flat_map(|&r| {
                names.iter().map(move |n| CkKey {
                    seed: r,
                    name: n.clone(),
                    key: Pairs::key(r, n),
                })
            })
            .collect();
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
        // Memory first, from the configs alone: before any prompt set is drawn.
        let configs = keys
            .iter()
            .map(|k| {
                checkpoint::read_config(&pairs.dir_of(k.seed, &k.name))
                    .map_err(|e| Error::file(&pairs.path, format!("checkpoint '{}': {e}", k.key)))
            })
            .collect::<Result<Vec<_>>>()?;
        check_memory(configs.iter(), s)?;
        // Each checkpoint's work, each item once.
        let mut work: BTreeMap<String, CkWork> = BTreeMap::new();
        for k in &keys {
            let named = |e: Error| Error::file(&pairs.path, format!("checkpoint '{}': {e}", k.key));
            let man = checkpoint::read_manifest(&pairs.dir_of(k.seed, &k.name)).map_err(named)?;
            let w = CkWork {
                buckets: eval::s3_settings(man.map(|m| m.recipe))
                    .into_iter()
                    .collect(),
                ..CkWork::default()
            };
            work.insert(k.key.clone(), w);
        }
        let mut sets: Vec<PromptSet> = Vec::new();
        for p in &pairs.pairs {
            let set = prompt_set(p, s.n_cross, s.seed)?;
            for &r in &runs {
                for c in [&p.a, &p.b] {
                    let Some(w) = work.get_mut(&Pairs::key(r, c)) else {
                        continue;
                    };
                    if p.contrast == Some(Contrast::Reward) {
                        w.buckets.extend(eval::CONDITIONED);
                    }
                    w.contrasts.extend(p.contrast);
                    w.labels.insert(Label::for_pair(p.contrast, p.metric));
                    w.lens.insert(set.key, set.clone());
                }
            }
            sets.push(set);
        }
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
        let lenses = (0..super::crosscoders::pairs_of(pairs).len())
            .flat_map(|i| (0..runs.len()).map(move |j| (i, j)))
            .collect();
        Ok(Plan {
            pairs,
            s,
            runs,
            keys,
            work,
            has_base,
            anchoring,
            sets,
            floor_specs,
            items,
            lenses,
        })
    }

    /// Load checkpoint `k`, with its world (checked to hold its config).
    fn load(&self, k: &CkKey) -> Result<(Checkpoint, WorldConfig)> {
        let key = &k.key;
        let named = |e: Error| Error::file(&self.pairs.path, format!("checkpoint '{key}': {e}"));
        let ck = checkpoint::load(self.pairs.dir_of(k.seed, &k.name)).map_err(named)?;
        let w = WorldConfig::of_checkpoint(&ck).map_err(named)?;
        w.holds(ck.model.config())
            .map_err(|e| Error::file(&self.pairs.path, format!("checkpoint '{key}': {e}")))?;
        Ok((ck, w))
    }

    /// The checkpoint whose key is `key`.
    fn ck_key(&self, key: &str) -> Result<&CkKey> {
        self.keys
            .iter()
            .find(|k| k.key == key)
            .ok_or_else(|| Error::input(format!("internal: checkpoint {key} not planned")))
    }

    /// Pair `i`'s checkpoints must have one shape.
    fn check_shapes(&self, it: &RunItem, cks: &BTreeMap<String, Checkpoint>) -> Result<()> {
        if it.floor.is_some() {
            return Ok(());
        }
        let p = &self.pairs.pairs[it.pair];
        if let Some(d) = cks[&it.a]
            .model
            .config()
            .shape_difference(cks[&it.b].model.config())
        {
            return Err(Error::file(
                &self.pairs.path,
                format!(
                    "pair '{}': '{}' and '{}' differ in shape: {d}",
                    p.name, it.a, it.b
                ),
            ));
        }
        Ok(())
    }

    /// The reference of a run's opt-out leakage: the pairs file's base when every run has one,
    /// else the pair's `a`; None for a floor or a pair over another contrast (no leakage).
    fn reference(&self, it: &RunItem) -> Option<String> {
        let p = &self.pairs.pairs[it.pair];
        if it.floor.is_some() || p.contrast != Some(Contrast::Optout) {
            return None;
        }
        Some(if self.has_base {
            Pairs::key(it.seed, &self.pairs.base)
        } else {
            Pairs::key(it.seed, &p.a)
        })
    }

    /// The pair (or floor) spec and prompt set of a run.
    fn spec(&self, it: &RunItem) -> (&PairSpec, &PromptSet) {
        match it.floor {
            None => (&self.pairs.pairs[it.pair], &self.sets[it.pair]),
            Some(f) => (&self.floor_specs[f].0, &self.floor_specs[f].1),
        }
    }

    /// The per-checkpoint analyses of checkpoints `which` (indices into the plan's
    /// checkpoints, all loaded in `cks`), stage by stage across them, `s.jobs` at a time:
    /// behaviour, patching over each contrast, the causal checks of what it localised, probes,
    /// logit lens. Also gives the probe runs (activation sets and fitted probes) that the pair
    /// runs transfer.
    fn checkpoints(
        &self,
        which: &[usize],
        cks: &BTreeMap<String, Checkpoint>,
        worlds: &BTreeMap<String, WorldConfig>,
        progress: &dyn Progress,
    ) -> Result<(BTreeMap<String, CheckpointData>, ProbeRuns)> {
        let s = self.s;
        let keys: Vec<&CkKey> = which.iter().map(|&i| &self.keys[i]).collect();
        let work = |k: &str| &self.work[k];
        let mut data: BTreeMap<String, CheckpointData> = keys
            .iter()
            .map(|k| {
                let ck = &cks[&k.key];
                let cfg = ck.model.config();
                (
                    k.key.clone(),
                    CheckpointData {
                        name: k.name.clone(),
                        seed: k.seed,
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
        let ordered: Vec<String> = data.keys().cloned().collect();

        // Behaviour: one row per (checkpoint, S3 setting), all from the same prompts and seed.
        let eval_jobs: Vec<(String, Option<u8>)> = ordered
            .iter()
            .flat_map(|n| work(n).buckets.iter().map(move |b| (n.clone(), *b)))
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
        let jobs: Vec<(String, Contrast)> = ordered
            .iter()
            .flat_map(|n| work(n).contrasts.iter().map(move |c| (n.clone(), *c)))
            .collect();
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

        // Probes: one activation set per (checkpoint, label) at the label's decision position,
        // and the slot labels also at their slot.
        let jobs: Vec<(String, Label)> = ordered
            .iter()
            .flat_map(|n| work(n).labels.iter().map(move |l| (n.clone(), *l)))
            .collect();
        let all: Vec<(String, Label, usize)> = jobs
            .iter()
            .map(|(n, l)| (n.clone(), *l, l.decision_position()))
            .chain(
                jobs.iter()
                    .filter_map(|(n, l)| l.slot_position().map(|p| (n.clone(), *l, p))),
            )
            .collect();
        progress.stage("probes", all.len());
        let probe_out = pool::par_map(s.jobs, &all, |(n, l, p)| {
            let r = run_probe(&cks[n], *l, *p, s)?;
            progress.step("probes", &format!("{n} {l} @{p}"));
            Ok(r)
        })?;
        let mut probe_runs = ProbeRuns::new();
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
        let jobs: Vec<(&String, &PromptKind, &PromptSet)> = ordered
            .iter()
            .flat_map(|n| work(n).lens.iter().map(move |(k, set)| (n, k, set)))
            .collect();
        progress.stage("logit lens", jobs.len());
        let lensed = pool::par_map(s.jobs, &jobs, |(n, _, set)| {
            let r = lens_data(&cks[*n], set, s)?;
            progress.step("logit lens", n);
            Ok(r)
        })?;
        for ((n, k, _), r) in jobs.iter().zip(lensed) {
            if let Some(d) = data.get_mut(*n) {
                d.lens.insert(**k, r);
            }
        }
        progress.done("logit lens");
        Ok((data, probe_runs))
    }

    /// Runs `which` (indices into the plan's runs) of pairs and floors, `s.jobs` at a time:
    /// weight diff, cross-checkpoint patching, probe transfer, leakage. `cks` holds each run's
    /// checkpoints, `data` the behaviour of those and of each run's reference, `probe_runs` the
    /// probe runs of both sides at the pair's label.
    fn pair_runs(
        &self,
        which: &[usize],
        cks: &BTreeMap<String, Checkpoint>,
        data: &BTreeMap<String, CheckpointData>,
        probe_runs: &ProbeRuns,
        progress: &dyn Progress,
    ) -> Result<Vec<PairRun>> {
        let s = self.s;
        // Lineage: the checkpoint each one's weights started from (its manifests' parent chain).
        let root = |k: &str| -> Option<String> {
            let c = self.ck_key(k).ok()?;
            init_root(self.pairs, c.seed, &c.name, cks)
        };
        progress.stage("pairs", which.len());
        let out = pool::par_map(s.jobs, which, |&i| {
            let it = &self.items[i];
            let (p, set) = self.spec(it);
            let shared = match (root(&it.a), root(&it.b)) {
                (Some(x), Some(y)) => Some(x == y),
                _ => None,
            };
            let refk = self.reference(it);
            pair_run(
                p,
                set,
                (&it.a, &it.b, it.seed),
                shared,
                cks,
                data,
                probe_runs,
                refk.as_deref(),
                s,
            )
            .map_err(|e| Error::file(&self.pairs.path, format!("pair '{}': {e}", p.name)))
            .inspect(|_| progress.step("pairs", &p.name))
        })?;
        progress.done("pairs");
        Ok(out)
    }

    /// Difference lenses `which` (indices into the plan's lenses), `s.jobs` at a time; None
    /// for a crosscoder run the report does not use (not trained, or stale).
    fn difflenses<'m>(
        &self,
        which: &[usize],
        crosscoders: &[CrossData],
        model: impl Fn(&str) -> Option<&'m crate::Model> + Sync,
    ) -> Result<Vec<Option<DiffLens>>> {
        let s = self.s;
        let mut wanted: Vec<CrossData> = crosscoders.to_vec();
        for c in &mut wanted {
            for r in &mut c.runs {
                r.unused.get_or_insert_with(|| "not asked for".into());
            }
        }
        for &i in which {
            let (c, run) = self.lenses[i];
            if crosscoders[c].runs[run].unused.is_none() {
                wanted[c].runs[run].unused = None;
            }
        }
        super::crosscoders::add_difflens(&mut wanted, model, s.jobs, s.bootstrap, s.seed)?;
        Ok(which
            .iter()
            .map(|&i| {
                let (c, run) = self.lenses[i];
                wanted[c].runs[run].difflens.take()
            })
            .collect())
    }

    /// Assemble the report from every checkpoint's data, every run (in plan order) and every
    /// difference lens: the floors and pairs with their summaries, the anchoring
    /// dose–response, the crosscoders, the answers. `manifests` gives each checkpoint's.
    fn merge(
        &self,
        data: BTreeMap<String, CheckpointData>,
        pair_runs: Vec<PairRun>,
        lenses: Vec<Option<DiffLens>>,
        manifests: &BTreeMap<String, Option<Manifest>>,
    ) -> Result<ReportData> {
        let s = self.s;
        let mut runs_of: Vec<Vec<PairRun>> = vec![Vec::new(); self.pairs.pairs.len()];
        let mut floor_runs: Vec<Vec<PairRun>> = vec![Vec::new(); self.floor_specs.len()];
        for (it, run) in self.items.iter().zip(pair_runs) {
            match it.floor {
                None => runs_of[it.pair].push(run),
                Some(f) => floor_runs[f].push(run),
            }
        }
        let floors: Vec<FloorData> = self
            .floor_specs
            .iter()
            .zip(floor_runs)
            .map(|((spec, set), runs)| {
                let mut fd = FloorData {
                    name: spec.name.clone(),
                    recipe: spec.a.clone(),
                    contrast: spec.contrast,
                    metric: spec.metric,
                    probe_label: Label::for_pair(spec.contrast, spec.metric),
                    prompts: set.clone(),
                    runs,
                    summary: Summary::default(),
                };
                summarise_floor(&mut fd, &data, s);
                fd
            })
            .collect();
        let out: Vec<PairData> = self
            .pairs
            .pairs
            .iter()
            .zip(&self.sets)
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
                    prompts: set.clone(),
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
        let anchor = anchoring_points(self.pairs, &self.anchoring, &self.runs, manifests, &data)?;
        let anchoring_summary = summarise_anchoring(&anchor, &self.pairs.base);
        let mut crosscoders = super::crosscoders::load(self.pairs)?;
        for (&(c, run), d) in self.lenses.iter().zip(lenses) {
            if let Some(x) = crosscoders.get_mut(c).and_then(|x| x.runs.get_mut(run)) {
                if x.unused.is_none() {
                    x.difflens = d;
                }
            }
        }
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
            pairs_file: self.pairs.path.display().to_string(),
            settings: s.clone(),
            seeds: self.pairs.seeds.clone(),
            checkpoints: data,
            pairs: out,
            floors,
        };
        let (answers, facts) = super::summary::answers(&report);
        report.answers = answers;
        report.answers_summary = facts;
        Ok(report)
    }
}

/// The probe runs of a report at each (checkpoint, label)'s decision position.
type ProbeRuns = BTreeMap<(String, Label), ProbeRun>;

/// `x` through a unit file's encoding and back: what a merge of work units reads, so that the
/// single-process report is assembled from exactly the values a merge would be.
fn through_units<T: serde::Serialize + serde::de::DeserializeOwned>(x: T) -> Result<T> {
    wire::decode(&wire::encode(&x)?, std::path::Path::new("(in memory)"))
}

/// Run every analysis of every pair in every seed in this process (see [`Plan::new`]): every
/// checkpoint loaded and checked before any work, the per-checkpoint analyses, the pair runs,
/// the difference lenses, then the same merge as `--merge` of work units, from the same
/// encoded values.
pub fn analyse(pairs: &Pairs, s: &Settings, progress: &dyn Progress) -> Result<ReportData> {
    let plan = Plan::new(pairs, s)?;
    progress.stage("load", plan.keys.len());
    let mut cks: BTreeMap<String, Checkpoint> = BTreeMap::new();
    let mut worlds: BTreeMap<String, WorldConfig> = BTreeMap::new();
    for k in &plan.keys {
        let (ck, w) = plan.load(k)?;
        cks.insert(k.key.clone(), ck);
        worlds.insert(k.key.clone(), w);
        progress.step("load", &k.key);
    }
    progress.done("load");
    for it in &plan.items {
        plan.check_shapes(it, &cks)?;
    }
    let all: Vec<usize> = (0..plan.keys.len()).collect();
    let (data, probe_runs) = plan.checkpoints(&all, &cks, &worlds, progress)?;
    let data = through_units(data)?;
    let all: Vec<usize> = (0..plan.items.len()).collect();
    let runs = plan.pair_runs(&all, &cks, &data, &probe_runs, progress)?;
    drop(probe_runs);
    let runs = through_units(runs)?;
    let crosscoders = super::crosscoders::load(pairs)?;
    let all: Vec<usize> = (0..plan.lenses.len()).collect();
    let lenses = plan.difflenses(&all, &crosscoders, |k| cks.get(k).map(|c| &c.model))?;
    let lenses = through_units(lenses)?;
    let manifests = cks
        .iter()
        .map(|(k, c)| (k.clone(), c.manifest.clone()))
        .collect();
    plan.merge(data, runs, lenses, &manifests)
}
