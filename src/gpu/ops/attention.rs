//! Attention: the KV-cache append with regrouping and RoPE (kv_store.wgsl; for a q8_0 cache,
//! then its blocks made by kv_quant.wgsl), GQA attention
//! split over the context (attention.wgsl for a prefill chunk, attention_decode.wgsl for one
//! token) and the reduction of its chunks (attention_reduce.wgsl).

use super::{params_struct, Grid, OpSpec, Pass};
use crate::gpu::context::Buf;
use crate::gpu::kernels::{Kernel, Variant};
use crate::model::KvType;

params_struct! {
    /// `Params` of kv_store.wgsl.
    KvStoreParams = "Params" for [KvStore] {
        /// KV heads after regrouping (G).
        groups: u32,
        /// The checkpoint's KV heads (G0): k0 and v0 hold these.
        native_groups: u32,
        head_dim: u32,
        capacity: u32,
        n_heads: u32,
        /// Which layer's q map to read.
        layer: u32,
        /// 1: the V map is dense (`[G][hd][G0·hd]` per layer), 0: pooling weights (`[G][G0]`).
        dense_v: u32,
        /// 1: multiply the query pairs by the layer's q map.
        map_q: u32,
        /// KV heads of the layers before this one: where its K and V maps start.
        group0: u32,
        _a: u32,
        _b: u32,
        _c: u32,
    }
}

params_struct! {
    /// `Params` of kv_quant.wgsl.
    KvQuantParams = "Params" for [KvQuant] {
        groups: u32,
        head_dim: u32,
        /// Rows per KV head of the layer's cache (token t's row is (pos0 + t) mod rows).
        rows: u32,
        _pad: u32,
    }
}

params_struct! {
    /// `Params` of attention.wgsl and attention_decode.wgsl.
    AttentionParams = "Params" for [Attention, AttentionDecode] {
        n_heads: u32,
        groups: u32,
        head_dim: u32,
        capacity: u32,
        max_chunks: u32,
        scale: f32,
        /// Sliding-window length of the layer (0: every earlier position is seen).
        window: u32,
        _pad: u32,
    }
}

params_struct! {
    /// `Params` of attention_reduce.wgsl.
    ReduceParams = "Params" for [AttentionReduce] {
        n_heads: u32,
        head_dim: u32,
        max_chunks: u32,
        /// 1: map each head's result through the layer's output map.
        map_o: u32,
        layer: u32,
        _pad: [u32; 3],
    }
}

params_struct! {
    /// `Params` of attention_probe.wgsl.
    ProbeParams = "Params" for [AttentionProbe] {
        n_heads: u32,
        groups: u32,
        head_dim: u32,
        capacity: u32,
        scale: f32,
        /// Sliding-window length of the layer (0: none); positions before it get 0.
        window: u32,
        /// Rows per KV head of the layer's cache (position p in row p mod rows).
        rows: u32,
        _pad: u32,
    }
}

/// What kv_store.wgsl reads and writes. k0, v0: `[T][G0][hd]`, the native heads' projections;
/// the maps of every layer (`model/regroup.rs`): kmap `[L][G][G0][hd/2]` complex, vmap
/// `[L][G][G0]` or `[L][G][hd][G0·hd]`, qmap `[L][H][hd/2]` complex (any buffer when unused);
/// rope: `[capacity][hd/2]` (cos, sin); kc, vc: `[G][capacity][hd]` in the cache's element
/// type, or for a q8_0 cache the f32 staging rows `[T][G][hd]` (kv_quant.wgsl makes the
/// blocks); q: `[T][H][hd]`, rotated in place; slots: `[L][H + G][hd/2]` u32, the native pair
/// each slot carries (read with the q map).
pub struct KvStoreBinds<'a> {
    pub k0: wgpu::BindingResource<'a>,
    pub v0: wgpu::BindingResource<'a>,
    pub kmap: &'a Buf,
    pub vmap: &'a Buf,
    pub qmap: &'a Buf,
    pub rope: &'a Buf,
    pub kc: &'a Buf,
    pub vc: &'a Buf,
    pub q: wgpu::BindingResource<'a>,
    pub slots: &'a Buf,
}

