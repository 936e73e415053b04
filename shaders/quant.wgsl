// Dequantization of one 32-weight block of the bound weight tensor `w` (raw GGUF bytes as
// u32 words), selected by the pipeline constant WTYPE (ggml type ids). Layouts: ggml-common.h.
override WTYPE: u32 = 3u;

const T_F32: u32 = 0u;
const T_F16: u32 = 1u;
const T_Q4_0: u32 = 2u;
const T_Q4_1: u32 = 3u;
const T_Q8_0: u32 = 8u;
const T_BF16: u32 = 30u;

// The 4 bytes starting at an even byte offset (tensors start 4-byte aligned).
fn word_at_even(byte: u32) -> u32 {
    let i = byte >> 2u;
    if ((byte & 3u) == 0u) {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

// The f16 at an even byte offset, as f32.
fn f16_at(byte: u32) -> f32 {
    let v = unpack2x16float(w[byte >> 2u]);
    return select(v.x, v.y, (byte & 3u) != 0u);
}

// Weights 4k..4k+3 of a block whose 16 nibble bytes start at `qs` (even byte offset):
// low nibbles are weights 0..15, high nibbles 16..31.
fn nibbles(qs: u32, k: u32) -> vec4<f32> {
    let word = word_at_even(qs + ((k & 3u) << 2u));
    let shift = select(0u, 4u, k >= 4u);
    let q = (vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u) >> vec4<u32>(shift)) & vec4<u32>(15u);
    return vec4<f32>(q);
}

// Block `blk` (32 weights) as 8 vec4s.
fn dequant_block(blk: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    switch (WTYPE) {
        case 3u: { // Q4_1: d f16, m f16, 16 bytes of nibbles (20 bytes, word aligned)
            let base = blk * 5u;
            let dm = unpack2x16float(w[base]);
            for (var k = 0u; k < 8u; k++) {
                out[k] = nibbles(base * 4u + 4u, k) * dm.x + vec4<f32>(dm.y);
            }
        }
        case 8u: { // Q8_0: d f16, 32 × i8 (34 bytes)
            let base = blk * 34u;
            let d = f16_at(base);
            for (var k = 0u; k < 8u; k++) {
                let v = word_at_even(base + 2u + 4u * k);
                let q = vec4<i32>(i32(v << 24u), i32(v << 16u), i32(v << 8u), i32(v)) >> vec4<u32>(24u);
                out[k] = vec4<f32>(q) * d;
            }
        }
        case 2u: { // Q4_0: d f16, 16 bytes of nibbles (18 bytes); value (q - 8)·d
            let base = blk * 18u;
            let d = f16_at(base);
            for (var k = 0u; k < 8u; k++) {
                out[k] = (nibbles(base + 2u, k) - vec4<f32>(8.0)) * d;
            }
        }
        case 1u: { // F16
            let base = blk * 16u;
            for (var k = 0u; k < 8u; k++) {
                out[k] = vec4<f32>(unpack2x16float(w[base + 2u * k]), unpack2x16float(w[base + 2u * k + 1u]));
            }
        }
        case 30u: { // BF16: the high 16 bits of an f32
            let base = blk * 16u;
            for (var k = 0u; k < 8u; k++) {
                let a = w[base + 2u * k];
                let b = w[base + 2u * k + 1u];
                out[k] = bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xFFFF0000u, b << 16u, b & 0xFFFF0000u));
            }
        }
        default: { // F32
            let base = blk * 32u;
            for (var k = 0u; k < 8u; k++) {
                out[k] = bitcast<vec4<f32>>(vec4<u32>(w[base + 4u * k], w[base + 4u * k + 1u], w[base + 4u * k + 2u], w[base + 4u * k + 3u]));
            }
        }
    }
    return out;
}
