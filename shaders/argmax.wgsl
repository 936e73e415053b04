// Greedy sampling on the GPU: the index of the largest logit (the lowest index on ties),
// written to token[0] — or NON_FINITE_TOKEN if any logit is NaN or infinite, which the host
// reports as non-finite values. One workgroup; the only value the host reads back per decode step.
struct Params { vocab: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> token: array<u32>;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
var<workgroup> bad: atomic<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    var bv = -3.4e38;
    var bi = 0xFFFFFFFFu;
    for (var i = lid.x; i < p.vocab; i += WG) {
        let v = logits[i];
        if (non_finite(v)) {
            atomicOr(&bad, 1u);
        }
        if (v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[lid.x] = bv;
    best_i[lid.x] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            let ov = best_v[lid.x + s];
            let oi = best_i[lid.x + s];
            if (ov > best_v[lid.x] || (ov == best_v[lid.x] && oi < best_i[lid.x])) {
                best_v[lid.x] = ov;
                best_i[lid.x] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        token[0] = select(best_i[0], NON_FINITE_TOKEN, atomicLoad(&bad) != 0u);
    }
}
