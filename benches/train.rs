//! Training-step benchmarks at the zoo's size (4 layers × 64, 18-token sequences) on the
//! training engine: one pretraining step at batch 64 (forward, backward, AdamW), the rollout of
//! an RLHF step (128 sampled completions, key/value-cached) on the engine and, for comparison,
//! on the candle model that analyses sample with. Thread counts come from RAYON_NUM_THREADS
//! (state it with the numbers).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use feedlens::lab::sample::{generate, Decode};
use feedlens::lab::train::{Hyper, Size, Trainer};
use feedlens::lab::world::{corpus_episode, PromptDist, WorldConfig};
use feedlens::model::engine::gemm::{gemm, Mat};
use feedlens::Model;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn bench(c: &mut Criterion) {
    let world = WorldConfig::default();
    let model = Model::init(Size::default().config(&world), 0).unwrap();
    let hyper = Hyper::default_for(feedlens::io::checkpoint::RecipeKind::Pretrain, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let seqs: Vec<_> = (0..64)
        .map(|_| corpus_episode(&world, &mut rng).ids())
        .collect();
    let mut tr = Trainer::new(&model, &hyper).unwrap();
    let mut step = 0;
    c.bench_function("pretrain step (batch 64)", |b| {
        b.iter(|| {
            tr.lm_step(step, &seqs).unwrap();
            step += 1;
        })
    });
    let prompts = PromptDist::corpus(&world).sample_n(&mut rng, 128);
    c.bench_function("rollout: sample 128 completions (engine)", |b| {
        b.iter(|| tr.generate(&prompts, Decode::T1, &mut rng).unwrap())
    });
    c.bench_function("rollout: sample 128 completions (candle model)", |b| {
        b.iter(|| generate(&model, &prompts, Decode::T1, &mut rng).unwrap())
    });
}

/// The engine's products at the shapes of a training micro-batch (136 rows) against candle's
/// matmul (the `gemm` crate) on the same operands, one thread: throughput in elements/s is
/// FLOP/s (2·m·n·k per product).
fn products(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    for (m, n, k, name) in [
        (136, 192, 64, "q|k|v"),
        (136, 256, 64, "mlp in"),
        (136, 64, 256, "mlp out"),
        (256, 64, 136, "mlp out weight grad (Aᵀ)"),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 / 17.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let transposed = name.ends_with("(Aᵀ)");
        g.bench_function(format!("engine {m}x{n}x{k} {name}"), |bch| {
            let av = if transposed {
                Mat::t(&a, m)
            } else {
                Mat::rows(&a, k)
            };
            bch.iter(|| gemm(m, n, k, av, &b, n, &mut out, n, false))
        });
        let ta = if transposed {
            Tensor::from_slice(&a, (k, m), &Device::Cpu)
                .unwrap()
                .t()
                .unwrap()
        } else {
            Tensor::from_slice(&a, (m, k), &Device::Cpu).unwrap()
        };
        let tb = Tensor::from_slice(&b, (k, n), &Device::Cpu).unwrap();
        g.bench_function(format!("candle {m}x{n}x{k} {name}"), |bch| {
            bch.iter(|| ta.matmul(&tb).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench, products
}
criterion_main!(benches);
