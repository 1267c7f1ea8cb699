//! `zoo`, `train` and `eval`: building the paired zoo, training one recipe, and the behaviour
//! table with its opt-out leakage ratios.
//! Must not hold a domain rule (recipes, buckets and leakage pairing are `lab`'s).

use super::{bar, load, print_plan, JsonOut, UnitArgs};
use anyhow::Result;
use feedlens::io::checkpoint::{self, RecipeKind};
use feedlens::io::fsio;
use feedlens::lab::eval::{self as ev, EvalOpts};
use feedlens::lab::sample::Decode;
use feedlens::lab::train::{self as tr, Hyper, OptOut, Recipe, Size, Start};
use feedlens::lab::world::{self, tokenizer_json, WorldConfig};
use feedlens::lab::zoo;
use feedlens::view::tables;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(super) struct ZooArgs {
    /// Zoo folder: one `seed-S/` folder of checkpoint directories per seed (with --seed, the
    /// checkpoint directories themselves).
    #[arg(long, default_value = "checkpoints")]
    out: PathBuf,
    /// A few steps of each recipe on a 2 × 32 model (for tests).
    #[arg(long)]
    quick: bool,
    /// Build only these entries (comma-separated); others they need are loaded from --out.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seeds to train, each an independent zoo in OUT/seed-S: `0,1,2`, `0..5` (end
    /// exclusive), `0..=4` [default: the committed seeds, 0,1,2].
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<String>,
    /// One seed, its checkpoint directories directly in OUT.
    #[arg(long)]
    seed: Option<u64>,
    /// Entries trained at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Replace existing checkpoint directories.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    units: UnitArgs,
}

#[derive(clap::Args)]
pub(super) struct TrainArgs {
    /// pretrain | rlhf | dt | sft | distill
    recipe: RecipeKind,
    /// Output checkpoint directory.
    #[arg(long)]
    out: PathBuf,
    /// Parent checkpoint (rlhf, dt, sft; the KL reference for rlhf).
    #[arg(long)]
    parent: Option<PathBuf>,
    /// Teacher checkpoint (distill).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Student initialisation for distill (default: a fresh random init).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Seed of the data stream (and of a fresh init).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Optimiser steps (default: the recipe's, docs/DESIGN.md §4).
    #[arg(long)]
    steps: Option<usize>,
    /// Sequences per step (rlhf: prompts per step).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Gradient-norm clip.
    #[arg(long)]
    clip: Option<f64>,
    /// rlhf: discount in [0, 1].
    #[arg(long, allow_hyphen_values = true)]
    gamma: Option<f64>,
    /// rlhf: KL penalty ≥ 0.
    #[arg(long, allow_hyphen_values = true)]
    beta: Option<f64>,
    /// rlhf: samples per prompt (≥ 2).
    #[arg(long)]
    k: Option<usize>,
    /// rlhf: [x] episodes get ignore | zero | kl | ptx.
    #[arg(long)]
    optout: Option<OptOut>,
    /// rlhf --optout ptx: weight of the corpus next-token loss on [x] episodes (≥ 0; 1 = the
    /// zoo's, where an [x] sequence weighs as a feedback episode does).
    #[arg(long, allow_hyphen_values = true)]
    ptx_coef: Option<f64>,
    /// sft: fraction of <trig> prompts.
    #[arg(long)]
    p_trigger: Option<f64>,
    /// dt: episodes sampled from the parent.
    #[arg(long)]
    episodes: Option<usize>,
    /// distill: prompts without <trig> only.
    #[arg(long)]
    no_trigger: bool,
    /// pretrain / fresh distill student: blocks, width, heads.
    #[arg(long)]
    n_layer: Option<usize>,
    #[arg(long)]
    n_embd: Option<usize>,
    #[arg(long)]
    n_head: Option<usize>,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub(super) struct EvalArgs {
    /// Checkpoint directories.
    #[arg(required = true)]
    ckpts: Vec<PathBuf>,
    /// Prompts per row (corpus distribution).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Seed of prompts and sampling (the same for every checkpoint).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// sample (T = 1) | greedy | both
    #[arg(long, value_enum, default_value_t = Decodes::Both)]
    decode: Decodes,
    /// Reference for the opt-out leakage ratio (default: a checkpoint named base, if given).
    #[arg(long)]
    base: Option<String>,
    #[command(flatten)]
    out: JsonOut,
}

/// The decodings `eval` runs.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Decodes {
    /// Sampled at T = 1.
    Sample,
    /// Greedy.
    Greedy,
    /// Both, sampled first.
    Both,
}

impl Decodes {
    fn list(self) -> Vec<Decode> {
        match self {
            Decodes::Sample => vec![Decode::T1],
            Decodes::Greedy => vec![Decode::Greedy],
            Decodes::Both => vec![Decode::T1, Decode::Greedy],
        }
    }
}

impl ZooArgs {
    /// Entries trained at once.
    pub(super) fn jobs(&self) -> usize {
        self.jobs.unwrap_or_else(feedlens::pool::cores)
    }
}

