// GQA attention, split over the context (flash-decoding): workgroup (chunk c, KV head g,
// query token t) scores the CHUNK positions of chunk c for all query heads that share KV head
// g: `starts[g] .. starts[g + 1]`, a contiguous run (groups may differ in size). Each K and V row is read once for all of them: the shared head is indexed, never
// repeated. Query heads arrive rotated (kv_store.wgsl). Partial results (max m, sum l,
// unnormalised acc) go to `ml` and `acc`; attention_reduce.wgsl combines the chunks.
// This kernel serves prefill (T query tokens); decode uses attention_decode.wgsl.
// Position p's K and V are row p mod capacity (a sliding-window layer's ring; kv_store.wgsl),
// read 4 values at a time by kc_slice and vc_slice in the cache's element type (kv_*.wgsl).
//   q: [T][H][hd]   kc, vc: [G][capacity][hd]
//   ml: [T][H][n_chunks] (m, l)   acc: [T][H][n_chunks][hd]   starts: [G + 1]
// With `window` > 0 (a sliding-window layer) the query at pos sees only pos + 1 − window ..= pos.
struct Params { n_heads: u32, groups: u32, head_dim: u32, capacity: u32, max_chunks: u32, scale: f32, window: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<KvCell>;
@group(0) @binding(4) var<storage, read> vc: array<KvCell>;
@group(0) @binding(5) var<storage, read_write> ml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> acc: array<f32>;
@group(0) @binding(7) var<storage, read> starts: array<u32>;

// One thread per position of a chunk.
const_assert CHUNK == WG;
var<workgroup> qs: array<f32, MAX_REP * MAX_HD>;
var<workgroup> e: array<f32, MAX_REP * CHUNK>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x;
    let g = wid.y;
    let t = wid.z;
    let hd = p.head_dim;
    let first = starts[g];
    let n_rep = starts[g + 1u] - first;
    let pos = step.pos0 + t;           // this query's position: it sees 0..=pos
    let start = c * CHUNK;
    let n = select(0u, min(CHUNK, pos + 1u - start), start <= pos);
    // Positions of the chunk before the window are skipped: j in lo..n.
    let lo = min(n, select(0u, window_start(pos, p.window) - start, window_start(pos, p.window) > start));
    let tid = lid.x;

    // Load the n_rep query heads that read KV head g.
    for (var r = 0u; r < n_rep; r++) {
        let h = first + r;
        for (var d = tid; d < hd; d += WG) {
            qs[r * hd + d] = q[(t * p.n_heads + h) * hd + d];
        }
    }
    workgroupBarrier();

    // Scores: thread tid takes position start + tid, one K row for all n_rep heads.
    let hd4 = hd / 4u;
    if (tid < n) {
        let krow = g * p.capacity + (start + tid) % p.capacity;
        for (var r = 0u; r < n_rep; r++) {
            var s = 0.0;
            for (var d = 0u; d < hd4; d++) {
                let k = kc_slice(krow, hd4, d);
                let at = r * hd + 4u * d;
                s += dot(vec4<f32>(qs[at], qs[at + 1u], qs[at + 2u], qs[at + 3u]), k);
            }
            e[r * CHUNK + tid] = s * p.scale;
        }
    }
    workgroupBarrier();

    // Per head: max over the chunk, then exponentials (each thread one position).
    for (var r = 0u; r < n_rep; r++) {
        var m = -3.0e38;
        for (var j = lo; j < n; j++) {
            m = max(m, e[r * CHUNK + j]);
        }
        workgroupBarrier();
        if (tid >= lo && tid < n) {
            e[r * CHUNK + tid] = exp(e[r * CHUNK + tid] - m);
        }
        workgroupBarrier();
        var l = 0.0;
        for (var j = lo; j < n; j++) {
            l += e[r * CHUNK + j];
        }
        let h = first + r;
        let slot = (t * p.n_heads + h) * p.max_chunks + c;
        if (tid == 0u) {
            ml[slot] = vec2<f32>(select(-3.0e38, m, n > lo), l);
        }
        // Weighted V: thread tid owns dimension d, reading V rows once for this chunk.
        for (var d = tid; d < hd; d += WG) {
            var a = 0.0;
            for (var j = lo; j < n; j++) {
                let v = vc_slice(g * p.capacity + (start + j) % p.capacity, hd4, d / 4u);
                a += e[r * CHUNK + j] * v[d % 4u];
            }
            acc[slot * hd + d] = a;
        }
    }
}
