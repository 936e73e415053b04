// Dequantizing matrix-vector product for decode (one token):
//   y[o] (+)= Σ_i W[row0 + o][i] · x[i]      W: [rows][n_in] quantized, x: [n_in], y: [n_out]
// One invocation per output row. x is read as a uniform: every invocation reads the same
// x[i] at the same time, which a GPU broadcasts and a software rasteriser loads once for all
// lanes (lavapipe turns storage reads into a per-invocation loop). Q4_1 and Q8_0 fold the
// scale out of the inner sum: Σ (q·d + m)·x = d·Σ q·x + m·Σ x.
// `row0` selects a block of rows of a stacked tensor (Q|K|V, gate|up). `mode`: 0 stores,
// 1 adds to y (residual connections), 2 is the SwiGLU of the feed-forward — the gate rows
// row0 + o and the up rows row0 + n_out + o of a stacked gate|up tensor in one pass:
//   y[o] = silu(W[row0 + o]·x) · W[row0 + n_out + o]·x
struct Params { n_in: u32, n_out: u32, mode: u32, row0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
// bindings 2, 3: the weight textures (quant.wgsl)
@group(0) @binding(4) var<uniform> x: array<vec4<f32>, 4096>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// W[o]·x for a row of nb blocks.
fn row_dot(o: u32, nb: u32) -> f32 {
    var acc = 0.0;
    for (var b = 0u; b < nb; b++) {
        let at = block_at(o, b, nb);
        let xb = b * 8u;
        switch (WTYPE) {
            case 3u: { // Q4_1
                let dm = unpack2x16float(wscale(at));
                let q = wtexel(at, 0u);
                let s = dot(nib_lo(q.x), x[xb]) + dot(nib_lo(q.y), x[xb + 1u])
                    + dot(nib_lo(q.z), x[xb + 2u]) + dot(nib_lo(q.w), x[xb + 3u])
                    + dot(nib_hi(q.x), x[xb + 4u]) + dot(nib_hi(q.y), x[xb + 5u])
                    + dot(nib_hi(q.z), x[xb + 6u]) + dot(nib_hi(q.w), x[xb + 7u]);
                let xs = x[xb] + x[xb + 1u] + x[xb + 2u] + x[xb + 3u]
                    + x[xb + 4u] + x[xb + 5u] + x[xb + 6u] + x[xb + 7u];
                acc += s * dm.x + dot(xs, vec4<f32>(dm.y));
            }
            case 8u: { // Q8_0
                let d = unpack2x16float(wscale(at)).x;
                let q0 = wtexel(at, 0u);
                let q1 = wtexel(at, 1u);
                let s = dot(int8x4(q0.x), x[xb]) + dot(int8x4(q0.y), x[xb + 1u])
                    + dot(int8x4(q0.z), x[xb + 2u]) + dot(int8x4(q0.w), x[xb + 3u])
                    + dot(int8x4(q1.x), x[xb + 4u]) + dot(int8x4(q1.y), x[xb + 5u])
                    + dot(int8x4(q1.z), x[xb + 6u]) + dot(int8x4(q1.w), x[xb + 7u]);
                acc += s * d;
            }
            default: {
                let w = dequant_block(o, b, nb);
                for (var k = 0u; k < 8u; k++) {
                    acc += dot(w[k], x[xb + k]);
                }
            }
        }
    }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    if (o >= p.n_out) {
        return;
    }
    let nb = p.n_in / 32u;
    let a = row_dot(p.row0 + o, nb);
    switch (p.mode) {
        case 1u: {
            y[o] += a;
        }
        case 2u: {
            let u = row_dot(p.row0 + p.n_out + o, nb);
            y[o] = a / (1.0 + exp(-a)) * u;
        }
        default: {
            y[o] = a;
        }
    }
}
