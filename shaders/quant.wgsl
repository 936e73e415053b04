// Dequantization of the bound weight tensor `w` (GGUF blocks padded to whole words and
// interleaved by row: see src/gpu/layout.rs), selected by the pipeline constant WTYPE
// (ggml type ids). Block layouts: ggml-common.h.
override WTYPE: u32 = 3u;

fn words_per_block() -> u32 {
    switch (WTYPE) {
        case 2u, 3u: { return 5u; }   // Q4_0, Q4_1
        case 8u: { return 9u; }       // Q8_0
        case 1u, 30u: { return 16u; } // F16, BF16
        default: { return 32u; }      // F32
    }
}

// Word k of block b of row o, in a tensor of n_rows rows.
fn wword(o: u32, b: u32, k: u32, n_rows: u32) -> u32 {
    return w[(b * words_per_block() + k) * n_rows + o];
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
fn dequant_block(o: u32, b: u32, n_rows: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    switch (WTYPE) {
        case 3u: { // Q4_1: [d|m][4 words of nibbles]; value q·d + m
            let dm = unpack2x16float(wword(o, b, 0u, n_rows));
            for (var k = 0u; k < 4u; k++) {
                let v = wword(o, b, 1u + k, n_rows);
                out[k] = nib_lo(v) * dm.x + vec4<f32>(dm.y);
                out[k + 4u] = nib_hi(v) * dm.x + vec4<f32>(dm.y);
            }
        }
        case 2u: { // Q4_0: [d][4 words of nibbles]; value (q − 8)·d
            let d = unpack2x16float(wword(o, b, 0u, n_rows)).x;
            for (var k = 0u; k < 4u; k++) {
                let v = wword(o, b, 1u + k, n_rows);
                out[k] = (nib_lo(v) - vec4<f32>(8.0)) * d;
                out[k + 4u] = (nib_hi(v) - vec4<f32>(8.0)) * d;
            }
        }
        case 8u: { // Q8_0: [d][8 words of i8]; value q·d
            let d = unpack2x16float(wword(o, b, 0u, n_rows)).x;
            for (var k = 0u; k < 8u; k++) {
                out[k] = int8x4(wword(o, b, 1u + k, n_rows)) * d;
            }
        }
        case 1u: { // F16
            for (var k = 0u; k < 8u; k++) {
                out[k] = vec4<f32>(unpack2x16float(wword(o, b, 2u * k, n_rows)), unpack2x16float(wword(o, b, 2u * k + 1u, n_rows)));
            }
        }
        case 30u: { // BF16: the high half of an f32
            for (var k = 0u; k < 8u; k++) {
                let a = wword(o, b, 2u * k, n_rows);
                let c = wword(o, b, 2u * k + 1u, n_rows);
                out[k] = bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xFFFF0000u, c << 16u, c & 0xFFFF0000u));
            }
        }
        default: { // F32
            for (var k = 0u; k < 8u; k++) {
                out[k] = bitcast<vec4<f32>>(vec4<u32>(wword(o, b, 4u * k, n_rows), wword(o, b, 4u * k + 1u, n_rows), wword(o, b, 4u * k + 2u, n_rows), wword(o, b, 4u * k + 3u, n_rows)));
            }
        }
    }
    return out;
}
