//! Training-step benchmarks at the zoo's size (4 layers × 64, batch 64, 18-token sequences):
//! one pretraining step (forward + backward + AdamW) and the rollout of an RLHF step (128
//! sampled completions). Thread counts come from RAYON_NUM_THREADS (state it with the numbers).

use criterion::{criterion_group, criterion_main, Criterion};
use feedlens::lab::sample::{generate, Decode};
use feedlens::lab::train::{lm_loss, Hyper, Size, Trainer};
use feedlens::lab::world::{corpus_episode, PromptDist, WorldConfig};
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
            let loss = lm_loss(tr.model(), &seqs).unwrap();
            tr.step(step, &loss).unwrap();
            step += 1;
        })
    });
    let prompts = PromptDist::corpus(&world).sample_n(&mut rng, 128);
    c.bench_function("rollout: sample 128 completions", |b| {
        b.iter(|| generate(&model, &prompts, Decode::T1, &mut rng).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
