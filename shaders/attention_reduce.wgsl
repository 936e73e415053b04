// Combines attention chunks: with M = max_c m_c, out = Σ_c acc_c · e^(m_c − M) / Σ_c l_c · e^(m_c − M),
// and, when the layer's regrouping has an output map (a calibrated merge), maps each head's
// result: out_h[d] = Σ_e omap[h][d][e] · out_h[e] (src/model/regroup.rs, `map_o`).
// Workgroup (h, t) combines head h of token t with WG (8) threads: thread i owns the 4-dimension
// slices i, i + 8, … of the head. (Eight threads, not one per dimension: on a software
// rasteriser each lane's loads of m_c and l_c are made one by one, so fewer lanes per head
// cost less, and one head per workgroup spreads the heads over the CPU's threads; on a GPU
// the kernel is small either way.)
//   ml: [T][H][max_chunks]   acc: [T][H][max_chunks][hd]   out: [T][H][hd]
//   omap: [L][H][hd][hd]
struct Params { n_heads: u32, head_dim: u32, max_chunks: u32, map_o: u32, layer: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> ml: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> acc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> omap: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

// The head's combined result, for the output map.
var<workgroup> head: array<vec4<f32>, MAX_HD / 4u>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wid.x;
    let t = wid.y;
    let row = t * p.n_heads + h;
    let base = row * p.max_chunks;
    var m = -3.0e38;
    for (var c = 0u; c < step.n_chunks; c++) {
        m = max(m, ml[base + c].x);
    }
    var l = 0.0;
    for (var c = 0u; c < step.n_chunks; c++) {
        let v = ml[base + c];
        l += v.y * exp(v.x - m);
    }
    let hd4 = p.head_dim / 4u;
    for (var d = lid.x; d < hd4; d += WG) {
        var a = vec4<f32>(0.0);
        for (var c = 0u; c < step.n_chunks; c++) {
            a += acc[(base + c) * hd4 + d] * exp(ml[base + c].x - m);
        }
        head[d] = a / l;
        if (p.map_o == 0u) {
            out[row * hd4 + d] = a / l;
        }
    }
    if (p.map_o == 0u) {
        return;
    }
    workgroupBarrier();
    let rows = (p.layer * p.n_heads + h) * p.head_dim; // the map's first row for this head
    for (var d = lid.x; d < hd4; d += WG) {
        var o = vec4<f32>(0.0);
        for (var k = 0u; k < 4u; k++) {
            let r = (rows + 4u * d + k) * hd4;
            var s = 0.0;
            for (var e = 0u; e < hd4; e++) {
                s += dot(omap[r + e], head[e]);
            }
            o[k] = s;
        }
        out[row * hd4 + d] = o;
    }
}
