// GQA attention for one query token (decode), split over the context (flash-decoding):
// workgroup (chunk c, KV head g) scores the CHUNK positions of chunk c for the query heads
// that share KV head g: `starts[g] .. starts[g + 1]`, a contiguous run (groups may differ in
// size: src/model/grouping.rs). Each K and V row is read once, for all of those heads: the
// shared head is indexed, never repeated. The query heads come from a uniform (rotated by
// kv_store.wgsl), so they cost no memory traffic per position. Partial results (max m, sum l,
// unnormalised acc) go to `ml` and `acc` as in attention.wgsl; attention_reduce.wgsl
// combines the chunks.
// The pipeline is specialised for N_REP = the largest group and HD4 = head_dim / 4: with
// constant trip counts every loop over heads and dimensions unrolls and the per-thread
// arrays stay in registers (a dynamically indexed array goes to memory, which a software
// rasteriser reads per invocation).
// The kernel is shaped for what a software rasteriser does with it (Mesa's lavapipe, the
// engine's CPU-only path): there a load at an offset that is not a constant is made lane by
// lane, so what costs is the number of loads per SIMD batch of lanes, not bytes. Each thread
// of phase 1 therefore scores two positions per load of q, and phase 3 runs on 8 threads
// that each own every 8th slice of 4 dimensions (2 at head_dim 64), so that the shared
// weights e[r][j] are loaded by one batch of lanes instead of two. On a real GPU the kernel
// reads the same bytes.
// Position p's K and V are row p mod capacity (a sliding-window layer's ring; kv_store.wgsl),
// read 4 values at a time by kc_slice and vc_slice in the cache's element type (kv_*.wgsl).
//   q: [H][hd]   kc, vc: [G][capacity][hd]   ml: [H][max_chunks] (m, l)
//   acc: [H][max_chunks][hd]   starts: [G + 1]
// With `window` > 0 (a sliding-window layer) the query sees only pos + 1 − window ..= pos.
struct Params { n_heads: u32, groups: u32, head_dim: u32, capacity: u32, max_chunks: u32, scale: f32, window: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<uniform> q: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read> kc: array<KvCell>;
@group(0) @binding(4) var<storage, read> vc: array<KvCell>;
@group(0) @binding(5) var<storage, read_write> ml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> acc: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> starts: array<u32>;

override N_REP: u32 = 3u;
override HD4: u32 = 16u;
const MAX_HD4: u32 = MAX_HD / 4u;
// Scores of the chunk, then their exponentials: [r][j].
var<workgroup> e: array<f32, MAX_REP * CHUNK>;

// Each of the WG threads scores two positions of the chunk.
const_assert CHUNK == 2u * WG;
const V_THREADS: u32 = 8u; // threads of phase 3; thread t owns slices t, t + 8, … of hd4
const MAX_SLOTS: u32 = MAX_HD4 / V_THREADS;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x;
    let g = wid.y;
    let hd4 = HD4;
    let n_rep = N_REP;
    let first = starts[g];                // the group's query heads: first .. first + count
    let count = starts[g + 1u] - first;
    let pos = step.pos0;                // the query's position: it sees 0..=pos
    let start = c * CHUNK;
    let n = select(0u, min(CHUNK, pos + 1u - start), start <= pos);
    // Positions of the chunk before the window are skipped: j in lo..n.
    let lo = min(n, select(0u, window_start(pos, p.window) - start, window_start(pos, p.window) > start));
    let tid = lid.x;

    // 1. Scores: thread tid takes positions start + tid and start + tid + WG, reads their K
    //    rows once, and each q slice once for both.
    let j1 = tid + WG;
    if (tid < n) {
        let row0 = g * p.capacity + (start + tid) % p.capacity;
        // Past the chunk's end the second row is the first again (scored, never stored).
        let row1 = select(row0, g * p.capacity + (start + j1) % p.capacity, j1 < n);
        var k0: array<vec4<f32>, MAX_HD4>;
        var k1: array<vec4<f32>, MAX_HD4>;
        for (var d = 0u; d < hd4; d++) {
            k0[d] = kc_slice(row0, hd4, d);
            k1[d] = kc_slice(row1, hd4, d);
        }
        for (var r = 0u; r < n_rep; r++) {
            let qrow = (first + min(r, count - 1u)) * hd4;
            var s0 = 0.0;
            var s1 = 0.0;
            for (var d = 0u; d < hd4; d++) {
                let qd = q[qrow + d];
                s0 += dot(qd, k0[d]);
                s1 += dot(qd, k1[d]);
            }
            e[r * CHUNK + tid] = s0 * p.scale;
            if (j1 < n) {
                e[r * CHUNK + j1] = s1 * p.scale;
            }
        }
    }
    workgroupBarrier();

    // 2. Thread r (one per query head): max over the chunk, exponentials, their sum.
    if (tid < count) {
        let base = tid * CHUNK;
        var m = -3.0e38;
        for (var j = lo; j < n; j++) {
            m = max(m, e[base + j]);
        }
        var l = 0.0;
        for (var j = lo; j < n; j++) {
            let x = exp(e[base + j] - m);
            e[base + j] = x;
            l += x;
        }
        let slot = (first + tid) * p.max_chunks + c;
        ml[slot] = vec2<f32>(select(-3.0e38, m, n > lo), l);
    }
    workgroupBarrier();

    // 3. Weighted V: thread t owns the 4-dimension slices t, t + 8, … of every head and reads
    //    each position's V slices once for all of them; each weight e[r][j] is loaded once
    //    per position for all the slices.
    if (tid >= V_THREADS) {
        return;
    }
    let slots = (HD4 + V_THREADS - 1u) / V_THREADS;  // a constant, so the slot loops unroll
    var a: array<vec4<f32>, MAX_REP * MAX_SLOTS>;  // [r][slot]
    var w: array<f32, MAX_REP>;
    for (var j = lo; j < n; j++) {
        for (var r = 0u; r < n_rep; r++) {
            w[r] = e[r * CHUNK + j];
        }
        let vrow = g * p.capacity + (start + j) % p.capacity;
        for (var s = 0u; s < slots; s++) {
            let d = s * V_THREADS + tid;
            if (d < hd4) {
                let v = vc_slice(vrow, hd4, d);
                for (var r = 0u; r < n_rep; r++) {
                    a[r * MAX_SLOTS + s] += w[r] * v;
                }
            }
        }
    }
    for (var s = 0u; s < slots; s++) {
        let d = s * V_THREADS + tid;
        if (d < hd4) {
            for (var r = 0u; r < n_rep; r++) {
                if (r < count) {
                    let slot = (first + r) * p.max_chunks + c;
                    acc[slot * hd4 + d] = a[r * MAX_SLOTS + s];
                }
            }
        }
    }
}
