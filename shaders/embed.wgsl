// Embedding lookup: x[t] = dequant(token_embd row tokens[t]).   x: [T][dim]
struct Params { dim: u32, vocab: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    let t = gid.y;
    if (b >= p.dim / 32u || t >= step.n_tokens) {
        return;
    }
    let blk = dequant_block(tokens[t], b, p.vocab);
    for (var k = 0u; k < 8u; k++) {
        x[(t * p.dim + b * 32u) / 4u + k] = blk[k];
    }
}
