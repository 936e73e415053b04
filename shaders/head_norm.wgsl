// RMSNorm of each head, in place: x[t][h] = x[t][h] / sqrt(mean(x[t][h]²) + eps) · weight —
// Gemma's norm of every query and key head before RoPE (the CPU twin: ops::rmsnorm with a
// [head_dim] weight). One workgroup per (head h, token t), as rmsnorm.wgsl does per row.
//   x: [T][heads][head_dim]   weight: [head_dim]
struct Params { heads: u32, head_dim: u32, eps: f32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wid.x;
    let t = wid.y;
    if (t >= step.n_tokens) {
        return;
    }
    let base = (t * p.heads + h) * p.head_dim;
    var ss = 0.0;
    for (var i = lid.x; i < p.head_dim; i += WG) {
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
    let scale = 1.0 / sqrt(partial[0] / f32(p.head_dim) + p.eps);
    for (var i = lid.x; i < p.head_dim; i += WG) {
        x[base + i] = x[base + i] * scale * weight[i];
    }
}
