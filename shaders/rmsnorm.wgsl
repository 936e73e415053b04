// RMSNorm of each row: out[t] = x[t] / sqrt(mean(x[t]²) + eps) · weight, or with `add`
// out[t] += that (Gemma's norms after attention and the FFN, into the residual stream).
//   x, out: [T][dim]
// One workgroup per row. With `last_row_only`, only x's last row is normalised, into out's
// row 0 (what the output head's matvec.wgsl reads). WG = 32 threads: a row is a few hundred
// values, and on lavapipe each barrier of the reduction costs per batch of 8 threads (32
// threads take about half the time of 256 there; benches/README.md).
struct Params { dim: u32, eps: f32, last_row_only: u32, add: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    var row = wid.x;
    if (p.last_row_only != 0u) {
        row = step.n_tokens - 1u;
    }
    let base = row * p.dim;
    var ss = 0.0;
    for (var i = lid.x; i < p.dim; i += WG) {
        ss += x[base + i] * x[base + i];
    }
    partial[lid.x] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            partial[lid.x] += partial[lid.x + s];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(partial[0] / f32(p.dim) + p.eps);
    let dst = select(base, 0u, p.last_row_only != 0u);
    for (var i = lid.x; i < p.dim; i += WG) {
        let y = x[base + i] * scale * weight[i];
        out[dst + i] = select(y, out[dst + i] + y, p.add != 0u);
    }
}
