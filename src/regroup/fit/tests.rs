//! The calibrated fit on synthetic heads whose best merge is known.

use super::*;
use crate::regroup::maps::LayerMaps;
use crate::regroup::test_rng as rng;

/// Three identical native heads merge exactly: every query head's scores and every
/// output through W_o come back as they were.
#[test]
fn identical_native_heads_merge_exactly() {
    let (h, g0, hd, dim, t) = (6usize, 3usize, 8usize, 16usize, 40usize);
    let grouping = Grouping::new(h, g0, 1).unwrap();
    let mut r = rng(3);
    let mut stats = LayerStats::new(grouping, hd);
    let mut tokens = Vec::new();
    for _ in 0..t {
        let q: Vec<f32> = (0..h * hd).map(|_| r()).collect();
        let k: Vec<f32> = (0..hd).map(|_| r()).collect();
        let v: Vec<f32> = (0..hd).map(|_| r()).collect();
        let k0: Vec<f32> = k.iter().cycle().take(g0 * hd).copied().collect();
        let v0: Vec<f32> = v.iter().cycle().take(g0 * hd).copied().collect();
        stats.add(&q, &k0, &v0);
        tokens.push((q, k0, v0));
    }
    let wo: Vec<f32> = (0..dim * h * hd).map(|_| r()).collect();
    for rule in [KSlots::PerPair, KSlots::ByEnergy] {
        let (maps, err) = stats.fit(&wo, rule).unwrap();
        assert!(err.k < 1e-9 && err.v < 1e-6, "{err:?}");
        check_exact(&maps, &tokens, &wo, (h, g0, hd, dim));
    }
}

/// Scores and outputs through `maps` (G = 1) equal the native ones on `tokens`.
fn check_exact(
    maps: &LayerMaps,
    tokens: &[(Vec<f32>, Vec<f32>, Vec<f32>)],
    wo: &[f32],
    (h, g0, hd, dim): (usize, usize, usize, usize),
) {
    let grouping = Grouping::new(h, g0, 1).unwrap();
    let natively = LayerMaps::pooled(Grouping::new(h, g0, g0).unwrap(), hd);
    for (q, k0, v0) in tokens {
        // Scores: q_h · k_{native j}  vs  mapped q_h · merged k.
        let k_native = natively.map_k(k0, Grouping::new(h, g0, g0).unwrap(), hd);
        let k_merged = maps.map_k(k0, grouping, hd);
        let mut qm = q.clone();
        maps.map_q(&mut qm, grouping, hd);
        for head in 0..h {
            let j = head / (h / g0);
            let want: f32 = (0..hd)
                .map(|e| q[head * hd + e] * k_native[j * hd + e])
                .sum();
            let got: f32 = (0..hd).map(|e| qm[head * hd + e] * k_merged[e]).sum();
            assert!((want - got).abs() < 1e-4, "score {want} vs {got}");
        }
        // Values: each head's decoded value equals its native value.
        let v_merged = maps.map_v(v0, grouping, hd);
        let mut att: Vec<f32> = (0..h).flat_map(|_| v_merged.clone()).collect();
        maps.map_o(&mut att, h, hd);
        let want: Vec<f32> = (0..h)
            .flat_map(|head| v0[(head / 2) * hd..][..hd].to_vec())
            .collect();
        let out = |a: &[f32]| -> Vec<f32> {
            (0..dim)
                .map(|i| (0..h * hd).map(|c| wo[i * h * hd + c] * a[c]).sum())
                .collect()
        };
        for (a, b) in out(&att).iter().zip(out(&want)) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "output {a} vs {b}");
        }
    }
}

/// Keys whose energy sits at a few pairs, more directions there than one slot per pair
/// keeps: spending the slots by energy recovers every score exactly, at every position
/// (RoPE turning each slot at its pair's angle), and one slot per pair does not.
#[test]
fn slots_follow_the_energy() {
    let (h, g0, hd, t) = (3usize, 3usize, 8usize, 60usize);
    let grouping = Grouping::new(h, g0, 1).unwrap();
    let mut r = rng(11);
    let mut stats = LayerStats::new(grouping, hd);
    let mut tokens = Vec::new();
    for _ in 0..t {
        let q: Vec<f32> = (0..h * hd).map(|_| r()).collect();
        // Pair 0 of heads 0 and 1, pair 1 of heads 1 and 2: four directions in all.
        let mut k0 = vec![0.0f32; g0 * hd];
        for (j, f) in [(0, 0), (1, 0), (1, 1), (2, 1)] {
            k0[j * hd + 2 * f] = r();
            k0[j * hd + 2 * f + 1] = r();
        }
        let v0: Vec<f32> = (0..g0 * hd).map(|_| r()).collect();
        stats.add(&q, &k0, &v0);
        tokens.push((q, k0));
    }
    let wo: Vec<f32> = (0..4 * h * hd).map(|_| r()).collect();
    let (per_pair, err) = stats.fit(&wo, KSlots::PerPair).unwrap();
    assert!(err.k > 0.1 && per_pair.slots.is_none(), "{err:?}");
    let (maps, err) = stats.fit(&wo, KSlots::ByEnergy).unwrap();
    assert!(err.k < 1e-9, "{err:?}");
    assert_eq!(maps.slots.as_deref(), Some(&[0, 0, 1, 1][..]));
    let native = Grouping::new(h, g0, g0).unwrap();
    let ident = LayerMaps::pooled(native, hd);
    for (pos, (q, k0)) in tokens.iter().enumerate() {
        let turns = crate::model::rope_turns(pos, hd, 10_000.0);
        let (mut qn, mut kn) = (q.clone(), k0.clone());
        ident.rotate(&mut qn, &turns, &native.kv_heads());
        ident.rotate(&mut kn, &turns, &[0, 1, 2]);
        let (mut qm, mut km) = (q.clone(), maps.map_k(k0, grouping, hd));
        maps.map_q(&mut qm, grouping, hd);
        maps.rotate(&mut qm, &turns, &grouping.kv_heads());
        maps.rotate(&mut km, &turns, &[0]);
        for head in 0..h {
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
            let want = dot(&qn[head * hd..][..hd], &kn[head * hd..][..hd]);
            let got = dot(&qm[head * hd..][..hd], &km);
            assert!(
                (want - got).abs() < 1e-4,
                "pos {pos} head {head}: {want} vs {got}"
            );
        }
    }
}

/// Without a merge (G ≥ G0) the fit is the exact copy of the native heads.
#[test]
fn no_merge_no_maps() {
    let grouping = Grouping::new(6, 3, 6).unwrap();
    let stats = LayerStats::new(grouping, 8);
    let (maps, err) = stats.fit(&[0.0; 8 * 48], KSlots::ByEnergy).unwrap();
    assert_eq!(maps, LayerMaps::pooled(grouping, 8));
    assert_eq!(err, FitError::default());
}
