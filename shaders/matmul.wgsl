// Dequantizing matrix product, used for decode (T = 1) and prefill (T tokens):
//   y[t][o] (+)= Σ_i W[o][i] · x[t][i]      W: [n_out][n_in] quantized, x: [T][n_in], y: [T][n_out]
// One invocation per output row and TT tokens: each weight block is dequantized once and
// applied to TT tokens. With `accumulate`, the product is added to y (residual connections).
// With `last_row_only`, only x's last row is used and y has one row (the output head).
struct Params { n_in: u32, n_out: u32, accumulate: u32, last_row_only: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TT: u32 = 4u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    var n = step.n_tokens;
    var first_row = 0u;
    if (p.last_row_only != 0u) {
        first_row = n - 1u;
        n = 1u;
    }
    let t0 = gid.y * TT;
    if (o >= p.n_out || t0 >= n) {
        return;
    }
    let nb = p.n_in / 32u;
    let row4 = p.n_in / 4u;
    var acc = array<f32, TT>();
    for (var b = 0u; b < nb; b++) {
        let wb = dequant_block(o * nb + b);
        for (var tt = 0u; tt < TT; tt++) {
            if (t0 + tt < n) {
                let xo = (first_row + t0 + tt) * row4 + b * 8u;
                var s = 0.0;
                for (var k = 0u; k < 8u; k++) {
                    s += dot(wb[k], x[xo + k]);
                }
                acc[tt] += s;
            }
        }
    }
    for (var tt = 0u; tt < TT; tt++) {
        let t = t0 + tt;
        if (t < n) {
            let i = t * p.n_out + o;
            y[i] = select(0.0, y[i], p.accumulate != 0u) + acc[tt];
        }
    }
}
