// Dequantization of the bound weight tensor, selected by the pipeline constant WTYPE (a ggml
// type id, GGML_* in the prelude). The tensor is two textures (src/gpu/layout.rs): `wq` holds
// each 32-weight block's quants as whole rgba32uint texels, `ws` its scale texel (r32uint,
// rg32uint or rgba32uint by type; none for float types, Q2_K and Q3_K). K-quants were repacked
// at upload into 32-weight blocks: nibbles in the legacy order, their scales multiplied out
// (see the table in layout.rs). Rows go in groups of LANES whose blocks are interleaved, so
// that neighbouring invocations read neighbouring texels and each walks its row in order;
// textures are WIDTH texels wide. Block layouts: ggml-common.h.
override WTYPE: u32 = GGML_Q4_1;

// Each is an array of layers of the same height (one layer unless the tensor is taller than
// the device's largest 2D texture): texel i lies at row i div WIDTH of the whole, so in layer
// row div height.
@group(0) @binding(2) var wq: texture_2d_array<u32>;
@group(0) @binding(3) var ws: texture_2d_array<u32>;

fn texels_per_block() -> u32 {
    switch (WTYPE) {
        case GGML_Q8_0: { return 2u; }             // 32 × i8
        case GGML_F16, GGML_BF16: { return 4u; }
        case GGML_F32: { return 8u; }
        default: { return 1u; }                    // 16 bytes of 4-bit (Q2_K, Q3_K: 2-bit) quants
    }
}

// The slot of block b of row o, for a tensor of nb blocks per row.
fn block_at(o: u32, b: u32, nb: u32) -> u32 {
    return ((o / LANES) * nb + b) * LANES + o % LANES;
}

// Invocations of a product kernel (matvec, matmul) that computes `per` of `outputs` outputs
// each, `s` apart: invocation i takes outputs i, i + s, …; s is a multiple of LANES, so that
// neighbouring invocations keep reading neighbouring texels (`product_invocations` in
// src/gpu/ops/product.rs).
fn row_stride(outputs: u32, per: u32) -> u32 {
    return ((outputs + per - 1u) / per + LANES - 1u) / LANES * LANES;
}

// Where texel i of a texture of `rows` rows per layer lies: (x, y, layer).
fn texel_at(i: u32, rows: u32) -> vec3<u32> {
    let r = i / WIDTH;
    return vec3<u32>(i % WIDTH, r % rows, r / rows);
}

// Texel j of the block in slot `at`.
fn wtexel(at: u32, j: u32) -> vec4<u32> {
    let l = at % LANES;
    let p = texel_at((at - l) * texels_per_block() + j * LANES + l, textureDimensions(wq).y);
    return textureLoad(wq, p.xy, p.z, 0);
}

// The block's scale texel (its first 1, 2 or 4 words are the type's).
fn wscales(at: u32) -> vec4<u32> {
    let p = texel_at(at, textureDimensions(ws).y);
    return textureLoad(ws, p.xy, p.z, 0);
}

// The block's scale word (types with one).
fn wscale(at: u32) -> u32 {
    return wscales(at).x;
}

// The low / high nibbles of a word's 4 bytes.
fn nib_lo(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u));
}
fn nib_hi(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u));
}

