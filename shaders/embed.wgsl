// Embedding lookup: x[t] = scale · dequant(token_embd row tokens[t]).   x: [T][dim]
// (scale: 1, or √dim for Gemma.)
struct Params { dim: u32, scale: f32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
// bindings 2, 3: the weight textures (quant.wgsl)
@group(0) @binding(4) var<storage, read> tokens: array<u32>;
@group(0) @binding(5) var<storage, read_write> x: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    let t = gid.y;
    let nb = p.dim / 32u;
    if (b >= nb || t >= step.n_tokens) {
        return;
    }
    let blk = dequant_block(tokens[t], b, nb);
    for (var k = 0u; k < 8u; k++) {
        x[(t * p.dim + b * 32u) / 4u + k] = blk[k] * p.scale;
    }
}
