//! Single-threaded f32 matrix products for the engine. Every output element is one fused
//! multiply-add chain over the inner dimension in order (`c ← fma(a[i,p], b[p,j], c)` for
//! p = 0, 1, …), so a product is bit-identical on every CPU (the AVX2 + FMA register-tile
//! kernel, or the same chain through scalar `mul_add` elsewhere) and whatever thread computes
//! it. No packing: the engine's operands fit in L2.
//! Knows nothing of models; the callers split work across threads.

/// A read-only matrix view: element (i, j) at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Step between rows.
    pub rs: usize,
    /// Step between columns.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with `ld` elements per row.
    pub fn rows(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `ld` elements per row.
    pub fn t(data: &'a [f32], ld: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: ld,
        }
    }
}

/// Rows of one register tile: 6 × 2 vectors are 12 independent accumulator chains, enough to
/// cover the fused multiply-add's latency at two per cycle (4 rows, 8 chains, measured 15 %
/// slower on the engine's products).
const MR: usize = 6;
/// Inner-dimension block of the AVX kernel: 256 rows of a 16-column strip of B are 16 KiB,
/// half of L1.
const KC: usize = 256;
/// Columns of one register tile (two 8-lane vectors).
const NR: usize = 16;

/// `C[m×n] = A[m×k] · B[k×n]` (`acc`: `C += …`, the chain starting from C's value). B and C
/// are row-major with `ldb`, `ldc` elements per row. Panics when a view is too short (a
/// programming error, never user input).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    acc: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        let last_a = (m - 1) * a.rs + (k - 1) * a.cs;
        assert!(last_a < a.data.len(), "gemm: A is too short");
        assert!((k - 1) * ldb + n <= b.len(), "gemm: B is too short");
    }
    assert!((m - 1) * ldc + n <= c.len(), "gemm: C is too short");
    #[cfg(target_arch = "x86_64")]
    if super::simd() {
        // SAFETY: the CPU has AVX2 and FMA (`simd`); bounds are checked above.
        unsafe { avx::gemm(m, n, k, a, b, ldb, c, ldc, acc) };
        return;
    }
    // SAFETY: bounds are checked above.
    unsafe { gemm_plain(m, n, k, a, b, ldb, c, ldc, acc) };
}

/// The product element by element: the reference chain, and the path for CPUs without AVX2
/// and FMA (`mul_add` is then a library call with the same, exactly rounded, result).
///
/// # Safety
/// The views must hold every element the product reads (checked by [`gemm`]).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_plain(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    acc: bool,
) {
    edge(
        m,
        n,
        k,
        a.data.as_ptr(),
        a.rs,
        a.cs,
        b.as_ptr(),
        ldb,
        c.as_mut_ptr(),
        ldc,
        acc,
    );
}

/// `h × w` outputs from their pointers, each its own chain over p in order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn edge(
    h: usize,
    w: usize,
    k: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    for i in 0..h {
        for j in 0..w {
            let cij = c.add(i * ldc + j);
            let mut x = if acc { *cij } else { 0.0 };
            for p in 0..k {
                x = (*a.add(i * rs + p * cs)).mul_add(*b.add(p * ldb + j), x);
            }
            *cij = x;
        }
    }
}

