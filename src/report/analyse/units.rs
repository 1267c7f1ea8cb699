//! A report's work units: the plan's analyses as named, idempotent units (one checkpoint's
//! analyses, one pair or floor run, one difference lens), each stored atomically as one file
//! in a units folder with the fingerprint of its inputs, and the merge that reads them all
//! back into the report. Owns unit names, files and fingerprints; the work is `Plan`'s. Must
//! not word or draw anything.

use super::per_checkpoint::run_probe;
use super::{check_memory, CkKey, Plan, ProbeRuns};
use crate::analysis::difflens::DiffLens;
use crate::analysis::probes::Label;
use crate::io::checkpoint::{self, Checkpoint};
use crate::io::{fsio, wire};
use crate::report::data::{CheckpointData, PairRun, ReportData};
use crate::report::{Pairs, Progress};
use crate::units::{self, Pick, Unit};
use crate::{pool, Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a unit computes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// The analyses of checkpoint `keys[i]`.
    Checkpoint(usize),
    /// Run `items[i]` of a pair or floor.
    Run(usize),
    /// Difference lens `lenses[i]`.
    Lens(usize),
}

/// How one selected unit went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnitRun {
    /// Computed and stored, in this many seconds.
    Done(f64),
    /// Already stored from the same inputs: nothing done.
    Finished,
}

/// Which units to run, and where they live.
pub struct Selection<'p> {
    /// The units folder.
    pub dir: &'p Path,
    /// The share to run.
    pub pick: Pick,
    /// Redo units stored from other inputs (or unreadable) instead of refusing.
    pub force: bool,
}

/// A unit file: the unit, the fingerprint of its inputs, and its value.
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    unit: String,
    fingerprint: String,
    value: T,
}

/// A unit file's header alone.
#[derive(Deserialize)]
struct Head {
    unit: String,
    fingerprint: String,
}

/// The checkpoints' weight hashes, each file hashed once.
#[derive(Default)]
struct Hashes(Mutex<BTreeMap<String, String>>);

impl<'a> Plan<'a> {
    /// The plan's units in order: stage 0 the checkpoints (`checkpoint seed-S/NAME`) and the
    /// difference lenses (`difflens PAIR seed-S`), stage 1 the pair and floor runs (`run PAIR
    /// seed-S`, `floor NAME seed-S+T`), which need their checkpoints' units.
    pub fn units(&self) -> Vec<Unit> {
        self.kinds().into_iter().map(|(u, _)| u).collect()
    }

