// Dequantizing matrix product for prefill, over the tokens of one uniform window:
//   y[t][o] (+)= Σ_i W[row0 + o][i] · x[t][i]   W: [rows][n_in] quantized, x: [T][n_in], y: [T][n_out]
// for t in t_base .. t_base + t_count (and < T). x is bound as a 64 KiB uniform window that
// starts at row t_base, as matvec.wgsl binds its vector and for the same reason (a GPU
// broadcasts a load at an invocation-uniform offset; lavapipe loads it lane by lane, but from
// a uniform without a storage load's branch per lane); the engine covers the T tokens with one
// dispatch per window.
// Each invocation computes ROWS weight rows, `s` rows apart (`row_stride` in quant.wgsl), for
// TT tokens: each weight block is fetched and dequantized once for TT tokens, and each x
// value loaded once for the ROWS rows (lavapipe loads x lane by lane; see matvec.wgsl).
// `row0` selects a block of rows of a stacked tensor (Q|K|V, gate|up).
// `mode`: MODE_STORE stores, MODE_ACCUMULATE adds to y (residual connections); matvec.wgsl's
// other modes are not taken here.
// Decode (T = 1) uses matvec.wgsl instead.
// `norm_parts` and `eps` are matvec.wgsl's (the same Params struct on the host); unused here.
struct Params { n_in: u32, n_out: u32, mode: u32, row0: u32, t_base: u32, t_count: u32, norm_parts: u32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
// bindings 2, 3: the weight textures (quant.wgsl)
@group(0) @binding(4) var<uniform> x: array<vec4<f32>, 4096>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// y[t][o] (+)= v, if o is an output.
fn put(t: u32, o: u32, v: f32) {
    if (o < p.n_out) {
        let i = t * p.n_out + o;
        y[i] = select(0.0, y[i], p.mode == MODE_ACCUMULATE) + v;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let o = gid.x;
    let s = row_stride(p.n_out, ROWS);
    let end = min(step.n_tokens, p.t_base + p.t_count);
    let t0 = p.t_base + wid.y * TT;
    if (o >= s || t0 >= end) {
        return;
    }
    let tn = min(TT, end - t0);
    let nb = p.n_in / 32u;
    let row4 = p.n_in / 4u;
    let x0 = (t0 - p.t_base) * row4; // t0's row in the window
    let r = p.row0 + o;
    var acc0 = array<f32, TT>();
    var acc1 = array<f32, TT>();
    var acc2 = array<f32, TT>();
    var acc3 = array<f32, TT>();
    for (var b = 0u; b < nb; b++) {
        let w0 = dequant_block(r, b, nb);
        let w1 = dequant_block(r + s, b, nb);
        let w2 = dequant_block(r + 2u * s, b, nb);
        let w3 = dequant_block(r + 3u * s, b, nb);
        for (var tt = 0u; tt < tn; tt++) {
            let xb = x0 + tt * row4 + b * 8u;
            var s0 = 0.0;
            var s1 = 0.0;
            var s2 = 0.0;
            var s3 = 0.0;
            for (var k = 0u; k < 8u; k++) {
                let xv = x[xb + k];
                s0 += dot(w0[k], xv);
                s1 += dot(w1[k], xv);
                s2 += dot(w2[k], xv);
                s3 += dot(w3[k], xv);
            }
            acc0[tt] += s0;
            acc1[tt] += s1;
            acc2[tt] += s2;
            acc3[tt] += s3;
        }
    }
    for (var tt = 0u; tt < tn; tt++) {
        put(t0 + tt, o, acc0[tt]);
        put(t0 + tt, o + s, acc1[tt]);
        put(t0 + tt, o + 2u * s, acc2[tt]);
        put(t0 + tt, o + 3u * s, acc3[tt]);
    }
}
