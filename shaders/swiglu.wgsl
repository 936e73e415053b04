// SwiGLU: gate[i] = silu(gate[i]) · up[i], element-wise over [T][ffn_dim]; with `gelu`
// GeGLU: gelu(gate[i]) · up[i], GELU's tanh approximation (Gemma; ops::geglu).
struct Params { ffn_dim: u32, gelu: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> gate: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= step.n_tokens * p.ffn_dim) {
        return;
    }
    let g = gate[i];
    if (p.gelu != 0u) {
        // tanh of a clamped argument: tanh(±10) is ±1 in f32, and no exp overflows.
        let inner = clamp(0.7978846 * (g + 0.044715 * g * g * g), -10.0, 10.0);
        gate[i] = 0.5 * g * (1.0 + tanh(inner)) * up[i];
        return;
    }
    gate[i] = g / (1.0 + exp(-g)) * up[i];
}
