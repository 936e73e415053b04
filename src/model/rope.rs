//! Rotary position embedding (Su et al. 2021, "RoFormer", arXiv:2104.09864) in llama.cpp's
//! "NORM" convention: adjacent pairs `(x[2i], x[2i+1])` of each head turn by the angle
//! `pos · base^(−2i / head_dim)`, divided by pair i's frequency factor where the model has
//! them (Llama 3's `rope_freqs.weight`; llama.cpp's `ggml_rope_ext` freq_factors). The angles
//! are computed in f64 once, here, for the CPU engine, the GPU's table and the tests.

/// `(cos, sin)` of each pair's angle at position `pos`: `[head_dim / 2]`.
pub fn rope_turns(pos: usize, head_dim: usize, base: f32) -> Vec<(f32, f32)> {
    rope_turns_scaled(pos, head_dim, base, None)
}

/// [`rope_turns`] with pair i's angle divided by `factors[i]` (`[head_dim / 2]`) when given.
pub fn rope_turns_scaled(
    pos: usize,
    head_dim: usize,
    base: f32,
    factors: Option<&[f32]>,
) -> Vec<(f32, f32)> {
    (0..head_dim / 2)
        .map(|i| {
            let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let theta = match factors {
                Some(f) => theta / f[i] as f64,
                None => theta,
            };
            (theta.cos() as f32, theta.sin() as f32)
        })
        .collect()
}

/// The table the GPU reads: `[positions][head_dim / 2]` (cos, sin), flattened.
pub fn rope_table(positions: usize, head_dim: usize, base: f32) -> Vec<f32> {
    rope_table_scaled(positions, head_dim, base, None)
}

/// [`rope_table`] with each pair's frequency factors ([`rope_turns_scaled`]).
pub fn rope_table_scaled(
    positions: usize,
    head_dim: usize,
    base: f32,
    factors: Option<&[f32]>,
) -> Vec<f32> {
    (0..positions)
        .flat_map(|pos| rope_turns_scaled(pos, head_dim, base, factors))
        .flat_map(|(c, s)| [c, s])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_of_one_change_nothing() {
        let ones = vec![1.0; 32];
        assert_eq!(
            rope_table_scaled(20, 64, 1e5, Some(&ones)),
            rope_table(20, 64, 1e5)
        );
        assert_eq!(rope_turns_scaled(7, 64, 1e4, None), rope_turns(7, 64, 1e4));
    }

    #[test]
    fn a_factor_divides_its_pairs_angle_only() {
        // Pair 1 of head_dim 4, base 100: angle pos · 100^(−1/2) = pos / 10; factor 4 → pos / 40.
        let f = [1.0, 4.0];
        let t = rope_turns_scaled(8, 4, 100.0, Some(&f));
        let plain = rope_turns(8, 4, 100.0);
        assert_eq!(t[0], plain[0]);
        let want = (8.0f64 / 40.0).sin_cos();
        assert!((t[1].0 as f64 - want.1).abs() < 1e-7 && (t[1].1 as f64 - want.0).abs() < 1e-7);
        // Dividing the angle by f at position p is the plain angle at position p / f.
        assert_eq!(t[1], rope_turns(2, 4, 100.0)[1]);
    }

    #[test]
    fn the_table_is_the_turns_position_by_position() {
        let f = [1.5, 2.0, 3.0, 4.0];
        let table = rope_table_scaled(5, 8, 1e4, Some(&f));
        assert_eq!(table.len(), 5 * 4 * 2);
        for pos in 0..5 {
            let turns = rope_turns_scaled(pos, 8, 1e4, Some(&f));
            let row: Vec<f32> = turns.iter().flat_map(|&(c, s)| [c, s]).collect();
            assert_eq!(&table[pos * 8..(pos + 1) * 8], &row[..]);
        }
    }
}
