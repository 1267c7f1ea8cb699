//! Forward-pass throughput: the gpt2-tiny fixture and a zoo-sized model, batch 1 and 32.
//! Threads: candle/rayon defaults (all cores) unless RAYON_NUM_THREADS is set; state it when
//! quoting numbers.

use criterion::{criterion_group, criterion_main, Criterion};
use feedlens::io::checkpoint;
use feedlens::{Config, Input, Model, Run};
use std::hint::black_box;

fn bench_model(c: &mut Criterion, name: &str, model: &Model, seq: usize) {
    let vocab = model.config().vocab_size as u32;
    for batch in [1usize, 32] {
        let rows: Vec<Vec<u32>> = (0..batch)
            .map(|b| {
                (0..seq)
                    .map(|i| (i as u32 * 7 + b as u32) % vocab)
                    .collect()
            })
            .collect();
        let ids = model.ids_tensor(&rows).expect("ids");
        c.bench_function(&format!("forward/{name}/batch{batch}"), |bch| {
            bch.iter(|| {
                black_box(
                    model
                        .forward(&Input::Ids(ids.clone()), &Run::default())
                        .expect("forward"),
                )
            })
        });
    }
}

fn forward(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2-tiny");
    let tiny = checkpoint::load(dir).expect("fixture");
    bench_model(c, "gpt2-tiny(3x48,seq12)", &tiny.model, 12);
    // The zoo's default size (docs/DESIGN.md §4): 4 layers × 64 wide, 18-token episodes.
    let zoo = Model::init(Config::new(4, 64, 4, 32, 32), 0).expect("init");
    bench_model(c, "zoo(4x64,seq18)", &zoo, 18);
}

criterion_group!(benches, forward);
criterion_main!(benches);
