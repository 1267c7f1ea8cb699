//! Issue 18: work units. The quick zoo (two seeds) and a small report over it, run as units
//! (`--stage S --unit K`) in a random (seeded) order within each stage — one unit run twice,
//! one killed mid-run and run again — give the bytes of the single-process run; a merge with
//! units missing names them and writes nothing; bad unit arguments fail in one line.

mod common;

use common::{fails_with, feedlens_1thread, kill_after};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Every file under `dir`, by relative path (temp files of a killed run included: the run
/// after it must have removed them).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{} and {} hold different files",
        a.display(),
        b.display()
    );
    for (k, v) in &ta {
        assert!(
            v == &tb[k],
            "{k} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn ok(args: &[String]) -> String {
    let out = feedlens_1thread(args);
    assert!(
        out.status.success(),
        "feedlens {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The plan of `verb` (`zoo` or `report` with `args`): units per stage, as (stage, count).
fn stages(verb: &str, args: &[String]) -> Vec<usize> {
    let mut a = vec!["plan".to_string(), verb.to_string()];
    a.extend_from_slice(args);
    let text = ok(&a);
    let mut per: BTreeMap<usize, usize> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 4, "plan line {line:?}");
        *per.entry(f[1].parse().unwrap()).or_default() += 1;
    }
    let n: Vec<usize> = per.values().copied().collect();
    // `plan --count --stage S` agrees with the listing.
    for (s, &c) in n.iter().enumerate() {
        let mut a = vec!["plan".into(), "--count".into(), verb.to_string()];
        a.extend_from_slice(args);
        a.extend(["--stage".into(), s.to_string()]);
        assert_eq!(ok(&a).trim(), c.to_string());
    }
    n
}

/// Run every unit of `verb args`, stage by stage, in a shuffled order within each stage; one
/// unit is run twice (the second time a no-op), one is killed after a random moment and run
/// again.
fn run_units_shuffled(verb: &str, args: &[String], seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let per_stage = stages(verb, args);
    let total: usize = per_stage.iter().sum();
    let (twice, killed) = (rng.random_range(0..total), rng.random_range(0..total));
    let mut i = 0;
    for (stage, &n) in per_stage.iter().enumerate() {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for k in order {
            let mut a = vec![verb.to_string()];
            a.extend_from_slice(args);
            a.extend([
                "--stage".into(),
                stage.to_string(),
                "--unit".into(),
                k.to_string(),
            ]);
            if i == killed {
                kill_after(&a, Duration::from_millis(rng.random_range(5..60)));
            }
            let out = ok(&a);
            assert!(out.contains("unit "), "{a:?}: {out}");
            if i == twice {
                let again = ok(&a);
                assert!(again.contains("already finished"), "{a:?} again: {again}");
            }
            i += 1;
        }
    }
}

fn quick_zoo_args(out: &Path) -> Vec<String> {
    ["--quick", "--seeds", "0,1", "--out"]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
}

#[test]
fn zoo_units_in_any_order_equal_one_process() {
    let d = tempfile::tempdir().unwrap();
    let (one, units) = (d.path().join("one"), d.path().join("units"));
    let mut a = vec!["zoo".to_string()];
    a.extend(quick_zoo_args(&one));
    ok(&a);
    run_units_shuffled("zoo", &quick_zoo_args(&units), 18);
    assert_same_tree(&one, &units);
    // A child before its parent: one line naming the parent.
    let lone = d.path().join("lone");
    let mut a = vec!["zoo".to_string()];
    a.extend(quick_zoo_args(&lone));
    a.extend(["--stage", "1", "--unit", "0"].map(String::from));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    fails_with(&a, "needs unit 'seed-0/base', which is not finished yet");
}

/// A quick zoo with the committed pairs file over its two seeds; the report arguments.
fn small_report(d: &Path) -> Vec<String> {
    let zoo = d.join("zoo");
    let mut a = vec!["zoo".to_string()];
    a.extend(quick_zoo_args(&zoo));
    ok(&a);
    let pairs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/pairs.toml"),
    )
    .unwrap()
    .replace("seeds = [0, 1, 2]", "seeds = [0, 1]");
    assert!(pairs.contains("seeds = [0, 1]\n"));
    std::fs::write(zoo.join("pairs.toml"), pairs).unwrap();
    vec![
        "--pairs".into(),
        zoo.join("pairs.toml").display().to_string(),
        "--n".into(),
        "48".into(),
    ]
}