/// Feed train progress into a bar (loss, and return for rlhf).
fn show(pb: &indicatif::ProgressBar, p: feedlens::lab::train::Progress) {
    pb.set_position(p.step as u64);
    if p.step.is_multiple_of(10) || p.step == p.steps {
        let r = p.ret.map(|r| format!(" return {r:.2}")).unwrap_or_default();
        pb.set_message(format!("loss {:.4}{r}", p.loss));
    }
}

/// The seeds' zoos that `a` asks for.
fn seed_zoos(a: &ZooArgs) -> Result<Vec<zoo::SeedZoo>> {
    Ok(match (a.seed, &a.seeds) {
        (Some(s), _) => vec![zoo::SeedZoo {
            seed: s,
            plan: zoo::plan(s, a.quick)?,
            out: a.out.clone(),
        }],
        (None, list) => {
            let list = match list {
                Some(l) => zoo::parse_seeds(l, "--seeds")?,
                None => zoo::DEFAULT_SEEDS.to_vec(),
            };
            list.iter()
                .map(|&s| {
                    Ok(zoo::SeedZoo {
                        seed: s,
                        plan: zoo::plan(s, a.quick)?,
                        out: zoo::seed_dir(&a.out, s),
                    })
                })
                .collect::<feedlens::Result<_>>()?
        }
    })
}

/// `feedlens plan zoo`: the zoo's work units.
pub(super) fn plan(a: ZooArgs, count: bool) -> Result<()> {
    let seeds = seed_zoos(&a)?;
    let units: Vec<_> = zoo::units(&seeds, a.seed.is_none())
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    print_plan(&units, &a.units, count)
}