// A word's 4 bytes as signed 8-bit integers.
fn int8x4(v: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(vec4<u32>(v) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Fields 4k..4k+3 of a word of 2-bit fields (field j at bits 2j).
fn crumbs(v: u32, k: u32) -> vec4<u32> {
    return (vec4<u32>(v >> (8u * k)) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u);
}

// Bits 4k..4k+3 of a word.
fn bits4(v: u32, k: u32) -> vec4<u32> {
    return (vec4<u32>(v >> (4u * k)) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
}

// The nibbles at bits `shift` + 8i of a word's 4 bytes.
fn nibs(v: u32, shift: u32) -> vec4<u32> {
    return (vec4<u32>(v) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u);
}

// The unsigned quants of a block as integers in f32, weights 4k..4k+3 in element k, for the
// types repacked to nibbles (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) or 2-bit fields (Q2_K, Q3_K):
// `q` its payload texel, `s` its scale texel. Q5_*: nibble | fifth bit << 4; Q6_K: nibble |
// high 2 bits << 4; Q3_K: 2-bit field | high bit << 2.
fn quants(q: vec4<u32>, s: vec4<u32>) -> array<vec4<f32>, 8> {
    var u: array<vec4<u32>, 8>;
    if (WTYPE == GGML_Q2_K || WTYPE == GGML_Q3_K) {
        for (var k = 0u; k < 4u; k++) {
            u[k] = crumbs(q.x, k);
            u[k + 4u] = crumbs(q.y, k);
        }
        if (WTYPE == GGML_Q3_K) {
            for (var k = 0u; k < 8u; k++) {
                u[k] |= bits4(q.z, k) << vec4<u32>(2u);
            }
        }
    } else {
        for (var k = 0u; k < 4u; k++) {
            u[k] = nibs(q[k], 0u);
            u[k + 4u] = nibs(q[k], 4u);
        }
    }
    switch (WTYPE) {
        case GGML_Q5_0, GGML_Q5_1, GGML_Q5_K: {
            let h = select(s.y, s.z, WTYPE == GGML_Q5_K);
            for (var k = 0u; k < 8u; k++) {
                u[k] |= bits4(h, k) << vec4<u32>(4u);
            }
        }
        case GGML_Q6_K: {
            for (var k = 0u; k < 4u; k++) {
                u[k] |= crumbs(s.x, k) << vec4<u32>(4u);
                u[k + 4u] |= crumbs(s.y, k) << vec4<u32>(4u);
            }
        }
        default: {}
    }
    var out: array<vec4<f32>, 8>;
    for (var k = 0u; k < 8u; k++) {
        out[k] = vec4<f32>(u[k]);
    }
    return out;
}

// The scales and minima of a block's two halves (weights 0..16, 16..32) for the types that
// `quants` reads: value = q·a − b with a = (a₀, a₁), b = (b₀, b₁) in .xy and .zw. Products
// d·sc are the reader's (src/gguf/quant.rs): exact in f32.
fn half_scales(q: vec4<u32>, s: vec4<u32>) -> vec4<f32> {
    switch (WTYPE) {
        case GGML_Q4_K, GGML_Q5_K: {
            let dl = bitcast<f32>(s.x);
            let ml = bitcast<f32>(s.y);
            return vec4<f32>(dl, dl, ml, ml);
        }
        case GGML_Q2_K: { // two scale bytes (low nibble scale, high nibble min), d|dmin
            let dm = unpack2x16float(q.w);
            let sc = vec2<f32>(vec2<u32>(q.z, q.z >> 8u) & vec2<u32>(15u));
            let m = vec2<f32>(vec2<u32>(q.z >> 4u, q.z >> 12u) & vec2<u32>(15u));
            return vec4<f32>(dm.x * sc, dm.y * m);
        }
        default: { return vec4<f32>(); }
    }
}

// Q3_K's and Q6_K's scales of the block's two halves.
fn signed_scales(q: vec4<u32>, s: vec4<u32>) -> vec2<f32> {
    if (WTYPE == GGML_Q6_K) {
        return bitcast<vec2<f32>>(s.zw);
    }
    // Q3_K: d (f16) | s₀ + 32 | s₁ + 32
    let sc = vec2<i32>(vec2<u32>(q.w >> 16u, q.w >> 24u) & vec2<u32>(255u)) - vec2<i32>(32);
    return unpack2x16float(q.w).x * vec2<f32>(sc);
}

// The block's scale texel, for the types that have one.
fn block_scales(at: u32) -> vec4<u32> {
    switch (WTYPE) {
        case GGML_F32, GGML_F16, GGML_BF16, GGML_Q2_K, GGML_Q3_K: { return vec4<u32>(); }
        default: { return wscales(at); }
    }
}

// Block b of row o (32 weights) as 8 vec4s: weights 4k..4k+3 in element k.
fn dequant_block(o: u32, b: u32, nb: u32) -> array<vec4<f32>, 8> {
    let at = block_at(o, b, nb);
    var out: array<vec4<f32>, 8>;
    switch (WTYPE) {
        case GGML_Q4_1: { // value q·d + m, d|m in the scale word
            let dm = unpack2x16float(wscale(at));
            let q = wtexel(at, 0u);
            for (var k = 0u; k < 4u; k++) {
                out[k] = nib_lo(q[k]) * dm.x + vec4<f32>(dm.y);
                out[k + 4u] = nib_hi(q[k]) * dm.x + vec4<f32>(dm.y);
            }
        }
        case GGML_Q4_0: { // value (q − 8)·d
            let d = unpack2x16float(wscale(at)).x;
            let q = wtexel(at, 0u);
            for (var k = 0u; k < 4u; k++) {
                out[k] = (nib_lo(q[k]) - vec4<f32>(8.0)) * d;
                out[k + 4u] = (nib_hi(q[k]) - vec4<f32>(8.0)) * d;
            }
        }
        case GGML_Q8_0: { // value q·d
            let d = unpack2x16float(wscale(at)).x;
            for (var j = 0u; j < 2u; j++) {
                let q = wtexel(at, j);
                for (var k = 0u; k < 4u; k++) {
                    out[4u * j + k] = int8x4(q[k]) * d;
                }
            }
        }
        case GGML_Q5_0: { // value (q − 16)·d, d in the scale texel's first word
            let s = wscales(at);
            let d = unpack2x16float(s.x).x;
            let q = quants(wtexel(at, 0u), s);
            for (var k = 0u; k < 8u; k++) {
                out[k] = (q[k] - vec4<f32>(16.0)) * d;
            }
        }
        case GGML_Q5_1: { // value q·d + m
            let s = wscales(at);
            let dm = unpack2x16float(s.x);
            let q = quants(wtexel(at, 0u), s);
            for (var k = 0u; k < 8u; k++) {
                out[k] = q[k] * dm.x + vec4<f32>(dm.y);
            }
        }
        case GGML_Q4_K, GGML_Q5_K, GGML_Q2_K: { // value q·(d·sc) − dmin·m, per half
            let t = wtexel(at, 0u);
            let s = block_scales(at);
            let q = quants(t, s);
            let ab = half_scales(t, s);
            for (var k = 0u; k < 4u; k++) {
                out[k] = q[k] * ab.x - vec4<f32>(ab.z);
                out[k + 4u] = q[k + 4u] * ab.y - vec4<f32>(ab.w);
            }
        }
        case GGML_Q6_K, GGML_Q3_K: { // value (q − offset)·(d·sc), per half
            let t = wtexel(at, 0u);
            let s = block_scales(at);
            let q = quants(t, s);
            let a = signed_scales(t, s);
            let offset = vec4<f32>(select(4.0, 32.0, WTYPE == GGML_Q6_K));
            for (var k = 0u; k < 4u; k++) {
                out[k] = (q[k] - offset) * a.x;
                out[k + 4u] = (q[k + 4u] - offset) * a.y;
            }
        }
        case GGML_F16: { // 8 halves per texel
            for (var j = 0u; j < 4u; j++) {
                let q = wtexel(at, j);
                out[2u * j] = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
                out[2u * j + 1u] = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
            }
        }
        case GGML_BF16: { // the high half of an f32
            for (var j = 0u; j < 4u; j++) {
                let q = wtexel(at, j);
                out[2u * j] = bitcast<vec4<f32>>(vec4<u32>(q.x << 16u, q.x & 0xFFFF0000u, q.y << 16u, q.y & 0xFFFF0000u));
                out[2u * j + 1u] = bitcast<vec4<f32>>(vec4<u32>(q.z << 16u, q.z & 0xFFFF0000u, q.w << 16u, q.w & 0xFFFF0000u));
            }
        }
        default: { // GGML_F32
            for (var j = 0u; j < 8u; j++) {
                out[j] = bitcast<vec4<f32>>(wtexel(at, j));
            }
        }
    }
    return out;
}
