//! The forward pass as GPU ops, top to bottom — read [`Graph::body`] beside
//! `cpu::CpuEngine::block` (llama2.c's `forward`): the same steps, each one or two kernels.
//! Built once per grouping into a [`Program`] (`graph/program.rs`); `submit.rs` records its
//! ops per forward.
//!
//! The two [`Pass`]es, decode (one token) and prefill (a chunk of up to PREFILL_CHUNK
//! tokens), differ in their kernels: decode multiplies with matvec.wgsl and splits each
//! RMSNorm after a residual add over the two products around it ([`Link`]; ARCHITECTURE.md,
//! "One decode step"), prefill uses matmul.wgsl and rmsnorm.wgsl.

mod program;
mod variations;

pub(super) use program::Program;

use super::resources::{Activations, KvCache, LayerWeights, ModelWeights};
use super::PREFILL_CHUNK;
use crate::gpu::context::{Buf, Gpu};
use crate::gpu::kernels::{ProductMode, ATTENTION_CHUNK};
use crate::gpu::ops::{self, OpList, OpSpec, Pass, ProductParams};
use crate::gpu::Weight;
use crate::model::ModelConfig;
use program::BodySpec;

/// How a decode product takes part in an RMSNorm split over two products (matvec.wgsl):
/// the one that adds to the residual stream leaves xn = γ ⊙ x and Σ x² by workgroup, the one
/// after reads xn as its input and scales by 1 / rms(x).
#[derive(Clone, Copy)]
enum Link<'a> {
    /// x is used as it is.
    None,
    /// Mode [`ProductMode::AccumulateForNorm`] with the next norm's γ.
    Produce { gamma: &'a Buf },
    /// x is γ ⊙ h; its Σ h² in `count` parts.
    Consume { count: u32, eps: f32 },
}

/// Where a layer's q, k0, v0 are after its Q, K, V products.
#[derive(Clone)]
struct Qkv<'a> {
    /// `[T][H][hd]`, read-write (kv_store rotates it in place).
    q: wgpu::BindingResource<'a>,
    k0: wgpu::BindingResource<'a>,
    v0: wgpu::BindingResource<'a>,
    /// q as a uniform window (what attention_decode reads).
    q_uniform: wgpu::BindingResource<'a>,
}

impl<'a> Qkv<'a> {
    /// q as the pass's attention kernel reads it.
    fn attention_input(self, pass: Pass) -> wgpu::BindingResource<'a> {
        match pass {
            Pass::Decode => self.q_uniform,
            Pass::Prefill => self.q,
        }
    }
}

/// What the graph binds, and the op list it fills.
struct Graph<'a> {
    cfg: &'a ModelConfig,
    m: &'a ModelWeights,
    a: &'a Activations,
    cache: &'a KvCache,
    capacity: usize,
    max_chunks: usize,
    /// Whether q, k0 and v0 of one token can be bound as ranges of one buffer (their
    /// offsets are multiples of the device's storage offset alignment).
    qkv_aligned: bool,
    list: OpList<'a>,
}

impl<'a> Graph<'a> {
    fn new(
        gpu: &Gpu,
        cfg: &'a ModelConfig,
        m: &'a ModelWeights,
        a: &'a Activations,
        cache: &'a KvCache,
        capacity: usize,
    ) -> Self {
        let align = gpu.device.limits().min_storage_buffer_offset_alignment as usize;
        let (q_bytes, kv_bytes) = (
            cfg.n_heads * cfg.head_dim * 4,
            cfg.n_kv_heads * cfg.head_dim * 4,
        );
        Graph {
            cfg,
            m,
            a,
            cache,
            capacity,
            max_chunks: capacity.div_ceil(ATTENTION_CHUNK),
            qkv_aligned: q_bytes.is_multiple_of(align) && kv_bytes.is_multiple_of(align),
            list: OpList::default(),
        }
    }

