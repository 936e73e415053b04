// x[t][i] += bias[i] for every token t: the Q, K and V biases (Qwen2), added to each product
// right after it, before the head norms and the regroup maps (the CPU twin: ops::add_in_place
// on each row).   x: [T][n]   bias: [n]
struct Params { n: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= step.n_tokens * p.n) {
        return;
    }
    x[i] += bias[i % p.n];
}
