// The attention weights of one layer for the forward's last token, for the page's attention
// view: out[h][p] = softmax_p(scale · q_h · k_p) over positions p = first ..= pos (first = 0, or
// the start of a sliding window: earlier positions get 0), with k the rows
// of KV head g = the group holding query head h (`starts[g] <= h < starts[g + 1]`). Only run
// while the view is open (src/gpu/engine/probe.rs): the forward itself never needs the weights
// (attention_decode.wgsl keeps them in workgroup memory, chunk by chunk).
// Workgroup h scores head h: each of the WG threads takes every WG-th position, then the
// workgroup reduces the maximum and the sum. The CPU twin is cpu::ops::attention_weights.
//   q: [T][H][hd] (after the q map and RoPE: what attention reads)   kc: [G][capacity][hd]
//   starts: [G + 1]   out: [H][capacity]; position p's key is row p mod `rows` of kc (a
//   sliding-window layer's ring; kv_store.wgsl), read in the cache's element type (kv_*.wgsl):
//   the keys attention read.
struct Params { n_heads: u32, groups: u32, head_dim: u32, capacity: u32, scale: f32, window: u32, rows: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<KvCell>;
@group(0) @binding(4) var<storage, read> starts: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, WG>;

// The maximum (`is_max`) or the sum of every thread's `v`, in a fixed order.
fn reduce(v: f32, tid: u32, is_max: bool) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] = select(red[tid] + red[tid + s], max(red[tid], red[tid + s]), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wid.x;
    let tid = lid.x;
    var g = 0u;
    for (var i = 0u; i < p.groups; i++) {
        if (h >= starts[i]) {
            g = i;
        }
    }
    let t = step.n_tokens - 1u;
    let pos = step.pos0 + t;              // the last token's position: it sees 0 ..= pos
    let qrow = (t * p.n_heads + h) * p.head_dim;
    let orow = h * p.capacity;
    let first = window_start(pos, p.window);
    for (var j = tid; j < first; j += WG) {
        out[orow + j] = 0.0;
    }
    var m = -3.0e38;
    for (var j = first + tid; j <= pos; j += WG) {
        let krow = g * p.rows + j % p.rows;
        let hd4 = p.head_dim / 4u;
        var s = 0.0;
        for (var d = 0u; d < hd4; d++) {
            let at = qrow + 4u * d;
            s += dot(vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]), kc_slice(krow, hd4, d));
        }
        s *= p.scale;
        out[orow + j] = s;
        m = max(m, s);
    }
    m = reduce(m, tid, true);
    var l = 0.0;
    for (var j = first + tid; j <= pos; j += WG) {
        let e = exp(out[orow + j] - m);
        out[orow + j] = e;
        l += e;
    }
    l = reduce(l, tid, false);
    for (var j = first + tid; j <= pos; j += WG) {
        out[orow + j] /= l;
    }
}
