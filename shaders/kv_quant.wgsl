// The q8_0 KV cache's writer: the forward's K and V rows, as kv_store.wgsl staged them in f32,
// become GGML Q8_0 blocks in the layer's cache (kv_q8_0.wgsl says how a row lies). Thread
// (t, g, b) makes block b of KV head g's row for token t: d = max|x| / 127, q = x / d rounded
// half away from zero (C's roundf, as ggml's quantize_row_q8_0_ref), its 32 quants as 8 u32;
// a thread of an even block also writes the scale word of its pair of blocks (its own d and
// the next block's, for which it computes only the scale). A block holding a NaN or an infinity reads back as NaN (scale NaN, quants
// 0), never as numbers. The CPU twin is model::KvType::Q8_0 (`kv_type.rs`).
//   ks, vs: [T][G][hd] f32 (staged)   kc, vc: [G][rows] rows of kv_row_words(hd/4) u32;
//   token t's row is (pos0 + t) mod rows (a sliding-window layer's ring).
struct Params { groups: u32, head_dim: u32, rows: u32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> ks: array<f32>;
@group(0) @binding(3) var<storage, read> vs: array<f32>;
@group(0) @binding(4) var<storage, read_write> kc: array<u32>;
@group(0) @binding(5) var<storage, read_write> vc: array<u32>;

const Q8_NAN: u32 = 0x7e00u; // an f16 NaN

// One block of 32 staged values from `src`: its scale d (NaN if a value is not finite) and
// its quants packed four to a u32.
struct Block { s: Scale, q: array<u32, 8> }

fn load(is_v: bool, i: u32) -> f32 {
    if (is_v) {
        return vs[i];
    }
    return ks[i];
}

// x / d as C's roundf rounds it: half away from zero (WGSL's round() takes halves to even).
fn round_away(y: f32) -> i32 {
    let r = trunc(y);
    return i32(select(round(y), r + sign(y), abs(y - r) == 0.5));
}

// A block's scale d = max|x| / 127 and whether all its values are finite.
struct Scale { d: f32, finite: bool }

fn scale(is_v: bool, src: u32) -> Scale {
    var amax = 0.0;
    var finite = true;
    for (var i = 0u; i < 32u; i++) {
        let x = load(is_v, src + i);
        amax = max(amax, abs(x));
        finite = finite && !non_finite(x);
    }
    return Scale(amax / 127.0, finite);
}

// The f16 bits of a block's scale, NaN for a block that is not finite.
fn scale_bits(s: Scale) -> u32 {
    return select(Q8_NAN, pack2x16float(vec2<f32>(s.d, 0.0)) & 0xffffu, s.finite);
}

fn block(is_v: bool, src: u32) -> Block {
    var b: Block;
    b.s = scale(is_v, src);
    let id = select(0.0, 1.0 / b.s.d, b.s.d != 0.0);
    for (var w = 0u; w < 8u; w++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let q = select(0, round_away(load(is_v, src + 4u * w + k) * id), b.s.finite);
            word |= (bitcast<u32>(q) & 0xffu) << (8u * k);
        }
        b.q[w] = word;
    }
    return b;
}

fn store(is_v: bool, i: u32, w: u32) {
    if (is_v) {
        vc[i] = w;
    } else {
        kc[i] = w;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hd4 = p.head_dim / 4u;
    let nb = p.head_dim / 32u;
    let bi = gid.x % nb;
    let g = gid.x / nb;
    let t = gid.y;
    if (g >= p.groups || t >= step.n_tokens) {
        return;
    }
    let src = (t * p.groups + g) * p.head_dim + 32u * bi;
    let base = (g * p.rows + (step.pos0 + t) % p.rows) * kv_row_words(hd4);
    for (var s = 0u; s < 2u; s++) {
        let is_v = s == 1u;
        let b = block(is_v, src);
        for (var w = 0u; w < 8u; w++) {
            store(is_v, base + 8u * bi + w, b.q[w]);
        }
        if (bi % 2u == 0u) {
            var hi = 0u;
            if (bi + 1u < nb) {
                hi = scale_bits(scale(is_v, src + 32u)); // the next block's scale only
            }
            store(is_v, base + hd4 + bi / 2u, scale_bits(b.s) | (hi << 16u));
        }
    }
}
