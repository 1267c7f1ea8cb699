//! The bootstrap intervals: against a closed form (a binomial proportion's Wilson interval at
//! large n) and against a brute-force resample drawn with the same random stream.

use feedlens::stats::{self, bootstrap, mean_est, percentile_95, wilson, BOOTSTRAP};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn bootstrap_of_a_proportion_matches_wilson_at_large_n() {
    for (n, k) in [(20_000usize, 6_000usize), (5_000, 4_950), (10_000, 500)] {
        let x: Vec<f64> = (0..n).map(|i| (i < k) as u8 as f64).collect();
        let e = mean_est(&x, 2000, 11);
        let (lo, hi) = wilson(k, n);
        assert!((e.value - k as f64 / n as f64).abs() < 1e-12);
        // The percentile bootstrap and Wilson agree to a small fraction of the width.
        let width = hi - lo;
        assert!(
            (e.lo - lo).abs() < 0.06 * width,
            "n {n} k {k}: lo {} vs {lo}",
            e.lo
        );
        assert!(
            (e.hi - hi).abs() < 0.06 * width,
            "n {n} k {k}: hi {} vs {hi}",
            e.hi
        );
        assert_eq!(e.n, n);
    }
}

#[test]
fn bootstrap_equals_a_brute_force_resample() {
    let mut g = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f64> = (0..300).map(|_| g.random::<f64>() * 4.0 - 1.0).collect();
    let n = x.len();
    let (lo, hi) = bootstrap(n, BOOTSTRAP, 42, |c| stats::weighted_mean(&x, c));
    // Brute force: the same stream of row draws, each resample materialised and averaged.
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut means: Vec<f64> = (0..BOOTSTRAP)
        .map(|_| {
            let picked: Vec<f64> = (0..n).map(|_| x[rng.random_range(0..n)]).collect();
            picked.iter().sum::<f64>() / n as f64
        })
        .collect();
    let (blo, bhi) = percentile_95(&mut means);
    assert!(
        (lo - blo).abs() < 1e-12 && (hi - bhi).abs() < 1e-12,
        "{lo} {hi} vs {blo} {bhi}"
    );
    // The interval covers the mean and is seeded.
    let m = x.iter().sum::<f64>() / n as f64;
    assert!(lo < m && m < hi);
    assert_eq!(
        bootstrap(n, 200, 5, |c| stats::weighted_mean(&x, c)),
        bootstrap(n, 200, 5, |c| stats::weighted_mean(&x, c))
    );
}
