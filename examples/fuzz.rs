//! A mutation fuzzer on stable Rust for the parsers of user inputs, for machines without
//! cargo-fuzz (`fuzz/` has the libFuzzer targets). It mutates committed seeds (bit flips, byte
//! values at the edges, insertions, deletions, duplications, splices, truncation), feeds each
//! input to a target and counts panics; it has no coverage feedback, so it explores less than
//! libFuzzer per run. Deterministic in its seed.
//!
//! `cargo run --release --example fuzz -- TARGET SECONDS [SEED]`, TARGET one of `checkpoint`
//! (`checkpoint::from_files`), `probe_spec` (`probes::Spec::parse`), `pairs`
//! (`report::Pairs::parse`), `stored_result` (`check`'s reading of a stored result and
//! weights: JSON and safetensors parsing, then `compare` and `compare_weights`). A crashing
//! input is saved under `fuzz/crashes/`; `fuzz TARGET repro FILE` runs it with the panic shown.

use feedlens::analysis::probes::{self, SpecResult};
use feedlens::io::checkpoint::{self, from_files, safetensors_bytes, Files};
use feedlens::lab::world::{tokenizer_json, WorldConfig};
use feedlens::report::Pairs;
use feedlens::Model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONFIG: &[u8] = br#"{"n_layer":1,"n_embd":4,"n_head":2,"n_positions":4,"vocab_size":5}"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_in(dir: &Path, suffix: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v.iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Feeds one input to the code under test.
type Runner = Box<dyn Fn(&[u8])>;

struct Target {
    seeds: Vec<Vec<u8>>,
    run: Runner,
}

fn target(name: &str) -> Option<Target> {
    let r = root();
    Some(match name {
        "checkpoint" => {
            let cfg = feedlens::model::family::parse_config(CONFIG).ok()?;
            let weights = safetensors_bytes(&Model::init(cfg, 0).ok()?).ok()?;
            let tok = tokenizer_json(&WorldConfig::default());
            let w = weights.clone();
            Target {
                // First byte picks which file the rest becomes (as the libFuzzer target).
                seeds: vec![
                    [&[0u8][..], &weights].concat(),
                    [&[1u8][..], CONFIG].concat(),
                    [&[3u8][..], &tok].concat(),
                    [
                        &[1u8][..],
                        &std::fs::read(r.join("checkpoints/seed-0/base/config.json")).ok()?,
                    ]
                    .concat(),
                ],
                run: Box::new(move |data: &[u8]| {
                    let Some((&sel, rest)) = data.split_first() else {
                        return;
                    };
                    let (config, weights, tokenizer) = match sel % 4 {
                        0 => (CONFIG.to_vec(), rest.to_vec(), None),
                        1 => (rest.to_vec(), w.clone(), None),
                        2 => {
                            let cut = rest.len() / 2;
                            (rest[..cut].to_vec(), rest[cut..].to_vec(), None)
                        }
                        _ => (CONFIG.to_vec(), w.clone(), Some(rest.to_vec())),
                    };
                    let files = Files {
                        config,
                        weights: weights.into(),
                        tokenizer,
                        manifest: None,
                    };
                    if let Ok(ck) = from_files(Path::new("fuzz"), files) {
                        if ck.tokens.is_some() {
                            let _ = ck.encode("Q A 1 <bos>", "--text");
                        }
                    }
                }),
            }
        }
        "probe_spec" => Target {
            seeds: [
                files_in(&r.join("fuzz/seeds/probe_spec"), ".toml"),
                files_in(&r.join("probes"), ".toml"),
            ]
            .concat(),
            run: Box::new(|data: &[u8]| {
                if let Ok(t) = std::str::from_utf8(data) {
                    let _ = probes::Spec::parse(t, Path::new("fuzz.toml"));
                }
            }),
        },
        "pairs" => Target {
            seeds: [
                files_in(&r.join("fuzz/seeds/pairs"), ".toml"),
                files_in(&r.join("checkpoints"), "pairs.toml"),
            ]
            .concat(),
            run: Box::new(|data: &[u8]| {
                if let Ok(t) = std::str::from_utf8(data) {
                    if let Ok(p) = Pairs::parse(t, Path::new("fuzz/pairs.toml")) {
                        assert!(!p.pairs.is_empty(), "a parsed pairs file has pairs");
                        let _ = p.inputs();
                    }
                }
            }),
        },
        "stored_result" => {
            let results = files_in(&r.join("probes"), ".result.json");
            let weights = files_in(&r.join("probes"), ".safetensors");
            let reference: SpecResult = serde_json::from_slice(results.first()?).ok()?;
            let ref_w = checkpoint::deserialize(weights.first()?, Path::new("w")).ok()?;
            let seeds = results
                .iter()
                .map(|b| [&[0u8][..], b].concat())
                .chain(weights.iter().map(|b| [&[1u8][..], b].concat()))
                .collect();
            Target {
                seeds,
                run: Box::new(move |data: &[u8]| {
                    let Some((&sel, rest)) = data.split_first() else {
                        return;
                    };
                    if sel % 2 == 0 {
                        if let Ok(s) = serde_json::from_slice::<SpecResult>(rest) {
                            let _ = probes::compare(&s, &reference);
                            let _ = probes::compare(&reference, &s);
                        }
                    } else if let Ok(w) = checkpoint::deserialize(rest, Path::new("w")) {
                        let _ = probes::compare_weights(&w, &ref_w, 0.02, &[]);
                    }
                }),
            }
        }
        _ => return None,
    })
}