    fn kinds(&self) -> Vec<(Unit, Kind)> {
        let seed = |r: Option<u64>| r.map(|s| format!(" seed-{s}")).unwrap_or_default();
        let ck = |key: &str| format!("checkpoint {key}");
        let mut v: Vec<(Unit, Kind)> = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let u = Unit {
                stage: 0,
                name: ck(&k.key),
                needs: vec![],
            };
            v.push((u, Kind::Checkpoint(i)));
        }
        let coders = crate::report::crosscoders::pairs_of(self.pairs);
        for (i, &(c, j)) in self.lenses.iter().enumerate() {
            let u = Unit {
                stage: 0,
                name: format!("difflens {}{}", coders[c].name, seed(self.runs[j])),
                needs: vec![],
            };
            v.push((u, Kind::Lens(i)));
        }
        for (i, it) in self.items.iter().enumerate() {
            let name = match it.floor {
                None => format!("run {}{}", self.pairs.pairs[it.pair].name, seed(it.seed)),
                Some(f) => {
                    let next = self.ck_key(&it.b).ok().and_then(|k| k.seed);
                    let seeds = match (it.seed, next) {
                        (Some(x), Some(y)) => format!(" seed-{x}+{y}"),
                        _ => String::new(),
                    };
                    format!("floor {}{seeds}", self.floor_specs[f].0.name)
                }
            };
            let mut needs = vec![ck(&it.a), ck(&it.b)];
            if let Some(r) = self.reference(it) {
                if r != it.a && r != it.b {
                    needs.push(ck(&r));
                }
            }
            let u = Unit {
                stage: 1,
                name,
                needs,
            };
            v.push((u, Kind::Run(i)));
        }
        v
    }

    /// The file of unit `name` in `dir`: its name made file-safe, with a hash of the name so
    /// that two names never share a file.
    fn unit_file(dir: &Path, name: &str) -> PathBuf {
        let h = Sha256::digest(name.as_bytes());
        let tag: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
        dir.join(format!("{}-{tag}.cbor", crate::view::html::slug(name)))
    }

    /// The fingerprint of a unit's inputs: feedlens's version, the settings, what the unit
    /// computes (its checkpoint's work list, or its pair, prompts and reference), the weights
    /// of every checkpoint it reads and the fingerprints of the units it needs.
    fn fingerprint(&self, kind: Kind, hashes: &Hashes) -> Result<String> {
        let mut h = Sha256::new();
        let mut s = self.s.clone();
        s.jobs = 0;
        h.update(format!("feedlens {}\n{s:?}\n", env!("CARGO_PKG_VERSION")));
        let weights = |key: &str, h: &mut Sha256| -> Result<()> {
            let k = self.ck_key(key)?;
            let sha = {
                let mut m = hashes.0.lock().unwrap_or_else(|e| e.into_inner());
                match m.get(key) {
                    Some(x) => x.clone(),
                    None => {
                        let dir = self.pairs.dir_of(k.seed, &k.name);
                        let x = checkpoint::weights_sha256(&dir).map_err(|e| {
                            Error::file(&self.pairs.path, format!("checkpoint '{key}': {e}"))
                        })?;
                        m.insert(key.to_string(), x.clone());
                        x
                    }
                }
            };
            h.update(format!("{key} {sha}\n"));
            Ok(())
        };
        match kind {
            Kind::Checkpoint(i) => {
                let k = &self.keys[i];
                h.update(format!("checkpoint {k:?}\n{:?}\n", self.work[&k.key]));
                weights(&k.key, &mut h)?;
            }
            Kind::Run(i) => {
                let it = &self.items[i];
                let (p, set) = self.spec(it);
                let refk = self.reference(it);
                h.update(format!("run {p:?}\n{set:?}\n{it:?}\n{refk:?}\n"));
                for key in [Some(&it.a), Some(&it.b), refk.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    weights(key, &mut h)?;
                    let need = self.keys.iter().position(|k| &k.key == key);
                    if let Some(j) = need {
                        h.update(self.fingerprint(Kind::Checkpoint(j), hashes)?);
                    }
                }
            }
            Kind::Lens(i) => {
                let (c, j) = self.lenses[i];
                let r = self.runs[j];
                let p = crate::report::crosscoders::pairs_of(self.pairs)[c];
                h.update(format!("difflens {p:?} {r:?}\n"));
                weights(&Pairs::key(r, &p.a), &mut h)?;
                weights(&Pairs::key(r, &p.b), &mut h)?;
            }
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Run the selected units, in plan order, each stored in `sel.dir` once whole; a unit
    /// already stored from the same inputs is skipped. `each(unit, how)` is called after each.
    /// A unit whose needed units are not stored yet fails naming them (the scheduler orders
    /// stages; nothing here waits).
    pub fn run_units(
        &self,
        sel: &Selection,
        progress: &dyn Progress,
        each: &dyn Fn(&Unit, UnitRun),
    ) -> Result<()> {
        let kinds = self.kinds();
        let units: Vec<Unit> = kinds.iter().map(|(u, _)| u.clone()).collect();
        let chosen = units::select(&units, &sel.pick, "feedlens plan report")?;
        let hashes = Hashes::default();
        for i in chosen {
            let (u, kind) = &kinds[i];
            let fp = self.fingerprint(*kind, &hashes)?;
            let file = Self::unit_file(sel.dir, &u.name);
            if self.finished(&file, u, &fp, sel.force)? {
                each(u, UnitRun::Finished);
                continue;
            }
            let t0 = std::time::Instant::now();
            let bytes = match *kind {
                Kind::Checkpoint(k) => self.encode(u, &fp, self.run_checkpoint(k, progress)?)?,
                Kind::Run(k) => {
                    let r = self.run_pair(k, sel.dir, &kinds, &hashes, progress)?;
                    self.encode(u, &fp, r)?
                }
                Kind::Lens(k) => self.encode(u, &fp, self.run_lens(k)?)?,
            };
            match fsio::write_file(&file, &bytes, file.exists()) {
                Ok(()) => {}
                // Another process stored the same unit meanwhile: fine if from these inputs.
                Err(e) if file.exists() => {
                    if !self.finished(&file, u, &fp, false).unwrap_or(false) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            each(u, UnitRun::Done(t0.elapsed().as_secs_f64()));
        }
        Ok(())
    }

    fn encode<T: Serialize>(&self, u: &Unit, fp: &str, value: T) -> Result<Vec<u8>> {
        wire::encode(&Stored {
            unit: u.name.clone(),
            fingerprint: fp.to_string(),
            value,
        })
    }

    /// Whether `file` holds unit `u` from inputs `fp`. A file of another unit, from other
    /// inputs, or unreadable is refused unless `force` (then it is redone).
    fn finished(&self, file: &Path, u: &Unit, fp: &str, force: bool) -> Result<bool> {
        if !file.exists() {
            return Ok(false);
        }
        let why = match read_head(file) {
            Ok(h) if h.unit == u.name && h.fingerprint == fp => return Ok(true),
            Ok(h) if h.unit != u.name => format!("holds unit '{}', not '{}'", h.unit, u.name),
            Ok(_) => format!(
                "unit '{}' was stored from other inputs (another feedlens version, settings, pairs file or checkpoint)",
                u.name
            ),
            Err(e) => format!("unreadable ({e})"),
        };
        if force {
            return Ok(false);
        }
        Err(Error::file(file, format!("{why}; --force redoes it")))
    }

    /// Checkpoint `k`'s analyses.
    fn run_checkpoint(&self, k: usize, progress: &dyn Progress) -> Result<CheckpointData> {
        let key = &self.keys[k];
        let (ck, w) = self.load(key)?;
        check_memory(std::iter::once(ck.model.config()), self.s)?;
        let cks = BTreeMap::from([(key.key.clone(), ck)]);
        let worlds = BTreeMap::from([(key.key.clone(), w)]);
        let (mut data, _) = self.checkpoints(&[k], &cks, &worlds, progress)?;
        data.remove(&key.key)
            .ok_or_else(|| Error::input(format!("internal: no data for {}", key.key)))
    }

    /// Run `items[k]`: its checkpoints loaded, their probe runs redone (the same values as
    /// their checkpoint units', which do not store activations), their behaviour read from
    /// their checkpoint units.
    fn run_pair(
        &self,
        k: usize,
        dir: &Path,
        kinds: &[(Unit, Kind)],
        hashes: &Hashes,
        progress: &dyn Progress,
    ) -> Result<PairRun> {
        let it = &self.items[k];
        let refk = self.reference(it);
        let mut data: BTreeMap<String, CheckpointData> = BTreeMap::new();
        for key in [Some(&it.a), Some(&it.b), refk.as_ref()]
            .into_iter()
            .flatten()
        {
            let j = self
                .keys
                .iter()
                .position(|c| &c.key == key)
                .ok_or_else(|| Error::input(format!("internal: checkpoint {key} not planned")))?;
            let (u, _) = kinds
                .iter()
                .find(|(_, kd)| matches!(kd, Kind::Checkpoint(x) if *x == j))
                .ok_or_else(|| Error::input(format!("internal: no unit for {key}")))?;
            let fp = self.fingerprint(Kind::Checkpoint(j), hashes)?;
            let file = Self::unit_file(dir, &u.name);
            let d: CheckpointData = read_unit(&file, u, &fp).map_err(|e| {
                let run = &kinds
                    .iter()
                    .find(|(_, kd)| matches!(kd, Kind::Run(x) if *x == k));
                let who = run.map(|(r, _)| r.name.as_str()).unwrap_or("run");
                Error::input(format!("unit '{who}' needs unit '{}': {e}", u.name))
            })?;
            data.insert(key.clone(), d);
        }
        let mut cks: BTreeMap<String, Checkpoint> = BTreeMap::new();
        for key in [&it.a, &it.b] {
            let (ck, _) = self.load(self.ck_key(key)?)?;
            cks.insert(key.clone(), ck);
        }
        check_memory(cks.values().map(|c| c.model.config()), self.s)?;
        self.check_shapes(it, &cks)?;
        let (p, _) = self.spec(it);
        let label = Label::for_pair(p.contrast, p.metric);
        let sides = [it.a.clone(), it.b.clone()];
        let runs = pool::par_map(self.s.jobs, &sides, |key| {
            run_probe(&cks[key], label, label.decision_position(), self.s)
        })?;
        let probe_runs: ProbeRuns = sides.into_iter().map(|k| (k, label)).zip(runs).collect();
        let mut out = self.pair_runs(&[k], &cks, &data, &probe_runs, progress)?;
        out.pop()
            .ok_or_else(|| Error::input("internal: no pair run".to_string()))
    }

    /// Difference lens `lenses[k]` (None when its crosscoder run is not used).
    fn run_lens(&self, k: usize) -> Result<Option<DiffLens>> {
        let crosscoders = crate::report::crosscoders::load(self.pairs)?;
        let (c, j) = self.lenses[k];
        let (r, used) = (self.runs[j], crosscoders[c].runs[j].unused.is_none());
        let mut cks: BTreeMap<String, Checkpoint> = BTreeMap::new();
        if used {
            let p = crate::report::crosscoders::pairs_of(self.pairs)[c];
            for name in [&p.a, &p.b] {
                let key = Pairs::key(r, name);
                let (ck, _) = self.load(self.ck_key(&key)?)?;
                cks.insert(key, ck);
            }
        }
        let mut out = self.difflenses(&[k], &crosscoders, |key| cks.get(key).map(|c| &c.model))?;
        Ok(out.pop().flatten())
    }

    /// The report from the units stored in `dir`: every unit must be there from these inputs,
    /// else nothing is written and the error names the missing ones.
    pub fn merge_units(&self, dir: &Path) -> Result<ReportData> {
        let kinds = self.kinds();
        let hashes = Hashes::default();
        let fps = pool::par_map(self.s.jobs, &kinds, |(_, kind)| {
            self.fingerprint(*kind, &hashes)
        })?;
        // Each file read once: checked here, decoded below.
        let mut missing: Vec<String> = Vec::new();
        let mut stored: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for ((u, _), fp) in kinds.iter().zip(&fps) {
            let file = Self::unit_file(dir, &u.name);
            let read = fsio::read_at_most(&file, fsio::MAX_READ);
            match read.and_then(|b| Ok((wire::decode::<Head>(&b, &file)?, b))) {
                Ok((h, b)) if h.unit == u.name && &h.fingerprint == fp => stored.push((file, b)),
                Ok(_) => missing.push(format!("{} (stored from other inputs)", u.name)),
                Err(_) if !file.exists() => missing.push(u.name.clone()),
                Err(_) => missing.push(format!("{} (unreadable)", u.name)),
            }
        }
        if !missing.is_empty() {
            let n = missing.len();
            let shown: Vec<&str> = missing.iter().take(6).map(String::as_str).collect();
            let more = if n > shown.len() { ", …" } else { "" };
            return Err(Error::file(
                dir,
                format!(
                    "{n} of {} units not finished: {}{more} (run them first: feedlens plan report lists them)",
                    kinds.len(),
                    shown.join(", ")
                ),
            ));
        }
        let mut data: BTreeMap<String, CheckpointData> = BTreeMap::new();
        let mut runs: Vec<PairRun> = Vec::new();
        let mut lenses: Vec<Option<DiffLens>> = Vec::new();
        for ((_, kind), (file, b)) in kinds.iter().zip(&stored) {
            match *kind {
                Kind::Checkpoint(i) => {
                    data.insert(self.keys[i].key.clone(), value(b, file)?);
                }
                Kind::Run(_) => runs.push(value(b, file)?),
                Kind::Lens(_) => lenses.push(value(b, file)?),
            }
        }
        let manifests = self
            .keys
            .iter()
            .map(|k: &CkKey| {
                let m = checkpoint::read_manifest(&self.pairs.dir_of(k.seed, &k.name))?;
                Ok((k.key.clone(), m))
            })
            .collect::<Result<_>>()?;
        self.merge(data, runs, lenses, &manifests)
    }
}

/// The header of unit file `file`.
fn read_head(file: &Path) -> Result<Head> {
    let bytes = fsio::read_at_most(file, fsio::MAX_READ)?;
    wire::decode(&bytes, file)
}

/// The value in unit file bytes `b` (read from `file`).
fn value<T: DeserializeOwned>(b: &[u8], file: &Path) -> Result<T> {
    Ok(wire::decode::<Stored<T>>(b, file)?.value)
}

/// The value of unit `u` stored in `file` from inputs `fp`.
fn read_unit<T: DeserializeOwned>(file: &Path, u: &Unit, fp: &str) -> Result<T> {
    if !file.exists() {
        return Err(Error::file(file, "not there yet (run that unit first)"));
    }
    let bytes = fsio::read_at_most(file, fsio::MAX_READ)?;
    let s: Stored<T> = wire::decode(&bytes, file)?;
    if s.unit != u.name || s.fingerprint != fp {
        return Err(Error::file(
            file,
            format!("stored from other inputs than unit '{}' now has", u.name),
        ));
    }
    Ok(s.value)
}
