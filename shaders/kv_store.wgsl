// KV-cache append with regrouping, and RoPE of K and q. The projections k0, v0 come from the
// checkpoint's native KV heads (G0); new KV head g is Σ_j pool[g][j] · native head j (the GQA
// paper's mean pooling — equal to pooling the weights, since the projection and RoPE are
// linear). K is then rotated (RoPE, adjacent pairs, angles from the host's table) and both are
// written at pos0 + t. The query heads are rotated in place, so attention reads them as they are.
//   k0, v0: [T][G0][hd]    pool: [G][G0]    rope: [capacity][hd/2] (cos, sin)
//   kc, vc: [G][capacity][hd]    q: [T][H][hd]
struct Params { groups: u32, native_groups: u32, head_dim: u32, capacity: u32, n_heads: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
// k0 and v0 are only read, but declared read_write: in decode they are parts of the buffer
// that also holds q (one matvec computes Q|K|V), and a buffer bound writable in a dispatch may
// not also be bound read-only.
@group(0) @binding(2) var<storage, read_write> k0: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> v0: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> pool: array<f32>;
@group(0) @binding(5) var<storage, read> rope: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> kc: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> vc: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read_write> q: array<vec2<f32>>;

fn rotate(v: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pairs = p.head_dim / 2u;
    let i = gid.x % pairs;
    let g = gid.x / pairs;
    let t = gid.y;
    if (g >= p.n_heads || t >= step.n_tokens) {
        return;
    }
    let pos = step.pos0 + t;
    let cs = rope[pos * pairs + i];
    let qi = (t * p.n_heads + g) * pairs + i; // g counts query heads here
    q[qi] = rotate(q[qi], cs);
    if (g >= p.groups) {
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
    let dst = (g * p.capacity + pos) * pairs + i;
    kc[dst] = rotate(k, cs);
    vc[dst] = v;
}
