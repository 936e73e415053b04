//! The O refit on synthetic outputs made through known maps.

use super::*;
use crate::regroup::test_rng as rng;

const H: usize = 3;
const HD: usize = 4;
const DIM: usize = 16;
const WIDTH: usize = H * HD;

/// `Σ_t x(t) y(t)ᵀ` over rows of `[t][WIDTH]`, f32.
fn products(x: &[Vec<f32>], y: &[Vec<f32>]) -> Vec<f32> {
    let mut out = vec![0.0f32; WIDTH * WIDTH];
    for (xt, yt) in x.iter().zip(y) {
        for (i, xi) in xt.iter().enumerate() {
            for (j, yj) in yt.iter().enumerate() {
                out[i * WIDTH + j] += xi * yj;
            }
        }
    }
    out
}

/// Statistics of `t` tokens whose native outputs are the merged ones through the maps
/// `truth` (`[H][hd][hd]`): `o_h = M_h a_h`, so `y = Σ_h W_o,h M_h a_h` exactly.
fn exact_stats(truth: &[f32], t: usize, r: &mut impl FnMut() -> f32) -> OutputStats {
    let mut stats = OutputStats::new(H, HD);
    let a: Vec<Vec<f32>> = (0..t).map(|_| (0..WIDTH).map(|_| r()).collect()).collect();
    let o: Vec<Vec<f32>> = a
        .iter()
        .map(|at| {
            (0..WIDTH)
                .map(|row| {
                    let (h, d) = (row / HD, row % HD);
                    (0..HD)
                        .map(|e| truth[(h * HD + d) * HD + e] * at[h * HD + e])
                        .sum()
                })
                .collect()
        })
        .collect();
    // Three blocks of tokens, as calibration adds one sequence at a time.
    for (ab, ob) in a.chunks(t / 3 + 1).zip(o.chunks(t / 3 + 1)) {
        let (aa, oa, oo) = (products(ab, ab), products(ob, ab), products(ob, ob));
        stats.add_products(&aa, &oa, &oo, ab.len());
    }
    stats
}

fn identity_maps() -> Vec<f32> {
    (0..H * HD * HD)
        .map(|i| f32::from((i % (HD * HD)).is_multiple_of(HD + 1)))
        .collect()
}

/// Maps chosen at random, outputs generated through them: the refit finds them again
/// from the identity, and the attention contribution's error goes to zero.
#[test]
fn the_refit_recovers_known_maps() {
    let mut r = rng(11);
    let truth: Vec<f32> = identity_maps().iter().map(|&x| x + 0.6 * r()).collect();
    let wo: Vec<f32> = (0..DIM * WIDTH).map(|_| r()).collect();
    let stats = exact_stats(&truth, 300, &mut r);
    assert_eq!(stats.tokens(), 300);
    let (maps, fit) = stats.refit(&wo, &identity_maps(), 1e-9).unwrap();
    for (got, want) in maps.iter().zip(&truth) {
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
    assert!(
        fit.base > 0.05,
        "the identity is far from the truth: {fit:?}"
    );
    assert!(fit.refit < 1e-6, "{fit:?}");
    assert!(
        fit.iterations > 0 && fit.iterations < MAX_ITERATIONS,
        "{fit:?}"
    );
}

/// A drift the maps can make up for: outputs unchanged by the merge (o = a) but the
/// stream's drift `d = Σ_h W_o,h (T_h − I) a_h`; the target `W_o·o + d` is reached through
/// the maps T, which the refit finds, with no error left.
#[test]
fn the_refit_makes_up_for_the_drift() {
    let mut r = rng(17);
    let truth: Vec<f32> = identity_maps().iter().map(|&x| x + 0.5 * r()).collect();
    let wo: Vec<f32> = (0..DIM * WIDTH).map(|_| r()).collect();
    let mut stats = OutputStats::new(H, HD);
    for _ in 0..3 {
        let a: Vec<Vec<f32>> = (0..100)
            .map(|_| (0..WIDTH).map(|_| r()).collect())
            .collect();
        let d: Vec<Vec<f32>> = a.iter().map(|at| drift(&wo, &truth, at)).collect();
        let (aa, dd) = (
            products(&a, &a),
            d.iter().flatten().map(|&x| f64::from(x * x)),
        );
        stats.add_products(&aa, &aa, &aa, a.len());
        let da = outer(&d, &a);
        stats.add_drift(&da, &da, dd.sum());
    }
    let (maps, fit) = stats.refit(&wo, &identity_maps(), 1e-9).unwrap();
    for (got, want) in maps.iter().zip(&truth) {
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
    assert!(fit.base > 0.01 && fit.refit < 1e-6, "{fit:?}");
}

/// `Σ_h W_o,h (T_h − I) a_h`: `[DIM]`.
fn drift(wo: &[f32], truth: &[f32], a: &[f32]) -> Vec<f32> {
    let mapped: Vec<f32> = (0..WIDTH)
        .map(|row| {
            let (h, d) = (row / HD, row % HD);
            let m: f32 = (0..HD)
                .map(|e| truth[(h * HD + d) * HD + e] * a[h * HD + e])
                .sum();
            m - a[row]
        })
        .collect();
    (0..DIM)
        .map(|i| (0..WIDTH).map(|c| wo[i * WIDTH + c] * mapped[c]).sum())
        .collect()
}

/// `Σ_t d(t) a(t)ᵀ`: `[DIM][WIDTH]`.
fn outer(d: &[Vec<f32>], a: &[Vec<f32>]) -> Vec<f32> {
    let mut out = vec![0.0f32; DIM * WIDTH];
    for (dt, at) in d.iter().zip(a) {
        for (i, di) in dt.iter().enumerate() {
            for (j, aj) in at.iter().enumerate() {
                out[i * WIDTH + j] += di * aj;
            }
        }
    }
    out
}

/// A large ridge keeps the base maps; the refit never makes the calibration fit worse than
/// the base maps; a ridge that is not positive is refused.
#[test]
fn the_ridge_pulls_towards_the_base_maps() {
    let mut r = rng(5);
    let truth: Vec<f32> = identity_maps().iter().map(|&x| x + 0.6 * r()).collect();
    let wo: Vec<f32> = (0..DIM * WIDTH).map(|_| r()).collect();
    let stats = exact_stats(&truth, 200, &mut r);
    let base = identity_maps();
    let (stiff, fit) = stats.refit(&wo, &base, 1e9).unwrap();
    for (got, want) in stiff.iter().zip(&base) {
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
    let (_, mid) = stats.refit(&wo, &base, 1.0).unwrap();
    assert!(mid.refit < mid.base && mid.refit > 0.0, "{mid:?}");
    assert!((fit.refit - fit.base).abs() < 1e-4 * fit.base, "{fit:?}");
    for bad in [0.0, -1.0, f64::NAN] {
        assert!(stats.refit(&wo, &base, bad).is_err(), "ridge {bad}");
    }
}