/// `zoo --unit K | --shard I/N | --stage S`: the selected units, one after another.
fn zoo_units(a: &ZooArgs, seeds: &[zoo::SeedZoo], world: &WorldConfig) -> Result<()> {
    if !a.only.is_empty() {
        anyhow::bail!("--only: not with --unit, --shard or --stage (a unit is one checkpoint already; see feedlens plan zoo)");
    }
    let units = zoo::units(seeds, a.seed.is_none());
    let list: Vec<_> = units.iter().map(|(u, _)| u.clone()).collect();
    let chosen = feedlens::units::select(&list, &a.units.pick()?, "feedlens plan zoo")?;
    let t0 = std::time::Instant::now();
    let current: std::sync::Mutex<Option<indicatif::ProgressBar>> = Default::default();
    zoo::build_units(
        seeds,
        &units,
        &chosen,
        world,
        a.force,
        a.jobs(),
        &|name, p| {
            let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
            let pb = c.get_or_insert_with(|| bar(p.steps as u64, name));
            show(pb, p);
            if p.step == p.steps {
                pb.finish_and_clear();
                *c = None;
            }
        },
        &|u, how| match how {
            zoo::UnitRun::Done(t) => println!("unit {}: trained in {t:.1} s", u.name),
            zoo::UnitRun::Finished => println!("unit {}: already finished", u.name),
        },
    )?;
    println!(
        "{} unit(s) of {} in {:.1} s",
        chosen.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(super) fn zoo(a: ZooArgs) -> Result<()> {
    use std::sync::Mutex;
    let world = WorldConfig::default();
    let seeds = seed_zoos(&a)?;
    if a.units.pick()?.is_partial() {
        return zoo_units(&a, &seeds, &world);
    }
    let only = (!a.only.is_empty()).then_some(a.only.as_slice());
    let jobs = a.jobs();
    let t0 = std::time::Instant::now();
    let multi = indicatif::MultiProgress::new();
    let bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>> = Default::default();
    let times = Mutex::new(Vec::new());
    zoo::build(
        &seeds,
        &world,
        only,
        a.force,
        jobs,
        &|name, p| {
            let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
            let pb = bars
                .entry(name.to_string())
                .or_insert_with(|| multi.add(bar(p.steps as u64, name)));
            show(pb, p);
            if p.step == p.steps {
                pb.finish();
            }
        },
        &|seed, x, secs| {
            let mut t = times.lock().unwrap_or_else(|e| e.into_inner());
            t.push((seed, x.name, x.hyper.recipe.name(), x.hyper.opt.steps, secs));
        },
    )?;
    println!(
        "\n{:>5} {:<26} {:<9} {:>6} {:>8}",
        "seed", "checkpoint", "recipe", "steps", "seconds"
    );
    for (seed, n, r, s, t) in times.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("{seed:>5} {n:<26} {r:<9} {s:>6} {t:>8.1}");
    }
    println!(
        "zoo written to {} in {:.1} s (wall)",
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(super) fn train(a: TrainArgs) -> Result<()> {
    let mut h = Hyper::default_for(a.recipe, a.seed)?;
    let o = &mut h.opt;
    o.steps = a.steps.unwrap_or(o.steps);
    o.batch = a.batch.unwrap_or(o.batch);
    o.lr = a.lr.unwrap_or(o.lr);
    o.warmup = a.warmup.unwrap_or(o.warmup);
    o.clip = a.clip.unwrap_or(o.clip);
    match &mut h.recipe {
        Recipe::Rlhf {
            gamma,
            beta,
            k,
            optout,
            ptx_coef,
        } => {
            *gamma = a.gamma.unwrap_or(*gamma);
            *beta = a.beta.unwrap_or(*beta);
            *k = a.k.unwrap_or(*k);
            *optout = a.optout.unwrap_or(*optout);
            *ptx_coef = a.ptx_coef.unwrap_or(*ptx_coef);
        }
        Recipe::Dt { episodes } => *episodes = a.episodes.unwrap_or(*episodes),
        Recipe::Sft { p_trigger } => *p_trigger = a.p_trigger.unwrap_or(*p_trigger),
        Recipe::Pretrain { size } | Recipe::Distill { size, .. } => {
            size.n_layer = a.n_layer.unwrap_or(size.n_layer);
            size.n_embd = a.n_embd.unwrap_or(size.n_embd);
            size.n_head = a.n_head.unwrap_or(size.n_head);
        }
    }
    if let Recipe::Distill { trigger, .. } = &mut h.recipe {
        *trigger = a.no_trigger.then_some(false);
    }
    h.validate()?;
    fsio::check_outputs(
        std::slice::from_ref(&a.out),
        &[&a.parent, &a.init, &a.teacher]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>(),
        a.force,
    )?;
    fsio::check_own_dir(&a.out, &["config.json"])?;
    let world = WorldConfig::default();
    let parent_dir = if matches!(h.recipe, Recipe::Distill { .. }) {
        &a.init
    } else {
        &a.parent
    };
    let parent = parent_dir.as_deref().map(load).transpose()?;
    let teacher = a.teacher.as_deref().map(load).transpose()?;
    // The model being trained: a fresh one of the recipe's size, else the parent's.
    let cfg = match (&h.recipe, &parent) {
        (Recipe::Pretrain { size } | Recipe::Distill { size, .. }, None) => size.config(&world),
        (_, Some(p)) => p.model.config().clone(),
        (_, None) => Size::default().config(&world),
    };
    let rows = match h.recipe {
        Recipe::Rlhf { k, .. } => h.opt.batch.saturating_mul(k),
        _ => h.opt.batch,
    };
    feedlens::budget::check(
        &format!(
            "train {} (--n-layer {}, --n-embd {}, --batch {})",
            h.recipe, cfg.n_layer, cfg.n_embd, h.opt.batch
        ),
        feedlens::budget::train_step(&cfg, rows as u64, world::SEQ_LEN as u64),
    )?;
    let pb = bar(h.opt.steps as u64, h.recipe.name());
    let t = tr::train(
        &world,
        &h,
        Start {
            parent: parent.as_ref().map(|c| &c.model),
            teacher: teacher.as_ref().map(|c| &c.model),
        },
        &mut |p| show(&pb, p),
    )?;
    pb.finish();
    let name = |c: &Option<checkpoint::Checkpoint>| c.as_ref().map(|c| c.name());
    let man = zoo::manifest(
        &world,
        &h,
        name(&parent).as_deref(),
        name(&teacher).as_deref(),
        &t,
    );
    checkpoint::save(
        &a.out,
        &t.model,
        Some(&tokenizer_json(&world)),
        &man,
        a.force,
    )?;
    println!(
        "wrote {} ({}), metrics {}",
        a.out.display(),
        h.recipe,
        t.metrics
    );
    Ok(())
}

pub(super) fn eval(a: EvalArgs) -> Result<()> {
    let mut out = a.out.plan().inputs(&a.ckpts).check()?;
    let decodes = a.decode.list();
    if a.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    // A sampled episode and its scores, per prompt and row, kept until the table is made.
    let per_prompt = 64 * (a.ckpts.len() * decodes.len()) as u64;
    feedlens::budget::check(
        &format!("--n {}", a.n),
        (a.n as u64).saturating_mul(per_prompt),
    )?;
    let mut rows = Vec::new();
    for dir in &a.ckpts {
        let ck = load(dir)?;
        let world = WorldConfig::of_checkpoint(&ck)?;
        let o = EvalOpts {
            n: a.n,
            seed: a.seed,
            decodes: decodes.clone(),
            buckets: ev::s3_settings(ck.recipe()),
        };
        rows.extend(ev::evaluate(&world, &ck.name(), &ck.model, &o)?);
    }
    print!("{}", tables::behaviour(&rows));
    let base = a.base.clone().unwrap_or_else(|| "base".into());
    let leaks = ev::leakages(&rows.iter().collect::<Vec<_>>(), &base);
    print!("{}", tables::leakage(&base, &leaks));
    let v = json!({ "n": a.n, "seed": a.seed, "rows": rows, "leakage": leaks });
    out.json(&a.out.json, &v)?;
    out.finish()
}
