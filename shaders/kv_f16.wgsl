// The KV cache kept as f16 (src/model/kv_type.rs): a row of hd values is hd/4 cells of two
// u32, each two binary16 values as pack2x16float writes them (no `shader-f16` feature needed).
// kv_store.wgsl writes a pair of values per thread, one u32, straight into its row. A value
// past ±65504 has no f16: WGSL leaves its packing undefined (the CPU twin gives ±∞).
// Included by the kernels that touch the cache (src/gpu/kernels.rs): the part above the
// `per buffer` line once, the part below it once for each cache buffer the kernel reads,
// with `kv_buf` renamed to that buffer.
alias KvCell = vec2<u32>;
alias KvPair = u32;
const KV_STAGED: bool = false;
fn kv_pack(v: vec2<f32>) -> KvPair {
    return pack2x16float(v);
}
// per buffer
// Values 4d .. 4d + 3 of row `row` (rows of hd4 · 4 values).
fn kv_buf_slice(row: u32, hd4: u32, d: u32) -> vec4<f32> {
    let c = kv_buf[row * hd4 + d];
    return vec4<f32>(unpack2x16float(c.x), unpack2x16float(c.y));
}
