// KV-cache append with regrouping, and RoPE of K and q. The projections k0, v0 come from the
// checkpoint's native KV heads (G0); the G heads of the cache are made from them by the
// layer's maps (src/model/regroup.rs is the CPU twin):
//   K: pair f of head g = Σ_j kmap[g][j][f] · k0_j,f   (complex; RoPE commutes with it)
//   V: pool mode   v_g = Σ_j vmap[g][j] · v0_j          (the GQA paper's mean pooling)
//      dense mode  v_g[d] = Σ_{j,e} vmap[g][d][j·hd + e] · v0_j[e]   (a calibrated merge)
//   q: pair f of query head h times qmap[h][f] (complex), when the merge has a q map.
// With a q map, slot f of a head may carry another native pair, slots[h][f] (the K slots of a
// calibrated merge, spent where the keys' energy is): K's slot f is Σ_j kmap[g][j][f] ·
// k0_j,slots[g][f] and q's is qmap[h][f] · q_h,slots[h][f], and both turn at that pair's angle.
// q is gathered in place, so every thread reads before any writes (a storage barrier; the host
// makes a workgroup hold whole heads when slots move pairs).
// K is then rotated (RoPE, adjacent pairs, angles from the host's table) and both are written
// at pos0 + t: row (pos0 + t) mod capacity, where a sliding-window layer's capacity is its ring
// (model::layer_cache_rows) and every other layer's exceeds every position; each pair as the
// cache's element type keeps it (kv_pack: kv_f32.wgsl, kv_f16.wgsl), or for a q8_0 cache
// (KV_STAGED) in f32 to the staging rows [T][G][hd] that kv_quant.wgsl makes blocks of. The
// query heads are rotated in place, so attention reads them as they are.
// The maps of every layer are in one buffer each: `layer` picks this op's q map, `group0` (the
// KV heads of the layers before it: l·G for one grouping, Σ_{m<l} G_m for one per layer) its K
// and V maps, and `layer`·H + `group0` its first row of slots.
//   k0, v0: [T][G0][hd]    kmap: [Σ G_l][G0][hd/2] (re, im)
//   vmap: [Σ G_l][G0] (pool) or [Σ G_l][hd][G0·hd] (dense)    qmap: [L][H][hd/2] (re, im)
//   slots: [Σ (H + G_l)][hd/2] u32, per layer its query heads' rows then its KV heads' (with a
//   q map)
//   rope: [capacity][hd/2] (cos, sin)    kc, vc: [G][capacity][hd] (staged: [T][G][hd])
//   q: [T][H][hd]
struct Params {
    groups: u32, native_groups: u32, head_dim: u32, capacity: u32,
    n_heads: u32, layer: u32, dense_v: u32, map_q: u32,
    group0: u32, _a: u32, _b: u32, _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
// k0 and v0 are only read, but declared read_write: in decode they are parts of the buffer
// that also holds q (one matvec computes Q|K|V), and a buffer bound writable in a dispatch may
// not also be bound read-only.
@group(0) @binding(2) var<storage, read_write> k0: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> v0: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> kmap: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> vmap: array<f32>;
@group(0) @binding(6) var<storage, read> qmap: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read> rope: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read_write> kc: array<KvPair>;
@group(0) @binding(9) var<storage, read_write> vc: array<KvPair>;
@group(0) @binding(10) var<storage, read_write> q: array<vec2<f32>>;
@group(0) @binding(11) var<storage, read> slots: array<u32>;

fn rotate(v: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x);
}

// Pair i of value head g for token t: pooled, or through the dense map.
fn value(g: u32, i: u32, t: u32) -> vec2<f32> {
    let pairs = p.head_dim / 2u;
    let g0 = p.native_groups;
    let src = t * g0 * pairs;
    var v = vec2<f32>(0.0);
    if (p.dense_v == 0u) {
        let base = p.group0 * g0;
        for (var j = 0u; j < g0; j++) {
            v += vmap[base + g * g0 + j] * v0[src + j * pairs + i];
        }
        return v;
    }
    let width = g0 * p.head_dim;
    let row = (p.group0 + g) * p.head_dim + 2u * i; // the map's row of dimension 2i
    for (var e = 0u; e < g0 * pairs; e++) {
        let x = v0[src + e];
        let a = row * width + 2u * e;
        v += vec2<f32>(vmap[a] * x.x + vmap[a + 1u] * x.y,
                       vmap[a + width] * x.x + vmap[a + width + 1u] * x.y);
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pairs = p.head_dim / 2u;
    let i = gid.x % pairs;
    let g = gid.x / pairs;
    let t = gid.y;
    let live = g < p.n_heads && t < step.n_tokens;
    let pos = step.pos0 + t;
    let slot_row = p.layer * p.n_heads + p.group0; // this layer's first row of `slots`
    let qi = (t * p.n_heads + g) * pairs + i; // g counts query heads here
    var fq = i; // the native pair query slot i carries
    var qv = vec2<f32>(0.0);
    if (live) {
        if (p.map_q != 0u) {
            fq = slots[(slot_row + g) * pairs + i];
        }
        qv = q[qi - i + fq];
    }
    if (p.map_q != 0u) {
        storageBarrier(); // every read of q before any write
    }
    if (!live) {
        return;
    }
    if (p.map_q != 0u) {
        qv = cmul(qmap[(p.layer * p.n_heads + g) * pairs + i], qv);
    }
    q[qi] = rotate(qv, rope[pos * pairs + fq]);
    if (g >= p.groups) {
        return;
    }
    var fk = i; // the native pair K slot i carries
    if (p.map_q != 0u) {
        fk = slots[(slot_row + p.n_heads + g) * pairs + i];
    }
    let g0 = p.native_groups;
    var k = vec2<f32>(0.0);
    for (var j = 0u; j < g0; j++) {
        let c = kmap[((p.group0 + g) * g0 + j) * pairs + i];
        k += cmul(c, k0[(t * g0 + j) * pairs + fk]);
    }
    let row = select(g * p.capacity + pos % p.capacity, t * p.groups + g, KV_STAGED);
    let dst = row * pairs + i;
    kc[dst] = kv_pack(rotate(k, rope[pos * pairs + fk]));
    vc[dst] = kv_pack(value(g, i, t));
}
