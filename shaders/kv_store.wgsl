// KV-cache append with regrouping and RoPE. The projections k0, v0 come from the checkpoint's
// native KV heads (G0); new KV head g is Σ_j pool[g][j] · native head j (the GQA paper's mean
// pooling — equal to pooling the weights, since the projection and RoPE are linear). K is then
// rotated (RoPE, adjacent pairs, angles from the host's table) and both are written at pos0 + t.
//   k0, v0: [T][G0][hd]    pool: [G][G0]    rope: [capacity][hd/2] (cos, sin)
//   kc, vc: [G][capacity][hd]
struct Params { groups: u32, native_groups: u32, head_dim: u32, capacity: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> k0: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> v0: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> pool: array<f32>;
@group(0) @binding(5) var<storage, read> rope: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> kc: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> vc: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pairs = p.head_dim / 2u;
    let i = gid.x % pairs;
    let g = gid.x / pairs;
    let t = gid.y;
    if (g >= p.groups || t >= step.n_tokens) {
        return;
    }
    var k = vec2<f32>(0.0);
    var v = vec2<f32>(0.0);
    for (var j = 0u; j < p.native_groups; j++) {
        let wj = pool[g * p.native_groups + j];
        let src = (t * p.native_groups + j) * pairs + i;
        k += wj * k0[src];
        v += wj * v0[src];
    }
    let pos = step.pos0 + t;
    let cs = rope[pos * pairs + i];
    let dst = (g * p.capacity + pos) * pairs + i;
    kc[dst] = vec2<f32>(k.x * cs.x - k.y * cs.y, k.x * cs.y + k.y * cs.x);
    vc[dst] = v;
}
