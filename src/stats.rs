//! Intervals for every number feedlens reports: a seeded percentile bootstrap over prompts
//! within one checkpoint, and the interval across training seeds (Student's t with at least 3
//! seeds, the range with fewer). Pure arithmetic on plain slices; must not run a model.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples used throughout (percentile interval; the 2.5 % and 97.5 % quantiles).
pub const BOOTSTRAP: usize = 1000;

/// A number with its 95 % interval and the count it rests on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Est {
    /// The point estimate (on all the data).
    pub value: f64,
    /// Lower end of the 95 % interval.
    pub lo: f64,
    /// Upper end of the 95 % interval.
    pub hi: f64,
    /// How many prompts (or seeds) it rests on.
    pub n: usize,
}

impl Est {
    /// A value known exactly (an interval of zero width).
    pub fn exact(value: f64, n: usize) -> Est {
        Est {
            value,
            lo: value,
            hi: value,
            n,
        }
    }
    /// Whether the interval excludes `x`.
    pub fn excludes(&self, x: f64) -> bool {
        self.lo > x || self.hi < x
    }
    /// Whether every value of the interval is at least `x`.
    pub fn clears(&self, x: f64) -> bool {
        self.lo >= x
    }
    /// The interval as text, `[lo, hi]` with `dec` decimals.
    pub fn bracket(&self, dec: usize) -> String {
        format!("[{:.dec$}, {:.dec$}]", self.lo, self.hi)
    }
}

/// The 2.5 % and 97.5 % quantiles of `v` (sorted in place; linear interpolation between order
/// statistics, numpy's default). NaNs sort last.
pub fn percentile_95(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (quantile(v, 0.025), quantile(v, 0.975))
}

/// The `q` quantile of sorted `v` (linear interpolation); NaN when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let h = q * (v.len() - 1) as f64;
    let (i, f) = (h.floor() as usize, h - h.floor());
    match v.get(i + 1) {
        Some(&next) => v[i] + f * (next - v[i]),
        None => v[i],
    }
}

/// Resample indices `0..n` with replacement `resamples` times (seeded, one stream per call) and
/// compute `stat` on each resample's counts (`counts[i]` = how often row `i` was drawn, so a
/// statistic sums rows weighted by counts); returns the percentile interval of the resampled
/// statistic. Resamples whose statistic is not finite (a ratio over a zero) are left out; when
/// none is finite the interval is NaN.
pub fn bootstrap(
    n: usize,
    resamples: usize,
    seed: u64,
    mut stat: impl FnMut(&[u32]) -> f64,
) -> (f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = vec![0u32; n];
    let mut out = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..n {
            counts[rng.random_range(0..n)] += 1;
        }
        let s = stat(&counts);
        if s.is_finite() {
            out.push(s);
        }
    }
    if out.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    percentile_95(&mut out)
}

/// The mean of `x` with its bootstrap interval.
pub fn mean_est(x: &[f64], resamples: usize, seed: u64) -> Est {
    let n = x.len();
    let value = x.iter().sum::<f64>() / n.max(1) as f64;
    let (lo, hi) = bootstrap(n, resamples, seed, |c| weighted_mean(x, c));
    Est { value, lo, hi, n }
}

/// `Σ cᵢ·xᵢ / Σ cᵢ`.
pub fn weighted_mean(x: &[f64], counts: &[u32]) -> f64 {
    let (mut s, mut k) = (0.0, 0u64);
    for (v, &c) in x.iter().zip(counts) {
        s += v * c as f64;
        k += c as u64;
    }
    s / k as f64
}

/// The Wilson score interval of a proportion `k / n` at 95 % (z = 1.96), for checking the
/// bootstrap against a closed form.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    let z = 1.959_963_984_540_054;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let den = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / den;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / den;
    (centre - half, centre + half)
}

/// Student's t quantile t₀.₉₇₅ for `df` degrees of freedom (table to 30, then the normal's
/// 1.96 plus the first correction term).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => 1.959_964 + 2.4 / df as f64,
    }
}

/// How an across-seeds interval was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedInterval {
    /// mean ± t₀.₉₇₅(n − 1)·sd/√n (3 or more seeds).
    T,
    /// min..max (fewer than 3 seeds: too few for a t interval).
    Range,
}

/// A number over training seeds: its mean, the interval across seeds, and each seed's value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedEst {
    /// Mean over the seeds.
    pub mean: f64,
    /// Lower end (t interval, or the smallest value).
    pub lo: f64,
    /// Upper end (t interval, or the largest value).
    pub hi: f64,
    /// Seeds with a finite value.
    pub n: usize,
    /// How `lo`..`hi` was made.
    pub interval: SeedInterval,
    /// Each seed's value (null where it was not defined), in seed order.
    pub per_seed: Vec<Option<f64>>,
}

impl SeedEst {
    /// Summarise per-seed values (non-finite ones count as missing).
    pub fn of(per_seed: &[f64]) -> SeedEst {
        let v: Vec<f64> = per_seed.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let (lo, hi, interval) = if n >= 3 {
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let half = t975(n - 1) * (var / n as f64).sqrt();
            (mean - half, mean + half, SeedInterval::T)
        } else {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo, hi, SeedInterval::Range)
        };
        SeedEst {
            mean,
            lo,
            hi,
            n,
            interval,
            per_seed: per_seed
                .iter()
                .map(|x| Some(*x).filter(|x| x.is_finite()))
                .collect(),
        }
    }
    /// The interval as text, `[lo, hi]` with `dec` decimals.
    pub fn bracket(&self, dec: usize) -> String {
        format!("[{:.dec$}, {:.dec$}]", self.lo, self.hi)
    }
    /// Whether the interval excludes `x`.
    pub fn excludes(&self, x: f64) -> bool {
        self.lo > x || self.hi < x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(percentile_95(&mut v), (1.1, 4.9));
        assert_eq!(quantile(&[2.0], 0.3), 2.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn seed_intervals() {
        let s = SeedEst::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.n, s.interval), (2.0, 3, SeedInterval::T));
        assert!((s.hi - s.mean - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        let r = SeedEst::of(&[1.0, f64::NAN, 3.0]);
        assert_eq!(
            (r.lo, r.hi, r.n, r.interval),
            (1.0, 3.0, 2, SeedInterval::Range)
        );
        assert_eq!(r.per_seed, vec![Some(1.0), None, Some(3.0)]);
    }

    #[test]
    fn bootstrap_is_seeded_and_skips_undefined_resamples() {
        let x: Vec<f64> = (0..50).map(|i| (i % 7) as f64).collect();
        let a = mean_est(&x, 200, 3);
        assert_eq!(a, mean_est(&x, 200, 3));
        assert!(a.lo < a.value && a.value < a.hi);
        let (lo, hi) = bootstrap(10, 100, 1, |_| f64::NAN);
        assert!(lo.is_nan() && hi.is_nan());
    }
}