#[test]
fn report_units_in_any_order_merge_to_one_process_bytes() {
    let d = tempfile::tempdir().unwrap();
    let base = small_report(d.path());
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a = base.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let one = d.path().join("one");
    let merged = d.path().join("merged");
    let units = d.path().join("units");
    let mut a = vec!["report".to_string()];
    a.extend(with(&["--out", one.to_str().unwrap()]));
    ok(&a);
    let unit_args = with(&[
        "--out",
        merged.to_str().unwrap(),
        "--units-dir",
        units.to_str().unwrap(),
    ]);
    // Stage 0 only: the merge names what is missing and writes nothing.
    let mut a = vec!["report".to_string()];
    a.extend(unit_args.clone());
    a.extend(["--stage", "0"].map(String::from));
    ok(&a);
    let mut m = vec!["report".to_string()];
    m.extend(unit_args.clone());
    m.push("--merge".into());
    let mr: Vec<&str> = m.iter().map(String::as_str).collect();
    fails_with(&mr, "units not finished: run optout seed-0");
    assert!(
        !merged.exists(),
        "a refused merge wrote {}",
        merged.display()
    );
    std::fs::remove_dir_all(&units).unwrap();
    run_units_shuffled("report", &unit_args, 7);
    ok(&m);
    assert_same_tree(&one, &merged);
    // What the killed unit left is gone: one file per unit, nothing else.
    let left: Vec<String> = tree(&units).into_keys().collect();
    assert!(
        left.iter()
            .all(|n| n.ends_with(".cbor") && !n.starts_with('.')),
        "{left:?}"
    );
    assert_eq!(
        left.len(),
        stages("report", &unit_args).iter().sum::<usize>()
    );
    // The units stay usable: a unit from other settings is refused, not silently merged.
    let mut a = vec!["report".to_string()];
    a.extend(
        unit_args
            .iter()
            .map(|s| if s == "48" { "40".into() } else { s.clone() }),
    );
    a.extend(["--unit", "0"].map(String::from));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    fails_with(&a, "was stored from other inputs");
}

#[test]
fn bad_unit_arguments_fail_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("z");
    let z = out.to_str().unwrap();
    let zoo = ["zoo", "--quick", "--seeds", "0,1", "--out", z];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        zoo.iter().copied().chain(extra.iter().copied()).collect()
    };
    fails_with(
        &with(&["--shard", "3/2"]),
        "--shard 3/2: the shard index I must be below the count N",
    );
    fails_with(
        &with(&["--shard", "0/0"]),
        "--shard 0/0: the shard count N must be at least 1",
    );
    fails_with(&with(&["--shard", "x"]), "--shard x: expected I/N");
    fails_with(
        &with(&["--unit", "30"]),
        "--unit 30: out of range (the plan has 30 units, 0..=29",
    );
    fails_with(
        &with(&["--stage", "2", "--unit", "6"]),
        "--unit 6: out of range (stage 2 has 6 units",
    );
    fails_with(&with(&["--stage", "3"]), "--stage 3: no such stage");
    fails_with(
        &with(&["--only", "base", "--unit", "0"]),
        "--only: not with --unit",
    );
    assert!(!out.exists(), "a refused unit run wrote {z}");
    let rep = [
        "report",
        "--pairs",
        "checkpoints/pairs.toml",
        "--out",
        z,
        "--units-dir",
        z,
    ];
    let rwith = |extra: &[&'static str]| -> Vec<&str> {
        rep.iter().copied().chain(extra.iter().copied()).collect()
    };
    fails_with(
        &rwith(&["--shard", "3/2"]),
        "--shard 3/2: the shard index I must be below",
    );
    fails_with(
        &rwith(&["--unit", "100000"]),
        "--unit 100000: out of range (the plan has",
    );
    fails_with(
        &rwith(&["--merge"]),
        "units not finished: checkpoint seed-0/rlhf",
    );
    assert!(!out.exists(), "a refused report run wrote {z}");
    let plan = feedlens_1thread(&["plan", "report", "--pairs", "checkpoints/pairs.toml"]);
    assert!(plan.status.success());
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.starts_with("0\t0\tcheckpoint seed-0/rlhf\t-\n"),
        "{text}"
    );
    assert!(text.contains("\t1\trun optout seed-2\tcheckpoint seed-2/rlhf,checkpoint seed-2/rlhf-optout,checkpoint seed-2/base\n"), "{text}");
}
