//! Work units: a long command's work as a list of named units in stages (a unit needs only
//! units of earlier stages), and the share of them one process runs (`--unit K`, `--shard I/N`,
//! `--stage S`), for job arrays on a cluster. Owns the selection and its errors; what a unit
//! does is its command's. Must not know any command.

use crate::{Error, Result};
use std::fmt::Write as _;

/// One unit of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Stage: a unit needs only units of earlier stages.
    pub stage: usize,
    /// Its name (`seed-0/rlhf`, `run optout seed-0`, ...).
    pub name: String,
    /// The units it needs finished first, by name.
    pub needs: Vec<String>,
}

/// Which of a plan's units one process runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pick {
    /// Only this stage's units (and `unit`/`shard` count within it).
    pub stage: Option<usize>,
    /// All of them, one, or a shard.
    pub which: Which,
}

/// One unit or a shard of the (stage's) units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Which {
    /// Every unit.
    #[default]
    All,
    /// Unit K (0-based, as `feedlens plan` lists them).
    Unit(usize),
    /// Shard I of N: units K with K mod N = I (0-based), so every shard gets a mix of long
    /// and short units.
    Shard(usize, usize),
}

impl Pick {
    /// Whether this runs units rather than the whole command.
    pub fn is_partial(&self) -> bool {
        self.stage.is_some() || self.which != Which::All
    }
}

/// Parse `--shard I/N`: 0 ≤ I < N.
pub fn parse_shard(s: &str) -> Result<Which> {
    let bad = |why: &str| Error::input(format!("--shard {s}: {why}"));
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| bad("expected I/N, e.g. 0/4 (shard I of N, counted from 0)"))?;
    let num = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| bad(&format!("'{t}' is not a whole number ≥ 0")))
    };
    let (i, n) = (num(i)?, num(n)?);
    if n == 0 {
        return Err(bad("the shard count N must be at least 1"));
    }
    if i >= n {
        return Err(bad(&format!(
            "the shard index I must be below the count N (shards are 0..={})",
            n - 1
        )));
    }
    Ok(Which::Shard(i, n))
}

/// The stages of `units` (1 + the largest stage; 0 for none).
pub fn stages(units: &[Unit]) -> usize {
    units.iter().map(|u| u.stage + 1).max().unwrap_or(0)
}

/// The indices of the units `pick` selects, in plan order; `verb` names the plan command in
/// errors (`feedlens plan zoo ...`).
pub fn select(units: &[Unit], pick: &Pick, verb: &str) -> Result<Vec<usize>> {
    let pool: Vec<usize> = match pick.stage {
        None => (0..units.len()).collect(),
        Some(s) => {
            let n = stages(units);
            if s >= n {
                input_err!(
                    "--stage {s}: no such stage (this plan has stages 0..={}; see {verb})",
                    n.saturating_sub(1)
                );
            }
            (0..units.len()).filter(|&i| units[i].stage == s).collect()
        }
    };
    let within = match pick.stage {
        Some(s) => format!("stage {s} has"),
        None => "the plan has".to_string(),
    };
    match pick.which {
        Which::All => Ok(pool),
        Which::Unit(k) => match pool.get(k) {
            Some(&i) => Ok(vec![i]),
            None => input_err!(
                "--unit {k}: out of range ({within} {} unit{}{}; see {verb})",
                pool.len(),
                if pool.len() == 1 { "" } else { "s" },
                match pool.len() {
                    0 => String::new(),
                    n => format!(", 0..={}", n - 1),
                }
            ),
        },
        Which::Shard(i, n) => Ok(pool
            .iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, &u)| u)
            .collect()),
    }
}

/// The plan as `feedlens plan` prints it: one line per unit that `pick` selects,
/// `K<TAB>stage<TAB>name<TAB>needs` (K counted within the stage when `pick` names one, as
/// `--unit` counts; needs comma-separated or `-`).
pub fn listing(units: &[Unit], pick: &Pick, verb: &str) -> Result<String> {
    let chosen = select(units, pick, verb)?;
    let mut out = String::new();
    for i in chosen {
        let u = &units[i];
        let k = match pick.stage {
            Some(s) => units[..i].iter().filter(|x| x.stage == s).count(),
            None => i,
        };
        let needs = if u.needs.is_empty() {
            "-".to_string()
        } else {
            u.needs.join(",")
        };
        let _ = writeln!(out, "{k}\t{}\t{}\t{needs}", u.stage, u.name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Vec<Unit> {
        let u = |stage, name: &str| Unit {
            stage,
            name: name.into(),
            needs: vec![],
        };
        vec![
            u(0, "a"),
            u(0, "b"),
            u(1, "c"),
            u(1, "d"),
            u(1, "e"),
            u(2, "f"),
        ]
    }

    #[test]
    fn units_shards_and_stages() {
        let p = plan();
        let pick = |stage, which| Pick { stage, which };
        let sel = |x: Pick| select(&p, &x, "plan").unwrap();
        assert_eq!(sel(pick(None, Which::All)), [0, 1, 2, 3, 4, 5]);
        assert_eq!(sel(pick(None, Which::Unit(4))), [4]);
        assert_eq!(sel(pick(Some(1), Which::Unit(1))), [3]);
        assert_eq!(sel(pick(Some(1), Which::All)), [2, 3, 4]);
        assert_eq!(sel(pick(None, Which::Shard(1, 4))), [1, 5]);
        assert_eq!(sel(pick(Some(1), Which::Shard(0, 2))), [2, 4]);
        // Every unit in exactly one shard.
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| sel(pick(None, Which::Shard(i, 3))))
            .collect();
        all.sort();
        assert_eq!(all, [0, 1, 2, 3, 4, 5]);
        assert!(pick(None, Which::Shard(0, 1)).is_partial());
        assert!(!Pick::default().is_partial());
        assert_eq!(parse_shard("2/3").unwrap(), Which::Shard(2, 3));
        for (bad, why) in [
            (
                "3/2",
                "--shard 3/2: the shard index I must be below the count N",
            ),
            ("2/2", "--shard 2/2: the shard index I must be below"),
            ("0/0", "--shard 0/0: the shard count N must be at least 1"),
            ("1", "--shard 1: expected I/N"),
            ("a/2", "--shard a/2: 'a' is not a whole number"),
            ("-1/2", "--shard -1/2: '-1' is not"),
        ] {
            let e = parse_shard(bad).unwrap_err().to_string();
            assert!(e.starts_with(why), "{bad}: {e}");
        }
        for (x, why) in [
            (
                pick(None, Which::Unit(6)),
                "--unit 6: out of range (the plan has 6 units, 0..=5; see plan)",
            ),
            (
                pick(Some(2), Which::Unit(1)),
                "--unit 1: out of range (stage 2 has 1 unit, 0..=0",
            ),
            (
                pick(Some(3), Which::All),
                "--stage 3: no such stage (this plan has stages 0..=2",
            ),
        ] {
            let e = select(&p, &x, "plan").unwrap_err().to_string();
            assert!(e.starts_with(why), "{e}");
        }
        let list = |x: Pick| listing(&p, &x, "plan").unwrap();
        assert_eq!(list(pick(Some(0), Which::All)), "0\t0\ta\t-\n1\t0\tb\t-\n");
        assert_eq!(list(pick(Some(2), Which::All)), "0\t2\tf\t-\n");
        assert_eq!(list(pick(Some(1), Which::Shard(1, 2))), "1\t1\td\t-\n");
        assert_eq!(list(pick(None, Which::Unit(3))), "3\t1\td\t-\n");
    }
}