/// Bytes at the edges of integer and character ranges.
const EDGES: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'"', b'[', b']', b'{', b'}', b'=', b'\n',
];

fn mutate(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=8) {
        let n = input.len();
        match rng.random_range(0..8) {
            0 if n > 0 => {
                let i = rng.random_range(0..n);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.random_range(0..n);
                input[i] = EDGES[rng.random_range(0..EDGES.len())];
            }
            2 => {
                let i = rng.random_range(0..=n);
                let k = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..k).map(|_| rng.random()).collect();
                input.splice(i..i, bytes);
            }
            3 if n > 0 => {
                let i = rng.random_range(0..n);
                let k = rng.random_range(1..=(n - i).min(64));
                input.drain(i..i + k);
            }
            4 if n > 0 => {
                let i = rng.random_range(0..n);
                let k = rng.random_range(1..=(n - i).min(64));
                let chunk = input[i..i + k].to_vec();
                let j = rng.random_range(0..=n);
                input.splice(j..j, chunk);
            }
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let a = rng.random_range(0..other.len());
                    let b = rng.random_range(a..=other.len().min(a + 256));
                    let j = rng.random_range(0..=n);
                    input.splice(j..j, other[a..b].iter().copied());
                }
            }
            6 if n > 0 => input.truncate(rng.random_range(0..n)),
            _ if n >= 8 => {
                // A little-endian length field (a safetensors header) set to an edge value.
                let v: u64 = [0, 1, 8, u64::MAX, 1 << 24, n as u64][rng.random_range(0..6)];
                input[..8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| feedlens::budget::proc_kb(&s, "VmHWM"))
        .map_or(0, |kb| kb / 1024)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `fuzz TARGET repro FILE`: run one saved input, panics shown.
    if let (Some(name), Some("repro"), Some(file)) =
        (args.get(1), args.get(2).map(String::as_str), args.get(3))
    {
        let t = target(name).expect("target");
        (t.run)(&std::fs::read(file).expect("input"));
        println!("no panic");
        return;
    }
    let (Some(name), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: fuzz TARGET SECONDS [SEED] (TARGET: checkpoint, probe_spec, pairs, stored_result)");
        std::process::exit(2);
    };
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0u64);
    let Some(t) = target(name) else {
        eprintln!("unknown target '{name}' (or its seeds are missing)");
        std::process::exit(2);
    };
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (t0, limit) = (Instant::now(), Duration::from_secs(secs));
    let (mut runs, mut crashes) = (0u64, 0u64);
    let crash_dir = root().join("fuzz/crashes");
    while t0.elapsed() < limit {
        let mut input = t.seeds[rng.random_range(0..t.seeds.len())].clone();
        mutate(&mut rng, &t.seeds, &mut input);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (t.run)(&input))).is_ok();
        runs += 1;
        if !ok {
            crashes += 1;
            let _ = std::fs::create_dir_all(&crash_dir);
            let _ = std::fs::write(crash_dir.join(format!("{name}-{seed}-{runs}")), &input);
        }
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{name}: {s:.0} s, {runs} runs, {:.0} exec/s, {crashes} crashes, peak rss {} MB (seed {seed})",
        runs as f64 / s,
        peak_rss_mb()
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
