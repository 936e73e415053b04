// GQA attention for one query token (decode), split over the context (flash-decoding):
// workgroup (chunk c, KV head g) scores the CHUNK positions of chunk c for the n_rep query
// heads that share KV head g. Each K and V row is read once, for all of those heads: the
// shared head is indexed, never repeated. The query heads come from a uniform (rotated by
// kv_store.wgsl), so they cost no memory traffic per position. Partial results (max m, sum l,
// unnormalised acc) go to `ml` and `acc` as in attention.wgsl; attention_reduce.wgsl
// combines the chunks.
// The pipeline is specialised for N_REP = n_heads / groups and HD4 = head_dim / 4: with
// constant trip counts every loop over heads and dimensions unrolls and the per-thread
// arrays stay in registers (a dynamically indexed array goes to memory, which a software
// rasteriser reads per invocation).
//   q: [H][hd]   kc, vc: [G][capacity][hd]   ml: [H][max_chunks] (m, l)
//   acc: [H][max_chunks][hd]
struct Params { n_heads: u32, groups: u32, head_dim: u32, capacity: u32, max_chunks: u32, scale: f32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<uniform> q: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> acc: array<vec4<f32>>;

override N_REP: u32 = 3u;
override HD4: u32 = 16u;
const CHUNK: u32 = 64u;
const MAX_REP: u32 = 16u;
const MAX_HD4: u32 = 32u;
// Scores of the chunk, then their exponentials: [r][j].
var<workgroup> e: array<f32, MAX_REP * CHUNK>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x;
    let g = wid.y;
    let hd4 = HD4;
    let n_rep = N_REP;
    let pos = step.pos0;                // the query's position: it sees 0..=pos
    let start = c * CHUNK;
    let n = select(0u, min(CHUNK, pos + 1u - start), start <= pos);
    let tid = lid.x;

    // 1. Scores: thread tid takes position start + tid and reads its K row once.
    if (tid < n) {
        let row = (g * p.capacity + start + tid) * hd4;
        var k: array<vec4<f32>, MAX_HD4>;
        for (var d = 0u; d < hd4; d++) {
            k[d] = kc[row + d];
        }
        for (var r = 0u; r < n_rep; r++) {
            let qrow = (g * n_rep + r) * hd4;
            var s = 0.0;
            for (var d = 0u; d < hd4; d++) {
                s += dot(q[qrow + d], k[d]);
            }
            e[r * CHUNK + tid] = s * p.scale;
        }
    }
    workgroupBarrier();

    // 2. Thread r (one per query head): max over the chunk, exponentials, their sum.
    if (tid < n_rep) {
        let base = tid * CHUNK;
        var m = -3.0e38;
        for (var j = 0u; j < n; j++) {
            m = max(m, e[base + j]);
        }
        var l = 0.0;
        for (var j = 0u; j < n; j++) {
            let x = exp(e[base + j] - m);
            e[base + j] = x;
            l += x;
        }
        let slot = (g * n_rep + tid) * p.max_chunks + c;
        ml[slot] = vec2<f32>(select(-3.0e38, m, n > 0u), l);
    }
    workgroupBarrier();

    // 3. Weighted V: thread d owns 4 dimensions of every head and reads each position's V
    //    slice once for all of them; the weights e[r][j] are the same for all these threads.
    let d = tid;
    if (d >= hd4) {
        return;
    }
    var a: array<vec4<f32>, MAX_REP>;
    for (var j = 0u; j < n; j++) {
        let v = vc[(g * p.capacity + start + j) * hd4 + d];
        for (var r = 0u; r < n_rep; r++) {
            a[r] += e[r * CHUNK + j] * v;
        }
    }
    for (var r = 0u; r < n_rep; r++) {
        let slot = (g * n_rep + r) * p.max_chunks + c;
        acc[slot * hd4 + d] = a[r];
    }
}