/// kv_store.wgsl: pools the native heads' K and V to the G heads, rotates K and q (RoPE) and
/// appends K and V to a cache of type `kv` at the forward's positions (a q8_0 cache: to the
/// staging rows).
pub fn kv_store<'a>(p: KvStoreParams, b: KvStoreBinds<'a>, kv: KvType) -> OpSpec<'a> {
    let resources = vec![
        b.k0,
        b.v0,
        b.kmap.binding(),
        b.vmap.binding(),
        b.qmap.binding(),
        b.rope.binding(),
        b.kc.binding(),
        b.vc.binding(),
        b.q,
        b.slots.binding(),
    ];
    let pairs = p.n_heads * p.head_dim / 2;
    let grid = Grid::PerToken(pairs);
    OpSpec::new(Kernel::KvStore, Variant::Cache { kv }, &p, resources, grid)
}

/// kv_quant.wgsl: the staged K and V rows (`[T][G][hd]` f32) as q8_0 blocks in the cache
/// (`[G][rows]` rows, kv_q8_0.wgsl's layout) at the forward's positions.
pub fn kv_quant<'a>(p: KvQuantParams, staged: [&'a Buf; 2], cache: [&'a Buf; 2]) -> OpSpec<'a> {
    let resources = vec![
        staged[0].binding(),
        staged[1].binding(),
        cache[0].binding(),
        cache[1].binding(),
    ];
    let grid = Grid::PerToken(p.groups * p.head_dim / 32);
    OpSpec::new(Kernel::KvQuant, Variant::Plain, &p, resources, grid)
}

/// What the attention kernels read and write. q: `[T][H][hd]` (for decode a uniform window);
/// kc, vc: `[G][capacity][hd]`; ml: `[T][H][max_chunks]` (m, l); part:
/// `[T][H][max_chunks][hd]`; starts: `[G + 1]` u32, KV head g's query heads being
/// `starts[g] .. starts[g + 1]`.
pub struct AttentionBinds<'a> {
    pub q: wgpu::BindingResource<'a>,
    pub kc: &'a Buf,
    pub vc: &'a Buf,
    pub ml: &'a Buf,
    pub part: &'a Buf,
    pub starts: &'a Buf,
}

/// GQA attention over the cache, one workgroup per (chunk, KV head, token): attention.wgsl
/// for a prefill chunk, or attention_decode.wgsl for one token, specialised for groups of up
/// to `max_rep` query heads, the head size and the cache's element type `kv`.
pub fn attention<'a>(
    p: AttentionParams,
    b: AttentionBinds<'a>,
    pass: Pass,
    max_rep: usize,
    kv: KvType,
) -> OpSpec<'a> {
    let (kernel, variant) = match pass {
        Pass::Decode => {
            let (n_rep, head_dim) = (max_rep as u32, p.head_dim);
            let variant = Variant::AttentionDecode {
                n_rep,
                head_dim,
                kv,
            };
            (Kernel::AttentionDecode, variant)
        }
        Pass::Prefill => (Kernel::Attention, Variant::Cache { kv }),
    };
    let resources = vec![
        b.q,
        b.kc.binding(),
        b.vc.binding(),
        b.ml.binding(),
        b.part.binding(),
        b.starts.binding(),
    ];
    OpSpec::new(kernel, variant, &p, resources, Grid::Attention(p.groups))
}

/// attention_reduce.wgsl: combines each head's chunks into `out` (`[T][H][hd]`), through the
/// layer's output map `omap` (`[L][H][hd][hd]`; any buffer when unused).
pub fn attention_reduce<'a>(
    p: ReduceParams,
    ml: &'a Buf,
    part: &'a Buf,
    omap: &'a Buf,
    out: &'a Buf,
) -> OpSpec<'a> {
    let resources = vec![ml.binding(), part.binding(), omap.binding(), out.binding()];
    let grid = Grid::Reduce(p.n_heads);
    OpSpec::new(Kernel::AttentionReduce, Variant::Plain, &p, resources, grid)
}

/// attention_probe.wgsl: the attention weights of the forward's last token, every query head
/// over positions `0 ..= pos`, into `out` (`[H][capacity]`). q: `[T][H][hd]` after kv_store;
/// kc: `[G][capacity][hd]` of type `kv`; starts: `[G + 1]`.
pub fn attention_probe<'a>(
    p: ProbeParams,
    q: wgpu::BindingResource<'a>,
    (kc, kv): (&'a Buf, KvType),
    starts: &'a Buf,
    out: &'a Buf,
) -> OpSpec<'a> {
    let resources = vec![q, kc.binding(), starts.binding(), out.binding()];
    let grid = Grid::Each(p.n_heads);
    OpSpec::new(
        Kernel::AttentionProbe,
        Variant::Cache { kv },
        &p,
        resources,
        grid,
    )
}
