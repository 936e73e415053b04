// Shared by every kernel: what changes per submit (written once per forward by the host).
struct Step {
    pos0: u32,      // position of the first token of this forward
    n_tokens: u32,  // tokens in this forward (T)
    n_chunks: u32,  // attention chunks covering positions 0..pos0+T
    _pad: u32,
}

// Whether x is NaN or ±∞ (all exponent bits set). Read from the bits: WGSL lets an
// implementation assume that floating-point values are finite, so `x != x` may not hold.
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// a · b for complex numbers as (re, im).
fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// The first position a query at `pos` sees with a sliding window of `window` positions (0: no
// window, every position from 0); ops::window_start is the CPU twin.
fn window_start(pos: u32, window: u32) -> u32 {
    return select(0u, pos + 1u - window, window > 0u && pos + 1u > window);
}
