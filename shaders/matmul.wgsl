// Dequantizing matrix product, used for decode (T = 1) and prefill (T tokens):
//   y[t][o] (+)= Σ_i W[o][i] · x[t][i]      W: [n_out][n_in] quantized, x: [T][n_in], y: [T][n_out]
// One invocation per output row and TT tokens; neighbouring invocations read neighbouring
// words of the interleaved weights. Each block's words are loaded once for TT tokens.
// With `accumulate`, the product is added to y (residual connections). With
// `last_row_only`, only x's last row is used, and its result is y's row 0.
struct Params { n_in: u32, n_out: u32, accumulate: u32, last_row_only: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TT: u32 = 4u;

// Σ over one block: the 8 vec4s of weights `q` (before scale) against x[xo..xo+8].
fn dot8(q: array<vec4<f32>, 8>, xo: u32) -> f32 {
    var s = 0.0;
    for (var k = 0u; k < 8u; k++) {
        s += dot(q[k], x[xo + k]);
    }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    var n = step.n_tokens;
    var first = 0u;
    if (p.last_row_only != 0u) {
        first = n - 1u;
        n = 1u;
    }
    let t0 = gid.y * TT;
    if (o >= p.n_out || t0 >= n) {
        return;
    }
    let tn = min(TT, n - t0);
    let nb = p.n_in / 32u;
    let row4 = p.n_in / 4u;
    var acc = array<f32, TT>();
    for (var b = 0u; b < nb; b++) {
        let xb = (first + t0) * row4 + b * 8u;
        switch (WTYPE) {
            case 3u: { // Q4_1 fast path: Σ(q·d + m)·x = d·Σq·x + m·Σx
                let dm = unpack2x16float(wword(o, b, 0u, p.n_out));
                let w0 = wword(o, b, 1u, p.n_out);
                let w1 = wword(o, b, 2u, p.n_out);
                let w2 = wword(o, b, 3u, p.n_out);
                let w3 = wword(o, b, 4u, p.n_out);
                for (var tt = 0u; tt < tn; tt++) {
                    let xo = xb + tt * row4;
                    let s = dot(nib_lo(w0), x[xo]) + dot(nib_lo(w1), x[xo + 1u]) + dot(nib_lo(w2), x[xo + 2u]) + dot(nib_lo(w3), x[xo + 3u])
                        + dot(nib_hi(w0), x[xo + 4u]) + dot(nib_hi(w1), x[xo + 5u]) + dot(nib_hi(w2), x[xo + 6u]) + dot(nib_hi(w3), x[xo + 7u]);
                    let xs = x[xo] + x[xo + 1u] + x[xo + 2u] + x[xo + 3u] + x[xo + 4u] + x[xo + 5u] + x[xo + 6u] + x[xo + 7u];
                    acc[tt] += s * dm.x + dot(xs, vec4<f32>(dm.y));
                }
            }
            case 8u: { // Q8_0 fast path: d·Σq·x
                let d = unpack2x16float(wword(o, b, 0u, p.n_out)).x;
                var q: array<vec4<f32>, 8>;
                for (var k = 0u; k < 8u; k++) {
                    q[k] = int8x4(wword(o, b, 1u + k, p.n_out));
                }
                for (var tt = 0u; tt < tn; tt++) {
                    acc[tt] += d * dot8(q, xb + tt * row4);
                }
            }
            default: {
                let q = dequant_block(o, b, p.n_out);
                for (var tt = 0u; tt < tn; tt++) {
                    acc[tt] += dot8(q, xb + tt * row4);
                }
            }
        }
    }
    for (var tt = 0u; tt < tn; tt++) {
        let i = (t0 + tt) * p.n_out + o;
        y[i] = select(0.0, y[i], p.accumulate != 0u) + acc[tt];
    }
}