    /// The forward from token ids to the residual stream after the last layer, for one token
    /// ([`Pass::Decode`]) or a prefill chunk. Shapes: x `[T][dim]`, xb `[T][dim]`,
    /// q `[T][H][hd]`, k0, v0 `[T][G0][hd]`, K, V `[G][capacity][hd]` per layer,
    /// att `[T][H][hd]`, gate `[T][ffn]`.
    fn body(&mut self, pass: Pass) -> BodySpec {
        let (a, m) = (self.a, self.m);
        let mut b = BodySpec::default();
        // x = token_embd[tokens] (· √dim for Gemma)
        let scaled = (self.cfg.dim as u32, self.cfg.arch.embed_scale);
        let embed = ops::embed(&m.token_embd, scaled, &a.tokens, &a.x);
        b.ops.push(self.list.push(embed));
        for (l, w) in m.layers.iter().enumerate() {
            let first = b.ops.len();
            // xb = rmsnorm(x) ⊙ attn_norm
            let link = self.attn_norm(&mut b, w, l, pass);
            // q | k0 | v0 = W_q|k|v · xb
            let qkv = self.qkv(&mut b, w, pass, link);
            // (Qwen2) q += b_q, k0 += b_k, v0 += b_v
            self.biases(&mut b, w, &qkv);
            // (Gemma) each query and key head normalised: q_h = rmsnorm(q_h) ⊙ q_norm, k0 alike
            self.head_norms(&mut b, w, &qkv);
            // K, V of the G heads (the layer's maps of the native ones) → the cache at the
            // forward's positions; the q map, RoPE on K and q
            b.kv_store.push(b.ops.len());
            self.push(&mut b, self.kv_store(l, qkv.clone()));
            // (a q8_0 cache) the staged K and V rows → blocks of 32 in the cache
            if let Some(quant) = self.kv_quant(l) {
                self.push(&mut b, quant);
            }
            b.cache_written.push(b.ops.len() - 1);
            // (the attention view, when open: the last token's softmax weights per head)
            b.probe.push(self.list.push(self.probe(l, qkv.q.clone())));
            // per query head h: softmax(q_h · K_g / √hd) · V_g with g = kv_head(h), by chunks
            b.attention.push(b.ops.len());
            self.push(&mut b, self.attention(l, qkv.attention_input(pass), pass));
            // att = the chunks combined (and, after a calibrated merge, each head's output map)
            b.attention.push(b.ops.len());
            self.push(&mut b, self.reduce(l));
            // x += W_o · att (Gemma: x += rmsnorm(W_o · att) ⊙ post_attn_norm)
            let link = self.link_produce(pass, Some(&w.ffn_norm));
            self.add_to_x(&mut b, pass, (&w.wo, &w.post_attn_norm), &a.att, link);
            // xb = rmsnorm(x) ⊙ ffn_norm
            let link = self.ffn_norm(&mut b, w, pass);
            // gate = silu(W_gate · xb) ⊙ (W_up · xb) (Gemma: gelu)
            self.ffn_up(&mut b, w, pass, link);
            // x += W_down · gate (Gemma: x += rmsnorm(W_down · gate) ⊙ post_ffn_norm)
            let next = m.layers.get(l + 1).map(|n| &n.attn_norm);
            let link = self.link_produce(pass, next);
            self.add_to_x(&mut b, pass, (&w.w_down, &w.post_ffn_norm), &a.gate, link);
            b.layers.push(first..b.ops.len());
        }
        b
    }

    /// After the layers: the final norm of the last row, the head, and the greedy token (or,
    /// with `sample`, a sampled one) into `token_out`.
    fn tail(&mut self, sample: bool) -> Vec<usize> {
        let (a, cfg) = (self.a, self.cfg);
        let mut ids = vec![self.list.push(self.rmsnorm(&self.m.output_norm, true))];
        let mut p =
            ProductParams::new(cfg.dim as u32, cfg.vocab_size as u32, ProductMode::Store, 0);
        let norm = self.norm_binds(Link::None, &mut p);
        let head = ops::matvec(self.m.head(), p, a.xb.uniform_window(), &a.logits, norm);
        ids.push(self.list.push(head));
        let pick = match sample {
            false => ops::argmax(cfg.vocab_size as u32, &a.logits, &a.token_out),
            true => ops::sample(&a.sampling, &a.logits, &a.token_out),
        };
        ids.push(self.list.push(pick));
        ids
    }

    fn push(&mut self, b: &mut BodySpec, spec: OpSpec<'a>) {
        b.ops.push(self.list.push(spec));
    }

