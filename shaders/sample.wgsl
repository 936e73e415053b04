// Temperature / top-k / top-p sampling on the GPU, the twin of `sampling::sample`: one
// workgroup; thresholds found by a 32-step bitwise search over order-preserving keys, each
// step one reduction; then the token where the running sum of kept weights, in id order,
// passes u · Σ kept, with u = uniform(seed, step) from the same PCG hash as the host. A NaN
// or infinite logit makes the token NON_FINITE_TOKEN (the host reports non-finite values).
struct Sampling { vocab: u32, top_k: u32, top_p: f32, temperature: f32, seed: u32, step: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> s: Sampling;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> token: array<u32>;

var<workgroup> red: array<f32, WG>;
var<workgroup> shared_k: u32;
var<workgroup> bad: atomic<u32>;

fn order_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(~b, b | 0x80000000u, (b >> 31u) == 0u);
}

fn pcg_hash(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Σ over the workgroup of each invocation's `v`, returned to all.
fn sum_all(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (tid < w) {
            red[tid] += red[tid + w];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

fn max_all(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (tid < w) {
            red[tid] = max(red[tid], red[tid + w]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    return m;
}

var<private> m_logit: f32;
var<private> k_min: u32;

fn weight(i: u32) -> f32 {
    let l = logits[i];
    return select(0.0, exp((l - m_logit) / s.temperature), order_key(l) >= k_min);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let tid = lid.x;
    let n = s.vocab;
    var m = -3.4e38;
    for (var i = tid; i < n; i += WG) {
        m = max(m, logits[i]);
        if (non_finite(logits[i])) {
            atomicOr(&bad, 1u);
        }
    }
    m_logit = max_all(tid, m);

    // top-k: the largest key that at least top_k logits reach.
    k_min = 0u;
    if (s.top_k > 0u && s.top_k < n) {
        var k = 0u;
        for (var bit = 31i; bit >= 0i; bit--) {
            let cand = k | (1u << u32(bit));
            var c = 0.0;
            for (var i = tid; i < n; i += WG) {
                c += select(0.0, 1.0, order_key(logits[i]) >= cand);
            }
            if (sum_all(tid, c) >= f32(s.top_k)) {
                k = cand;
            }
        }
        k_min = k;
    }

    // top-p: the largest key whose kept mass still reaches top_p of the total.
    var cut = k_min;
    if (s.top_p < 1.0) {
        var z = 0.0;
        for (var i = tid; i < n; i += WG) {
            z += weight(i);
        }
        let goal = s.top_p * sum_all(tid, z);
        var k = 0u;
        for (var bit = 31i; bit >= 0i; bit--) {
            let cand = k | (1u << u32(bit));
            var c = 0.0;
            for (var i = tid; i < n; i += WG) {
                c += select(0.0, weight(i), order_key(logits[i]) >= cand);
            }
            if (sum_all(tid, c) >= goal) {
                k = cand;
            }
        }
        cut = k;
    }

    // Each invocation owns a contiguous run of ids; prefix sums of the runs find the one
    // holding r, which then walks its run in id order.
    let per = (n + WG - 1u) / WG;
    let lo = min(tid * per, n);
    let hi = min(lo + per, n);
    var mine = 0.0;
    var last_kept = 0xFFFFFFFFu;
    for (var i = lo; i < hi; i++) {
        if (order_key(logits[i]) >= cut) {
            let wi = weight(i);
            if (wi > 0.0) {
                mine += wi;
                last_kept = i;
            }
        }
    }
    red[tid] = mine;
    workgroupBarrier();
    var before = 0.0;
    var total = 0.0;
    for (var t = 0u; t < WG; t++) {
        before += select(0.0, red[t], t < tid);
        total += red[t];
    }
    workgroupBarrier();
    let u = f32(pcg_hash(s.seed ^ pcg_hash(s.step)) >> 8u) * (1.0 / 16777216.0);
    let r = u * total;
    // The fallback (rounding left r at or past the total): the last kept id.
    red[tid] = select(-1.0, f32(last_kept), last_kept != 0xFFFFFFFFu);
    workgroupBarrier();
    if (tid == 0u) {
        var fallback = 0.0;
        for (var t = 0u; t < WG; t++) {
            fallback = max(fallback, red[t]);
        }
        shared_k = u32(fallback);
    }
    workgroupBarrier();
    if (r >= before && r < before + mine) {
        var cum = before;
        for (var i = lo; i < hi; i++) {
            if (order_key(logits[i]) >= cut) {
                let wi = weight(i);
                if (wi > 0.0) {
                    cum += wi;
                    if (r < cum) {
                        shared_k = i;
                        break;
                    }
                }
            }
        }
    }
    workgroupBarrier();
    if (tid == 0u) {
        token[0] = select(shared_k, NON_FINITE_TOKEN, atomicLoad(&bad) != 0u);
    }
}
