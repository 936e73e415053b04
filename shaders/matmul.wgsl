// Dequantizing matrix product for prefill (T tokens):
//   y[t][o] (+)= Σ_i W[row0 + o][i] · x[t][i]   W: [rows][n_in] quantized, x: [T][n_in], y: [T][n_out]
// One invocation per output row and TT tokens: each weight block is fetched once for TT
// tokens. `row0` selects a block of rows of a stacked tensor (Q|K|V, gate|up). `mode`: 0
// stores, 1 adds to y (residual connections); matvec.wgsl's mode 2 (SwiGLU) is not taken here.
// Decode (T = 1) uses matvec.wgsl instead.
struct Params { n_in: u32, n_out: u32, mode: u32, row0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
// bindings 2, 3: the weight textures (quant.wgsl)
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const TT: u32 = 4u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let o = gid.x;
    let n = step.n_tokens;
    let t0 = wid.y * TT;
    if (o >= p.n_out || t0 >= n) {
        return;
    }
    let tn = min(TT, n - t0);
    let nb = p.n_in / 32u;
    let row4 = p.n_in / 4u;
    var acc = array<f32, TT>();
    for (var b = 0u; b < nb; b++) {
        let w = dequant_block(p.row0 + o, b, nb);
        let xb = t0 * row4 + b * 8u;
        for (var tt = 0u; tt < tn; tt++) {
            var s = 0.0;
            for (var k = 0u; k < 8u; k++) {
                s += dot(w[k], x[xb + tt * row4 + k]);
            }
            acc[tt] += s;
        }
    }
    for (var tt = 0u; tt < tn; tt++) {
        let i = (t0 + tt) * p.n_out + o;
        y[i] = select(0.0, y[i], p.mode == 1u) + acc[tt];
    }
}
