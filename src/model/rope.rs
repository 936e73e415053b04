//! Rotary position embedding (Su et al. 2021, "RoFormer", arXiv:2104.09864) in llama.cpp's
//! "NORM" convention: adjacent pairs `(x[2i], x[2i+1])` of each head turn by the angle
//! `pos · base^(−2i / head_dim)`. The angles are computed in f64 once, here, for the CPU
//! engine, the GPU's table and the tests.

/// `(cos, sin)` of each pair's angle at position `pos`: `[head_dim / 2]`.
pub fn rope_turns(pos: usize, head_dim: usize, base: f32) -> Vec<(f32, f32)> {
    (0..head_dim / 2)
        .map(|i| {
            let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
            (theta.cos() as f32, theta.sin() as f32)
        })
        .collect()
}

/// The table the GPU reads: `[positions][head_dim / 2]` (cos, sin), flattened.
pub fn rope_table(positions: usize, head_dim: usize, base: f32) -> Vec<f32> {
    (0..positions)
        .flat_map(|pos| rope_turns(pos, head_dim, base))
        .flat_map(|(c, s)| [c, s])
        .collect()
}
