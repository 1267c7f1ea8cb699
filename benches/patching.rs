//! Criterion benchmarks of the exact resid_pre patching sweep: `sweep` (for these GPT-2 models
//! the engine's resumed runs), the batched candle engine (`sweep_with`, what other families
//! run) and the naive one-forward-per-cell path, on the gpt2-tiny fixture (3 layers, d 48, 12
//! tokens) and on a zoo-sized random model (4 layers, d 64, 32 tokens). Thread counts come from
//! RAYON_NUM_THREADS / CANDLE_NUM_THREADS; state them with the numbers.

use criterion::{criterion_group, criterion_main, Criterion};
use feedlens::analysis::patching::{
    sweep, sweep_naive, sweep_with, Chunking, Direction, Metric, Pair, Setup,
};
use feedlens::analysis::site::Site;
use feedlens::io::checkpoint;
use feedlens::{Config, Model};

/// A pair of `len` tokens differing at position 3, metric at the last position.
fn setup(model: &Model, len: usize) -> Setup {
    let vocab = model.config().vocab_size as u32;
    let clean: Vec<u32> = (0..len as u32).map(|i| (i * 7 + 1) % vocab).collect();
    let mut corrupt = clean.clone();
    corrupt[3] = (corrupt[3] + 5) % vocab;
    let pair = Pair {
        clean,
        corrupt,
        metric: Metric::LogitDiff { a: 3, b: 4 },
    };
    Setup::new(model, vec![pair], None, Direction::Denoise).expect("valid setup")
}

fn bench(c: &mut Criterion) {
    let tiny = checkpoint::load("tests/fixtures/gpt2-tiny")
        .expect("fixture")
        .model;
    // Zoo shape (docs/DESIGN.md §4: 4 layers × 64 wide, vocab 32, 32 positions), random weights.
    let zoo = Model::init(Config::new(4, 64, 4, 32, 32), 0).expect("init");
    let resid = [Site::ResidPre];
    for (name, model, len) in [("fixture", &tiny, 12), ("zoo-4x64", &zoo, 32)] {
        let s = setup(model, len);
        c.bench_function(&format!("resid_pre sweep, fast, {name}"), |b| {
            b.iter(|| sweep(model, &s, &resid).expect("sweep"))
        });
        c.bench_function(&format!("resid_pre sweep, batched candle, {name}"), |b| {
            b.iter(|| sweep_with(model, &s, &resid, &Chunking::default()).expect("sweep"))
        });
        c.bench_function(&format!("resid_pre sweep, naive, {name}"), |b| {
            b.iter(|| sweep_naive(model, &s, &resid).expect("sweep"))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
