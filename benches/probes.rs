//! Probing every layer of a model-sized activation set: 5 layers × d 64 × 4000 examples, binary
//! label, 5-fold CV of the logistic and mass-mean probes, control task, top PC, and (separately)
//! the 1000-random-direction null baseline. The matrix is synthetic (a planted direction plus
//! Gaussian noise) and is written to target/probe-bench.safetensors for benches/compare_sklearn.py.

use criterion::{criterion_group, criterion_main, Criterion};
use feedlens::analysis::probes::math::{self as probe_math, LayerOptions};
use feedlens::io::checkpoint::{serialize, StTensor};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 4000;
const D: usize = 64;
const LAYERS: usize = 5;

/// Layer l: x = noise + (y − 0.5)·(0.2 + 0.3 l)·u, so separability grows with depth.
fn data() -> (Vec<Array2<f32>>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let y: Vec<i64> = (0..N).map(|_| rng.random_range(0..2)).collect();
    let xs = (0..LAYERS)
        .map(|l| {
            let u: Vec<f32> = (0..D)
                .map(|_| rng.sample(rand_distr::StandardNormal))
                .collect();
            let norm = u.iter().map(|v| v * v).sum::<f32>().sqrt();
            Array2::from_shape_fn((N, D), |(i, j)| {
                let noise: f32 = rng.sample(rand_distr::StandardNormal);
                noise + (y[i] as f32 - 0.5) * (0.2 + 0.3 * l as f32) * u[j] / norm * 4.0
            })
        })
        .collect();
    (xs, y)
}

/// CPU seconds (user + system, all threads) this process has used: on a shared machine the
/// wall-clock numbers criterion prints include waiting for a core, so print this beside them.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5) (utime, stime), in clock ticks of 1/100 s on Linux.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn bench(c: &mut Criterion) {
    let (xs, y) = data();
    let tensors: Vec<(String, StTensor)> = xs
        .iter()
        .enumerate()
        .map(|(l, x)| {
            (
                format!("X.{l}"),
                StTensor::F32(vec![N, D], x.iter().copied().collect()),
            )
        })
        .chain([("y".to_string(), StTensor::I64(vec![N], y.clone()))])
        .collect();
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/probe-bench.safetensors");
    std::fs::write(&out, serialize(&tensors, None).unwrap()).unwrap();
    let enc = probe_math::encode_labels(&y, "y").unwrap();
    let folds = probe_math::stratified_folds(&enc, 5, 0).unwrap();
    // Control keys: 10 token types, like the ten digits of the toy world.
    let keys: Vec<u32> = (0..N as u32).map(|i| i % 10).collect();
    for (name, n_random, control) in [
        ("CV only", 0, false),
        ("CV + control + top PC", 0, true),
        ("CV + control + top PC + 1000 random directions", 1000, true),
    ] {
        let o = LayerOptions {
            c: 1.0,
            n_random,
            seed: 0,
            control_keys: control.then(|| keys.clone()),
        };
        let reps = 5;
        let t0 = cpu_seconds();
        for _ in 0..reps {
            for x in &xs {
                if control {
                    probe_math::probe_layer(x.view(), &enc, &folds, &o).unwrap();
                } else {
                    probe_math::cross_validate(x.view(), &enc, x.view(), &enc.idx, &folds, 1.0)
                        .unwrap();
                }
            }
        }
        eprintln!(
            "CPU time, 5 layers, {name}: {:.0} ms per run (user + system, all threads)",
            (cpu_seconds() - t0) / reps as f64 * 1e3
        );
    }
    let mut g = c.benchmark_group("probe_all_layers");
    g.sample_size(10);
    let opts = |n_random| LayerOptions {
        c: 1.0,
        n_random,
        seed: 0,
        control_keys: Some(keys.clone()),
    };
    g.bench_function("5x64x4000 logistic+mass-mean 5-fold CV", |b| {
        b.iter(|| {
            for x in &xs {
                probe_math::cross_validate(x.view(), &enc, x.view(), &enc.idx, &folds, 1.0)
                    .unwrap();
            }
        })
    });
    g.bench_function("5x64x4000 CV + control + top PC", |b| {
        let o = opts(0);
        b.iter(|| {
            for x in &xs {
                probe_math::probe_layer(x.view(), &enc, &folds, &o).unwrap();
            }
        })
    });
    g.bench_function(
        "5x64x4000 CV + control + top PC + 1000 random directions",
        |b| {
            let o = opts(1000);
            b.iter(|| {
                for x in &xs {
                    probe_math::probe_layer(x.view(), &enc, &folds, &o).unwrap();
                }
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
