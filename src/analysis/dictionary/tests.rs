//! Dictionaries on synthetic activations whose true directions are known.

use super::readings::{self, LatentClass};
use super::train::{self, Sparsity, TrainConfig};
use ndarray::{Array1, Array2, ArrayView1};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// `n` random unit directions in `d` dimensions.
fn directions(n: usize, d: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut w = Array2::from_shape_simple_fn((n, d), || normal.sample(rng));
    for mut r in w.rows_mut() {
        let nrm = r.dot(&r).sqrt();
        r /= nrm;
    }
    w
}

/// Tokens each a sum of `active` distinct directions of `dirs` with magnitudes in [1, 2].
fn sparse_data(dirs: &Array2<f32>, n: usize, active: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let mut x = Array2::<f32>::zeros((n, dirs.ncols()));
    for mut row in x.rows_mut() {
        let mut used = Vec::new();
        while used.len() < active {
            let j = rng.random_range(0..dirs.nrows());
            if !used.contains(&j) {
                used.push(j);
                row.scaled_add(rng.random_range(1.0..2.0f32), &dirs.row(j));
            }
        }
    }
    x
}

fn cosine(a: ArrayView1<f32>, b: ArrayView1<f32>) -> f32 {
    a.dot(&b) / (a.dot(&a).sqrt() * b.dot(&b).sqrt()).max(1e-12)
}

/// The best cosine of `f` with any decoder row of model `m`, and that latent.
fn best_match(dict: &super::Dictionary, m: usize, f: ArrayView1<f32>) -> (f32, usize) {
    (0..dict.d_sae())
        .map(|j| (cosine(dict.decoder(j, m), f), j))
        .fold((f32::MIN, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// More known directions than dimensions (40 in 32: superposition), two active per token: a
/// BatchTopK SAE of 64 latents at k = 2 finds every one (cosine ≥ 0.95), for several data seeds.
#[test]
fn sae_recovers_known_sparse_directions() {
    for data_seed in [5, 6, 12] {
        let mut rng = ChaCha8Rng::seed_from_u64(data_seed);
        let dirs = directions(40, 32, &mut rng);
        let x = sparse_data(&dirs, 16384, 2, &mut rng);
        let mut cfg = TrainConfig::batch_topk(64, 2, 3000, 1);
        cfg.batch = 256;
        let (sae, stats) = train::train(&[x.view()], &cfg).unwrap();
        for (i, f) in dirs.rows().into_iter().enumerate() {
            let (c, _) = best_match(&sae, 0, f);
            assert!(
                c >= 0.95,
                "data seed {data_seed}, direction {i}: best cosine {c}; {stats:?}"
            );
        }
        assert!(stats.explained_variance[0] > 0.9, "{stats:?}");
        assert!((stats.l0 - 2.0).abs() < 0.5, "{stats:?}");
        // Unit-norm decoder rows (the norm is folded into the encoder).
        for r in sae.w_dec.rows() {
            assert!((r.dot(&r).sqrt() - 1.0).abs() < 1e-4);
        }
    }
}

#[test]
fn training_is_deterministic_in_its_seed() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let dirs = directions(8, 6, &mut rng);
    let x = sparse_data(&dirs, 2048, 1, &mut rng);
    let cfg = TrainConfig::batch_topk(12, 1, 200, 9);
    let (a, _) = train::train(&[x.view()], &cfg).unwrap();
    let (b, _) = train::train(&[x.view()], &cfg).unwrap();
    assert_eq!(a, b);
    let (c, _) = train::train(&[x.view()], &TrainConfig { seed: 10, ..cfg }).unwrap();
    assert_ne!(a, c);
}

/// A crosscoder on a model paired with itself has no model-specific latent.
#[test]
fn crosscoder_on_a_model_and_itself_finds_nothing_specific() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let dirs = directions(24, 16, &mut rng);
    let x = sparse_data(&dirs, 16384, 2, &mut rng);
    let mut cfg = TrainConfig::batch_topk(48, 2, 3000, 2);
    cfg.batch = 256;
    let (cc, _) = train::train(&[x.view(), x.view()], &cfg).unwrap();
    let r = readings::read(&cc, x.view(), x.view()).unwrap();
    for j in 0..cc.d_sae() {
        if r.fired[j] > 0 {
            assert!(
                !r.class[j].one_model(),
                "latent {j}: {}",
                r.relative_norm[j]
            );
        }
    }
}

/// B is A plus one planted direction on a known tenth of the tokens: the crosscoder's only
/// B-only latent is that direction, and it detects those tokens.
#[test]
fn crosscoder_finds_a_planted_b_only_direction() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let dirs = directions(25, 16, &mut rng);
    let shared = dirs.slice(ndarray::s![..24, ..]).to_owned();
    let planted = dirs.row(24).to_owned();
    let a = sparse_data(&shared, 16384, 2, &mut rng);
    let on: Vec<bool> = (0..a.nrows()).map(|_| rng.random_bool(0.1)).collect();
    let mut b = a.clone();
    for (t, mut row) in b.rows_mut().into_iter().enumerate() {
        if on[t] {
            row.scaled_add(rng.random_range(1.0..2.0f32), &planted);
        }
    }
    let mut cfg = TrainConfig::batch_topk(48, 3, 3000, 3);
    cfg.batch = 256;
    let (cc, _) = train::train(&[a.view(), b.view()], &cfg).unwrap();
    let r = readings::read(&cc, a.view(), b.view()).unwrap();
    let b_only: Vec<usize> = (0..cc.d_sae())
        .filter(|&j| r.fired[j] > 0 && r.class[j] == LatentClass::BOnly)
        .collect();
    assert_eq!(
        b_only.len(),
        1,
        "B-only latents {b_only:?}: {:?}",
        r.relative_norm
    );
    let j = b_only[0];
    let c = cosine(cc.decoder(j, 1), planted.view());
    assert!(c >= 0.9, "cosine {c}");
    assert!(!r.artefact[j], "nu {:?} {:?}", r.nu_error[j], r.nu_recon[j]);
    let z = cc.encode_all(super::concat(&[a.view(), b.view()]).unwrap().view());
    let act: Array1<f64> = z.column(j).mapv(f64::from);
    let au = crate::analysis::probes::math::auroc(act.view(), &on).unwrap();
    assert!(au >= 0.99, "AUROC {au}");
}

