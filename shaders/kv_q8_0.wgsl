// The KV cache kept as GGML's Q8_0 (src/model/kv_type.rs): blocks of 32 values, 32 × i8 and
// an f16 scale d. A row of hd values is hd/4 u32 of quants (value 4d + k in byte k of word
// d), then the row's hd/32 scales, two f16 to a u32 (pack2x16float): 34 bytes a block, as
// GGML's block_q8_0, where a row has an even number of blocks. kv_store.wgsl writes its f32
// pairs to a staging buffer (`[T][G][hd]`), and kv_quant.wgsl makes the blocks from it.
// Included by the kernels that touch the cache (src/gpu/kernels.rs): the part above the
// `per buffer` line once, the part below it once for each cache buffer the kernel reads,
// with `kv_buf` renamed to that buffer.
alias KvCell = u32;
alias KvPair = vec2<f32>;
const KV_STAGED: bool = true;
fn kv_pack(v: vec2<f32>) -> KvPair {
    return v;
}
// u32 per row of hd4 · 4 values: the quants, then the scales.
fn kv_row_words(hd4: u32) -> u32 {
    return hd4 + (hd4 / 8u + 1u) / 2u;
}
// per buffer
// Values 4d .. 4d + 3 of row `row`: the quants times their block's scale.
fn kv_buf_slice(row: u32, hd4: u32, d: u32) -> vec4<f32> {
    let base = row * kv_row_words(hd4);
    let w = kv_buf[base + d];
    let s = unpack2x16float(kv_buf[base + hd4 + d / 16u])[(d / 8u) % 2u];
    let q = vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u), bitcast<i32>(w << 8u), bitcast<i32>(w)) >> vec4<u32>(24u);
    return vec4<f32>(q) * s;
}
