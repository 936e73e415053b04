// Dequantization of the bound weight tensor, selected by the pipeline constant WTYPE (a ggml
// type id, GGML_* in the prelude). The tensor is two textures (src/gpu/layout.rs): `wq` holds each 32-weight
// block's quants as whole rgba32uint texels, `ws` its scale word. Rows go in groups of LANES
// whose blocks are interleaved, so that neighbouring invocations read neighbouring texels and
// each walks its row in order; textures are WIDTH texels wide. Block layouts: ggml-common.h.
override WTYPE: u32 = GGML_Q4_1;

@group(0) @binding(2) var wq: texture_2d<u32>;
@group(0) @binding(3) var ws: texture_2d<u32>;

fn texels_per_block() -> u32 {
    switch (WTYPE) {
        case GGML_Q4_0, GGML_Q4_1: { return 1u; }  // 16 bytes of nibbles
        case GGML_Q8_0: { return 2u; }             // 32 × i8
        case GGML_F16, GGML_BF16: { return 4u; }
        default: { return 8u; }                    // GGML_F32
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

// Where texel i of a texture lies.
fn texel_xy(i: u32) -> vec2<u32> {
    return vec2<u32>(i % WIDTH, i / WIDTH);
}

// Texel j of the block in slot `at`.
fn wtexel(at: u32, j: u32) -> vec4<u32> {
    let l = at % LANES;
    return textureLoad(wq, texel_xy((at - l) * texels_per_block() + j * LANES + l), 0);
}

// The block's scale word.
fn wscale(at: u32) -> u32 {
    return textureLoad(ws, texel_xy(at), 0).x;
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
