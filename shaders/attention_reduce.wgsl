// Combines attention chunks: with M = max_c m_c, out = Σ_c acc_c · e^(m_c − M) / Σ_c l_c · e^(m_c − M).
//   ml: [T][H][max_chunks]   acc: [T][H][max_chunks][hd]   out: [T][H][hd]
struct Params { n_heads: u32, head_dim: u32, max_chunks: u32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> ml: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> acc: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wid.x;
    let t = wid.y;
    let row = t * p.n_heads + h;
    var m = -3.0e38;
    for (var c = 0u; c < step.n_chunks; c++) {
        m = max(m, ml[row * p.max_chunks + c].x);
    }
    var l = 0.0;
    for (var c = 0u; c < step.n_chunks; c++) {
        let v = ml[row * p.max_chunks + c];
        l += v.y * exp(v.x - m);
    }
    for (var d = lid.x; d < p.head_dim; d += 64u) {
        var a = 0.0;
        for (var c = 0u; c < step.n_chunks; c++) {
            let slot = row * p.max_chunks + c;
            a += acc[slot * p.head_dim + d] * exp(ml[slot].x - m);
        }
        out[row * p.head_dim + d] = a / l;
    }
}