/// A concept both models have, A at 0.4 of B's size: an L1 crosscoder shrinks A's decoder for
/// it to nothing and calls the latent B-only; Latent Scaling sees A's error still carries it.
#[test]
fn latent_scaling_flags_an_l1_mislabelled_shared_latent() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let dirs = directions(25, 16, &mut rng);
    let shared = dirs.slice(ndarray::s![..24, ..]).to_owned();
    let concept = dirs.row(24).to_owned();
    let a0 = sparse_data(&shared, 16384, 2, &mut rng);
    let (mut a, mut b) = (a0.clone(), a0);
    for (mut ra, mut rb) in a.rows_mut().into_iter().zip(b.rows_mut()) {
        if rng.random_bool(0.1) {
            let m = rng.random_range(1.0..2.0f32);
            ra.scaled_add(0.4 * m, &concept);
            rb.scaled_add(m, &concept);
        }
    }
    let cfg = TrainConfig {
        sparsity: Sparsity::L1 { coeff: 2.0 },
        lr: 3e-3,
        batch: 256,
        aux_coeff: 0.0,
        ..TrainConfig::batch_topk(48, 1, 3000, 4)
    };
    let (cc, _) = train::train(&[a.view(), b.view()], &cfg).unwrap();
    let r = readings::read(&cc, a.view(), b.view()).unwrap();
    let (c, j) = best_match(&cc, 1, concept.view());
    assert!(c >= 0.9, "no latent for the concept: best cosine {c}");
    assert_eq!(
        r.class[j],
        LatentClass::BOnly,
        "relative norm {}, nu {:?} {:?}",
        r.relative_norm[j],
        r.nu_error[j],
        r.nu_recon[j]
    );
    assert!(
        r.artefact[j],
        "nu_error {:?} nu_recon {:?}",
        r.nu_error[j], r.nu_recon[j]
    );
}

#[test]
fn bad_settings_and_shapes_are_one_line_errors() {
    let x = Array2::<f32>::ones((4, 3));
    let e = train::train(&[x.view()], &TrainConfig::batch_topk(4, 4, 1, 0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("k 4 must be at least 1 and below the dictionary size 4"),
        "{e}"
    );
    let y = Array2::<f32>::ones((4, 5));
    let e = train::train(&[x.view(), y.view()], &TrainConfig::batch_topk(8, 2, 1, 0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model 1's activations are (4, 5) but model 0's are (4, 3)"),
        "{e}"
    );
    let mut nan = x.clone();
    nan[[1, 1]] = f32::NAN;
    let e = train::train(&[nan.view()], &TrainConfig::batch_topk(8, 2, 1, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN"), "{e}");
}
