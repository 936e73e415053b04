// The KV cache kept as f32 (src/model/kv_type.rs): a row of hd values is hd/4 cells of
// vec4<f32>. kv_store.wgsl writes a pair of values per thread straight into its row.
// Included by the kernels that touch the cache (src/gpu/kernels.rs): the part above the
// `per buffer` line once, the part below it once for each cache buffer the kernel reads,
// with `kv_buf` renamed to that buffer.
alias KvCell = vec4<f32>;
alias KvPair = vec2<f32>;
const KV_STAGED: bool = false;
fn kv_pack(v: vec2<f32>) -> KvPair {
    return v;
}
// per buffer
// Values 4d .. 4d + 3 of row `row` (rows of hd4 · 4 values).
fn kv_buf_slice(row: u32, hd4: u32, d: u32) -> vec4<f32> {
    return kv_buf[row * hd4 + d];
}