/// The AVX2 + FMA kernel: register tiles of `MR × NR`, each accumulator a chain of
/// `_mm256_fmadd_ps` over p in order (one rounding per step, as `mul_add`).
#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{edge, Mat, KC, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2 and FMA; the views must hold every element the product reads.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: Mat,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
    ) {
        let (rs, cs) = (a.rs, a.cs);
        // The inner dimension in blocks of KC: a block's `KC × 16` strip of B stays in L1 while
        // every row tile passes over it. Each block continues the chains from C (stored and
        // reloaded exactly), so blocking does not change a result.
        let mut p0 = 0;
        loop {
            let kc = (k - p0).min(KC);
            let (ap, bp, cp) = (
                a.data.as_ptr().add(p0 * cs),
                b.as_ptr().add(p0 * ldb),
                c.as_mut_ptr(),
            );
            let acc = acc || p0 > 0;
            let mut j = 0;
            while j < n {
                let w = (n - j).min(NR);
                let mut i = 0;
                while i < m {
                    let h = (m - i).min(MR);
                    let (a0, b0, c0) = (ap.add(i * rs), bp.add(j), cp.add(i * ldc + j));
                    match (h, w) {
                        (MR, NR) => tile::<MR>(kc, a0, rs, cs, b0, ldb, c0, ldc, acc),
                        (5, NR) => tile::<5>(kc, a0, rs, cs, b0, ldb, c0, ldc, acc),
                        (4, NR) => tile::<4>(kc, a0, rs, cs, b0, ldb, c0, ldc, acc),
                        (3, NR) => tile::<3>(kc, a0, rs, cs, b0, ldb, c0, ldc, acc),
                        (2, NR) => tile::<2>(kc, a0, rs, cs, b0, ldb, c0, ldc, acc),
                        (1, NR) => tile::<1>(kc, a0, rs, cs, b0, ldb, c0, ldc, acc),
                        _ => edge(h, w, kc, a0, rs, cs, b0, ldb, c0, ldc, acc),
                    }
                    i += h;
                }
                j += w;
            }
            p0 += kc;
            if p0 >= k {
                break;
            }
        }
    }

    /// One `R × 16` tile: 2·R accumulators in registers.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize>(
        k: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        if acc {
            for i in 0..R {
                lo[i] = _mm256_loadu_ps(c.add(i * ldc));
                hi[i] = _mm256_loadu_ps(c.add(i * ldc + 8));
            }
        }
        for p in 0..k {
            let b_lo = _mm256_loadu_ps(b.add(p * ldb));
            let b_hi = _mm256_loadu_ps(b.add(p * ldb + 8));
            let ap = a.add(p * cs);
            for i in 0..R {
                let ai = _mm256_broadcast_ss(&*ap.add(i * rs));
                lo[i] = _mm256_fmadd_ps(ai, b_lo, lo[i]);
                hi[i] = _mm256_fmadd_ps(ai, b_hi, hi[i]);
            }
        }
        for i in 0..R {
            _mm256_storeu_ps(c.add(i * ldc), lo[i]);
            _mm256_storeu_ps(c.add(i * ldc + 8), hi[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8;
                x as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Products of every shape class (full tiles, row and column edges, k = 0) against an f64
    /// reference, both layouts of A, and accumulation.
    #[test]
    fn matches_a_reference() {
        for &(m, n, k) in &[
            (4, 16, 8),
            (7, 37, 5),
            (1, 1, 1),
            (13, 48, 64),
            (5, 3, 0),
            (64, 32, 136),
        ] {
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let c0 = fill(m * n, 3);
            for trans in [false, true] {
                let av = if trans {
                    // The same A stored transposed: at[p * m + i] = a[i * k + p].
                    let mut at = vec![0f32; m * k];
                    for i in 0..m {
                        for p in 0..k {
                            at[p * m + i] = a[i * k + p];
                        }
                    }
                    at
                } else {
                    a.clone()
                };
                let view = if trans {
                    Mat::t(&av, m)
                } else {
                    Mat::rows(&av, k)
                };
                for acc in [false, true] {
                    let mut c = c0.clone();
                    gemm(m, n, k, view, &b, n, &mut c, n, acc);
                    for i in 0..m {
                        for j in 0..n {
                            let mut r = if acc { c0[i * n + j] as f64 } else { 0.0 };
                            for p in 0..k {
                                r += a[i * k + p] as f64 * b[p * n + j] as f64;
                            }
                            let got = c[i * n + j] as f64;
                            assert!((got - r).abs() <= 1e-5 * (1.0 + r.abs()), "{m}x{n}x{k}");
                        }
                    }
                }
            }
        }
    }

    /// The vector kernel and the scalar chain give the same bits.
    #[test]
    fn kernels_agree_bit_for_bit() {
        let (m, n, k) = (22, 53, 600); // k over KC: blocks continue the chains
        let a = fill(m * k, 4);
        let b = fill(k * n, 5);
        let mut fast = fill(m * n, 6);
        let mut plain = fast.clone();
        gemm(m, n, k, Mat::rows(&a, k), &b, n, &mut fast, n, true);
        // SAFETY: the views hold m·k, k·n and m·n elements.
        unsafe { gemm_plain(m, n, k, Mat::rows(&a, k), &b, n, &mut plain, n, true) };
        assert!(fast
            .iter()
            .zip(&plain)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        // And an element is the ordered chain.
        let mut x = fill(m * n, 6)[n + 2];
        for p in 0..k {
            x = a[k + p].mul_add(b[p * n + 2], x);
        }
        assert_eq!(x.to_bits(), fast[n + 2].to_bits());
    }
}
