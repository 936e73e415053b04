// Dequantizing matrix-vector product for decode (one token):
//   y[o] (+)= Σ_i W[row0 + o][i] · x[i]      W: [rows][n_in] quantized, x: [n_in], y: [n_out]
// Each invocation computes ROWS weight rows, `s` rows apart (invocation i takes rows i, i + s,
// …; `row_stride` in quant.wgsl), and reads each x[i] once for all of them. x is a uniform:
// every invocation reads the same x[i] at the same time, which a GPU broadcasts; lavapipe
// loads it lane by lane (the offset is a loop counter's), which is why an x value serves
// ROWS rows. The quantized types fold their scales out of the inner sums: Σ (q·d + m)·x =
// d·Σ q·x + m·Σ x, per half block (16 weights) where the halves' scales differ (Q2_K, Q3_K,
// Q6_K), with the sums of x per block and per half computed once for the ROWS rows.
// `row0` selects a block of rows of a stacked tensor (Q|K|V, gate|up). `mode` (ProductMode
// in src/gpu/kernels.rs): MODE_STORE stores, MODE_ACCUMULATE adds to y (residual
// connections), MODE_SWIGLU is the SwiGLU of the feed-forward — the gate rows row0 + o and
// the up rows row0 + n_out + o of a stacked gate|up tensor in one pass (ROWS / 2 outputs per
// invocation):
//   y[o] = silu(W[row0 + o]·x) · W[row0 + n_out + o]·x
//
// The RMSNorm between a residual add and the next product is split over the two (no dispatch
// of its own). MODE_ACCUMULATE_FOR_NORM adds to y like MODE_ACCUMULATE and also writes
// xn[o] = γ[o] · y[o] and, per workgroup, Σ y[o]² over its outputs into parts[workgroup]. A
// product with `norm_parts` > 0 then reads xn as x and scales its sums by
// 1 / sqrt(Σ parts / n_in + eps): the same W · (γ ⊙ y / rms(y)), since the scale is one number.
//   γ, xn: [n_out]    parts: [⌈s / WG⌉]
struct Params {
    n_in: u32, n_out: u32, mode: u32, row0: u32,
    t_base: u32, t_count: u32, norm_parts: u32, eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// bindings 2, 3: the weight textures (quant.wgsl)
@group(0) @binding(4) var<uniform> x: array<vec4<f32>, 4096>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
// Only MODE_ACCUMULATE_FOR_NORM reads γ and writes xn; for the other modes the engine binds
// two ranges of one spare buffer there. (γ is only read, but declared read_write so that one
// buffer can stand in for both: a buffer bound writable may not also be bound read-only.)
@group(0) @binding(6) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> xn: array<f32>;
@group(0) @binding(8) var<storage, read_write> parts: array<f32>;

var<workgroup> sums: array<f32, WG>;

// Σ q·x over the block's two halves (weights 0..16, 16..32).
fn half_dots(q: array<vec4<f32>, 8>, xv: array<vec4<f32>, 8>) -> vec2<f32> {
    return vec2<f32>(dot(q[0], xv[0]) + dot(q[1], xv[1]) + dot(q[2], xv[2]) + dot(q[3], xv[3]),
        dot(q[4], xv[4]) + dot(q[5], xv[5]) + dot(q[6], xv[6]) + dot(q[7], xv[7]));
}

// Block b of row o (of nb blocks) · xv, the 32 matching values of x; xs their sum by lane,
// xh the sums of their halves.
fn block_dot(o: u32, b: u32, nb: u32, xv: array<vec4<f32>, 8>, xs: vec4<f32>, xh: vec2<f32>) -> f32 {
    let at = block_at(o, b, nb);
    switch (WTYPE) {
        case GGML_Q4_1: {
            let dm = unpack2x16float(wscale(at));
            let q = wtexel(at, 0u);
            let s = dot(nib_lo(q.x), xv[0]) + dot(nib_lo(q.y), xv[1])
                + dot(nib_lo(q.z), xv[2]) + dot(nib_lo(q.w), xv[3])
                + dot(nib_hi(q.x), xv[4]) + dot(nib_hi(q.y), xv[5])
                + dot(nib_hi(q.z), xv[6]) + dot(nib_hi(q.w), xv[7]);
            return s * dm.x + dot(xs, vec4<f32>(dm.y));
        }
        case GGML_Q8_0: {
            let d = unpack2x16float(wscale(at)).x;
            let q0 = wtexel(at, 0u);
            let q1 = wtexel(at, 1u);
            let s = dot(int8x4(q0.x), xv[0]) + dot(int8x4(q0.y), xv[1])
                + dot(int8x4(q0.z), xv[2]) + dot(int8x4(q0.w), xv[3])
                + dot(int8x4(q1.x), xv[4]) + dot(int8x4(q1.y), xv[5])
                + dot(int8x4(q1.z), xv[6]) + dot(int8x4(q1.w), xv[7]);
            return s * d;
        }
        case GGML_Q5_0: { // d·(Σ q·x − 16·Σ x)
            let s = wscales(at);
            let t = half_dots(quants(wtexel(at, 0u), s), xv);
            return (t.x + t.y - 16.0 * (xh.x + xh.y)) * unpack2x16float(s.x).x;
        }
        case GGML_Q5_1: { // d·Σ q·x + m·Σ x
            let s = wscales(at);
            let dm = unpack2x16float(s.x);
            let t = half_dots(quants(wtexel(at, 0u), s), xv);
            return (t.x + t.y) * dm.x + (xh.x + xh.y) * dm.y;
        }
        case GGML_Q4_K, GGML_Q5_K, GGML_Q2_K: { // per half: scale·Σ q·x − min·Σ x
            let q = wtexel(at, 0u);
            let s = block_scales(at);
            let ab = half_scales(q, s);
            return dot(half_dots(quants(q, s), xv), ab.xy) - dot(xh, ab.zw);
        }
        case GGML_Q6_K, GGML_Q3_K: { // per half: scale·(Σ q·x − offset·Σ x)
            let q = wtexel(at, 0u);
            let s = block_scales(at);
            let offset = select(4.0, 32.0, WTYPE == GGML_Q6_K);
            return dot(half_dots(quants(q, s), xv) - offset * xh, signed_scales(q, s));
        }
        default: {
            let w = dequant_block(o, b, nb);
            return dot(w[0], xv[0]) + dot(w[1], xv[1]) + dot(w[2], xv[2]) + dot(w[3], xv[3])
                + dot(w[4], xv[4]) + dot(w[5], xv[5]) + dot(w[6], xv[6]) + dot(w[7], xv[7]);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
    let i = gid.x;
    let s = row_stride(p.n_out, select(ROWS, ROWS / 2u, p.mode == MODE_SWIGLU));
    var ss = 0.0;
    if (i < s) {
        ss = rows(i, s);
    }
    if (p.mode == MODE_ACCUMULATE_FOR_NORM) {
        sums[li] = ss;
        workgroupBarrier();
        if (li == 0u) {
            var t = 0.0;
            for (var k = 0u; k < WG; k++) {
                t += sums[k];
            }
            parts[wid.x] = t;
        }
    }
}

// Invocation i's rows, written out; in MODE_ACCUMULATE_FOR_NORM returns Σ y[o]² over its outputs.
fn rows(i: u32, s: u32) -> f32 {
    let swiglu = p.mode == MODE_SWIGLU;
    // The weight rows: i + k·s, or for SwiGLU the gate rows i, i + s and the up rows
    // n_out + i, n_out + i + s.
    let r0 = p.row0 + i;
    let r2 = select(r0 + 2u * s, r0 + p.n_out, swiglu);
    let r = array<u32, 4>(r0, r0 + s, r2, r2 + s);
    let nb = p.n_in / 32u;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    for (var b = 0u; b < nb; b++) {
        let xb = b * 8u;
        let xv = array<vec4<f32>, 8>(x[xb], x[xb + 1u], x[xb + 2u], x[xb + 3u],
            x[xb + 4u], x[xb + 5u], x[xb + 6u], x[xb + 7u]);
        let lo = xv[0] + xv[1] + xv[2] + xv[3];
        let xs = lo + xv[4] + xv[5] + xv[6] + xv[7]; // in Q4_1's order, as before the halves
        let one = vec4<f32>(1.0);
        let xh = vec2<f32>(dot(lo, one), dot(xv[4] + xv[5] + xv[6] + xv[7], one));
        a0 += block_dot(r[0], b, nb, xv, xs, xh);
        a1 += block_dot(r[1], b, nb, xv, xs, xh);
        a2 += block_dot(r[2], b, nb, xv, xs, xh);
        a3 += block_dot(r[3], b, nb, xv, xs, xh);
    }
    var scale = 1.0;
    if (p.norm_parts > 0u) {
        var t = 0.0;
        for (var k = 0u; k < p.norm_parts; k++) {
            t += parts[k];
        }
        scale = 1.0 / sqrt(t / f32(p.n_in) + p.eps);
    }
    let acc = array<f32, 4>(a0 * scale, a1 * scale, a2 * scale, a3 * scale);
    if (swiglu) {
        for (var k = 0u; k < 2u; k++) {
            let o = i + k * s;
            if (o < p.n_out) {
                let g = acc[k];
                y[o] = g / (1.0 + exp(-g)) * acc[k + 2u];
            }
        }
        return 0.0;
    }
    var ss = 0.0;
    for (var k = 0u; k < ROWS; k++) {
        let o = i + k * s;
        if (o < p.n_out) {
            let v = select(0.0, y[o], p.mode != MODE_STORE) + acc[k];
            y[o] = v;
            if (p.mode == MODE_ACCUMULATE_FOR_NORM) {
                xn[o] = gamma[o] * v;
                ss += v * v;
            }
        }
    }
    return ss;
}