    /// RMSNorm before attention: its own op in prefill and in decode's first layer; from
    /// decode's second layer on, the previous layer's down product did its first half.
    fn attn_norm(
        &mut self,
        b: &mut BodySpec,
        w: &'a LayerWeights,
        l: usize,
        pass: Pass,
    ) -> Link<'a> {
        if pass == Pass::Decode && l > 0 && self.fused_norms() {
            return self.link_consume();
        }
        self.push(b, self.rmsnorm(&w.attn_norm, false));
        Link::None
    }

    /// RMSNorm before the feed-forward: its own op in prefill; in decode the output
    /// projection did its first half.
    fn ffn_norm(&mut self, b: &mut BodySpec, w: &'a LayerWeights, pass: Pass) -> Link<'a> {
        if pass == Pass::Decode && self.fused_norms() {
            return self.link_consume();
        }
        self.push(b, self.rmsnorm(&w.ffn_norm, false));
        Link::None
    }

    fn link_consume(&self) -> Link<'a> {
        Link::Consume {
            count: ops::norm_parts(self.cfg.dim as u32),
            eps: self.cfg.rms_eps,
        }
    }

    /// A decode product that adds to x produces the next norm's first half (if there is a
    /// next norm in the body: the final norm is the tail's own op).
    fn link_produce(&self, pass: Pass, gamma: Option<&'a Buf>) -> Link<'a> {
        match gamma {
            Some(gamma) if pass == Pass::Decode && self.fused_norms() => Link::Produce { gamma },
            _ => Link::None,
        }
    }

    fn rmsnorm(&self, gamma: &'a Buf, last_row_only: bool) -> OpSpec<'a> {
        let p = ops::RmsNormParams {
            dim: self.cfg.dim as u32,
            eps: self.cfg.rms_eps,
            last_row_only: last_row_only as u32,
            add: 0,
        };
        let out = &self.a.xb;
        ops::rmsnorm(p, &self.a.x, gamma, out)
    }

    /// The Q, K, V projections. Decode with a stacked Q|K|V computes all three in one matvec
    /// into `qkv` and binds its parts; otherwise three products into q, k0, v0.
    fn qkv(
        &mut self,
        b: &mut BodySpec,
        w: &'a LayerWeights,
        pass: Pass,
        link: Link<'a>,
    ) -> Qkv<'a> {
        let (a, cfg) = (self.a, self.cfg);
        let f = 4u64;
        let q_rows = (cfg.n_heads * cfg.head_dim) as u64;
        let kv_rows = (cfg.n_kv_heads * cfg.head_dim) as u64;
        if let (Pass::Decode, true, Some(wt)) = (pass, self.qkv_aligned, w.qkv.whole()) {
            let n = (q_rows + 2 * kv_rows) as u32;
            self.product_n(
                b,
                Pass::Decode,
                (wt, 0),
                n,
                ProductMode::Store,
                (&a.xb, &a.qkv),
                link,
            );
            return Qkv {
                q: a.qkv.range(0, q_rows * f),
                k0: a.qkv.range(q_rows * f, kv_rows * f),
                v0: a.qkv.range((q_rows + kv_rows) * f, kv_rows * f),
                q_uniform: a.qkv.uniform_window(),
            };
        }
        for (i, (y, n)) in [(&a.q, q_rows), (&a.k0, kv_rows), (&a.v0, kv_rows)]
            .into_iter()
            .enumerate()
        {
            self.product_n(
                b,
                pass,
                w.qkv.part(i),
                n as u32,
                ProductMode::Store,
                (&a.xb, y),
                link,
            );
        }
        Qkv {
            q: a.q.binding(),
            k0: a.k0.binding(),
            v0: a.v0.binding(),
            q_uniform: a.q.uniform_window(),
        }
    }

    /// kv_store.wgsl for layer `l`: the G heads made from the native ones by the layer's
    /// maps, RoPE on K and q, K and V appended to the layer's cache.
    fn kv_store(&self, l: usize, qkv: Qkv<'a>) -> OpSpec<'a> {
        let (cfg, c) = (self.cfg, self.cache);
        let p = ops::KvStoreParams {
            groups: c.grouping(l).groups() as u32,
            native_groups: cfg.n_kv_heads as u32,
            head_dim: cfg.head_dim as u32,
            capacity: self.rows(l),
            n_heads: cfg.n_heads as u32,
            layer: l as u32,
            dense_v: c.dense_v as u32,
            map_q: c.qmap.is_some() as u32,
            group0: c.group0[l] as u32,
            _a: 0,
            _b: 0,
            _c: 0,
        };
        let binds = ops::KvStoreBinds {
            k0: qkv.k0,
            v0: qkv.v0,
            kmap: &c.kmap,
            vmap: &c.vmap,
            qmap: c.qmap.as_ref().unwrap_or(&c.none),
            rope: match self.cfg.is_local(l) {
                true => self.a.rope_local.as_ref().unwrap_or(&self.a.rope),
                false => &self.a.rope,
            },
            kc: self
                .cache
                .staged
                .as_ref()
                .map_or(&self.cache.k[l], |s| &s[0]),
            vc: self
                .cache
                .staged
                .as_ref()
                .map_or(&self.cache.v[l], |s| &s[1]),
            q: qkv.q,
            slots: c.slots.as_ref().unwrap_or(&c.none),
        };
        ops::kv_store(p, binds, c.kv_type)
    }

    /// kv_quant.wgsl for layer `l` of a q8_0 cache (none for the other types): the rows
    /// kv_store staged, as blocks in the layer's cache.
    fn kv_quant(&self, l: usize) -> Option<OpSpec<'a>> {
        let c = self.cache;
        let [ks, vs] = c.staged.as_ref()?;
        let p = ops::KvQuantParams {
            groups: c.grouping(l).groups() as u32,
            head_dim: self.cfg.head_dim as u32,
            rows: self.rows(l),
            _pad: 0,
        };
        Some(ops::kv_quant(p, [ks, vs], [&c.k[l], &c.v[l]]))
    }

    /// Attention of layer `l` over its cache, by chunks of positions.
    fn attention(&self, l: usize, q: wgpu::BindingResource<'a>, pass: Pass) -> OpSpec<'a> {
        let cfg = self.cfg;
        let p = ops::AttentionParams {
            n_heads: cfg.n_heads as u32,
            groups: self.cache.grouping(l).groups() as u32,
            head_dim: cfg.head_dim as u32,
            capacity: self.rows(l),
            max_chunks: self.max_chunks as u32,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            window: self.window(l),
            _pad: 0,
        };
        let (kc, vc) = (&self.cache.k[l], &self.cache.v[l]);
        let binds = ops::AttentionBinds {
            q,
            kc,
            vc,
            ml: &self.a.ml,
            part: &self.a.part,
            starts: self.cache.starts(l),
        };
        let (max_rep, kv) = (self.cache.grouping(l).max_rep(), self.cache.kv_type);
        ops::attention(p, binds, pass, max_rep, kv)
    }

    /// The attention weights of layer `l` for the forward's last token, into `probe`.
    fn probe(&self, l: usize, q: wgpu::BindingResource<'a>) -> OpSpec<'a> {
        let cfg = self.cfg;
        let p = ops::ProbeParams {
            n_heads: cfg.n_heads as u32,
            groups: self.cache.grouping(l).groups() as u32,
            head_dim: cfg.head_dim as u32,
            capacity: self.capacity as u32,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            window: self.window(l),
            rows: self.rows(l),
            _pad: 0,
        };
        let (kc, starts) = (&self.cache.k[l], self.cache.starts(l));
        ops::attention_probe(p, q, (kc, self.cache.kv_type), starts, &self.a.probe)
    }

    /// The chunks of layer `l`'s attention combined, through its output map if it has one.
    fn reduce(&self, l: usize) -> OpSpec<'a> {
        let c = self.cache;
        let p = ops::ReduceParams {
            n_heads: self.cfg.n_heads as u32,
            head_dim: self.cfg.head_dim as u32,
            max_chunks: self.max_chunks as u32,
            map_o: c.omap.is_some() as u32,
            layer: l as u32,
            _pad: [0; 3],
        };
        let omap = c.omap.as_ref().unwrap_or(&c.none);
        ops::attention_reduce(p, &self.a.ml, &self.a.part, omap, &self.a.att)
    }

    /// gate = silu(W_gate·xb) ⊙ W_up·xb: decode with a stacked gate|up in one matvec (SwiGLU
    /// mode), otherwise two products and swiglu.wgsl.
    fn ffn_up(&mut self, b: &mut BodySpec, w: &'a LayerWeights, pass: Pass, link: Link<'a>) {
        let (a, ffn, gelu) = (self.a, self.cfg.ffn_dim as u32, self.cfg.arch.gelu);
        // matvec.wgsl's fused mode is SwiGLU's; GeGLU takes two products and swiglu.wgsl.
        if let (Pass::Decode, Some(wt), false) = (pass, w.gate_up.whole(), gelu) {
            self.product_n(
                b,
                Pass::Decode,
                (wt, 0),
                ffn,
                ProductMode::SwiGlu,
                (&a.xb, &a.gate),
                link,
            );
            return;
        }
        for (i, y) in [&a.gate, &a.up].into_iter().enumerate() {
            self.product_n(
                b,
                pass,
                w.gate_up.part(i),
                ffn,
                ProductMode::Store,
                (&a.xb, y),
                link,
            );
        }
        self.push(b, ops::swiglu(ffn, gelu, &a.gate, &a.up));
    }

    /// x += W·input: a product that adds to the residual stream (`dim` rows); with a post
    /// norm, x += rmsnorm(W·input) ⊙ γ (the product into xb, then rmsnorm.wgsl adding).
    fn add_to_x(
        &mut self,
        b: &mut BodySpec,
        pass: Pass,
        (w, post_norm): (&'a Weight, &'a Option<Buf>),
        input: &'a Buf,
        link: Link<'a>,
    ) {
        let dim = self.cfg.dim as u32;
        let Some(gamma) = post_norm else {
            let acc = ProductMode::Accumulate;
            return self.product_n(b, pass, (w, 0), dim, acc, (input, &self.a.x), link);
        };
        let store = ProductMode::Store;
        self.product_n(b, pass, (w, 0), dim, store, (input, &self.a.xb), link);
        self.push(b, self.add_normed(gamma));
    }

    /// y (+)= W·x with W the `n_out` rows of `wt.0` from row `wt.1` and x as wide as W's
    /// rows: matvec.wgsl for one token (`link` its part in an RMSNorm), else matmul.wgsl.
    #[allow(clippy::too_many_arguments)]
    fn product_n(
        &mut self,
        b: &mut BodySpec,
        pass: Pass,
        (w, row0): (&'a Weight, u32),
        n_out: u32,
        mode: ProductMode,
        (x, y): (&'a Buf, &'a Buf),
        link: Link<'a>,
    ) {
        let mut p = ProductParams::new(w.row_len as u32, n_out, mode, row0);
        match pass {
            Pass::Decode => {
                let norm = self.norm_binds(link, &mut p);
                self.push(b, ops::matvec(w, p, x.uniform_window(), y, norm));
            }
            Pass::Prefill => {
                for spec in ops::matmul(w, p, x, y, PREFILL_CHUNK) {
                    self.push(b, spec);
                }
            }
        }
    }

    /// The γ, xn and parts bindings of a matvec for its part in a norm (`p` takes the mode
    /// and the consumer's settings). Where γ and xn are not used, two ranges of `spare` stand
    /// in: WebGPU forbids binding one buffer range to two writable bindings of a dispatch
    /// (wgpu natively allows it, Chromium's Dawn does not).
    fn norm_binds(&self, link: Link<'a>, p: &mut ProductParams) -> ops::NormBinds<'a> {
        let a = self.a;
        let (gamma, xn) = match link {
            Link::Produce { gamma } => {
                debug_assert_eq!(p.mode, ProductMode::Accumulate as u32);
                p.mode = ProductMode::AccumulateForNorm as u32;
                (gamma.binding(), a.xb.binding())
            }
            Link::Consume { count, eps } => {
                (p.norm_parts, p.eps) = (count, eps);
                (a.spare_range(0), a.spare_range(1))
            }
            Link::None => (a.spare_range(0), a.spare_range(1)),
        };
        ops::NormBinds {
            gamma,
            xn,
            parts: a.norm_parts.binding(),
        }
    }
}
