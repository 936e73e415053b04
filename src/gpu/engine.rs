//! [`GpuEngine`]: weights and activations on the GPU, the kernels of one forward recorded in
//! order into one compute pass (see ARCHITECTURE.md for the list with buffer shapes).

use super::context::{Buf, Gpu, Uniforms};
use super::kernels::*;
use super::weight::{Stack, Weight};
use super::GpuError;
use crate::engine::EngineError;
use crate::gguf::{Gguf, TensorInfo};
use crate::model::{pooling_plan, Grouping, ModelConfig, ModelError, ModelTensors};
use crate::sampling::SamplingParams;

mod ahead;

/// Tokens per prefill submit; longer inputs run in several.
pub const PREFILL_CHUNK: usize = 128;

struct LayerWeights {
    attn_norm: Buf, // [dim] f32
    qkv: Stack,     // Q [n_heads·hd][dim] | K [G0·hd][dim] | V [G0·hd][dim]
    wo: Weight,     // [dim][n_heads·hd]
    ffn_norm: Buf,  // [dim] f32
    gate_up: Stack, // gate [ffn][dim] | up [ffn][dim]
    w_down: Weight, // [dim][ffn]
}

/// Activation buffers, sized for PREFILL_CHUNK tokens.
struct Activations {
    sampling: Buf,   // uniform SamplingUniform, written before a sampled forward
    step: Buf,       // uniform Step
    tokens: Buf,     // [T] u32
    x: Buf,          // [T][dim] residual stream
    xb: Buf,         // [T][dim] normalised (also bound as a uniform window by matvec)
    norm_parts: Buf, // [⌈dim's matvec invocations / 32⌉] decode: Σ x² by workgroup (matvec.wgsl)
    spare: Buf,      // 2 × 256 bytes bound where a matvec does not use its γ and xn bindings
    q: Buf,          // [T][n_heads][hd] (rotated in place by kv_store; uniform window too)
    k0: Buf,         // [T][G0][hd] native-head K projection
    v0: Buf,         // [T][G0][hd]
    qkv: Buf,        // decode: [n_heads·hd | G0·hd | G0·hd], q, k0, v0 of one token
    att: Buf,        // [T][n_heads][hd] (uniform window too)
    ml: Buf,         // [T][n_heads][max_chunks] (m, l)
    part: Buf,       // [T][n_heads][max_chunks][hd]
    gate: Buf,       // [T][ffn] (uniform window too)
    up: Buf,         // [T][ffn]
    logits: Buf,     // [T][vocab]
    token_out: Buf,  // [1] u32
    staging: Buf,    // readback
    rope: Buf,       // [capacity][hd/2] (cos, sin)
}

/// K and V per layer, `[G][capacity][hd]` f32 each, and the `[G][G0]` pooling matrix.
struct KvCache {
    k: Vec<Buf>,
    v: Vec<Buf>,
    pool: Buf,
}

#[derive(Clone, Copy)]
enum Grid {
    /// (x, T, 1)
    PerToken(u32),
    /// (⌈invocations/MATMUL_WORKGROUP⌉, ⌈tokens/TT⌉, 1) for the tokens of
    /// `t_base..t_base + t_count` that the forward has; nothing if none.
    Matmul {
        n_out: u32,
        t_base: u32,
        t_count: u32,
    },
    /// (⌈invocations/MATVEC_WORKGROUP⌉, 1, 1), invocations from [`product_invocations`]
    Matvec(u32),
    /// (T, 1, 1), or 1 when `last`.
    Rows {
        last: bool,
    },
    /// (n_chunks, G, T)
    Attention(u32),
    /// (n_heads, T, 1)
    Reduce(u32),
    /// ⌈T·n/256⌉ workgroups
    Elementwise(u32),
    Single,
}

struct Op {
    kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    grid: Grid,
}

/// The op ids of the layers, as [`OpBuilder`] numbers them.
struct BodySpec {
    ops: Vec<usize>,
    /// Positions in `ops` of each layer's ops.
    layers: Vec<std::ops::Range<usize>>,
    /// Positions in `ops` of attention and its reduction.
    attention: Vec<usize>,
}

/// Where a forward's input tokens come from.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// Written from the CPU.
    Ids(&'a [u32]),
    /// The one token the previous submit sampled, copied on the GPU from `token_out`
    /// (decoding ahead, see `ahead.rs`).
    Sampled,
}

impl Input<'_> {
    fn len(self) -> usize {
        match self {
            Input::Ids(ids) => ids.len(),
            Input::Sampled => 1,
        }
    }
}

/// What a forward returns.
#[derive(Clone, Copy)]
enum Want {
    /// The greedy next token (argmax on the GPU).
    Token,
    /// The next token sampled on the GPU with these settings, at this generation step.
    Sampled(SamplingParams, u32),
    LastLogits,
    AllLogits,
    /// Nothing: the forward is only waited for (a chunk of a long prefill).
    Nothing,
}

/// The model on the GPU at one grouping, with a KV cache of fixed capacity.
pub struct GpuEngine {
    gpu: Gpu,
    cfg: ModelConfig,
    grouping: Grouping,
    capacity: usize,
    max_chunks: usize,
    len: usize,
    token_embd: Weight,
    output: Option<Weight>,
    output_norm: Buf,
    layers: Vec<LayerWeights>,
    act: Activations,
    cache: KvCache,
    ops: Ops,
    /// Decoding ahead (`ahead.rs`): submitted steps whose sampled token is not read yet,
    /// oldest first, and 4-byte readback buffers free for reuse.
    in_flight: std::collections::VecDeque<ahead::InFlight>,
    readbacks: Vec<Buf>,
    decode_ahead: bool,
}

/// Every dispatch of a forward, bound to the engine's buffers for the current grouping
/// ([`GpuEngine::build_ops`]); rebuilt when G changes. Empty until first built.
#[derive(Default)]
struct Ops {
    /// The embedding lookup, then the kernels of the layers in order, for one token
    /// (matvec) and for T (matmul).
    body_decode: Vec<Op>,
    body_prefill: Vec<Op>,
    /// Where attention and its reduction are in `body_decode`.
    decode_attention: Vec<usize>,
    /// Each layer's ops in `body_decode`, `body_prefill`.
    decode_layers: Vec<std::ops::Range<usize>>,
    prefill_layers: Vec<std::ops::Range<usize>>,
    tail_last: Vec<Op>,   // final norm, head (last row), argmax
    tail_sample: Vec<Op>, // final norm, head (last row), temperature/top-k/top-p sampling
    tail_all: Vec<Op>,    // final norm, head (all rows)
    /// The ops' parameter uniforms (kept alive with them).
    _uniforms: Option<Uniforms>,
}

/// Rows of a `[rows][row_len]` tensor.
fn rows(t: &TensorInfo<'_>) -> usize {
    t.dims.get(1).copied().unwrap_or(1) as usize
}

/// Uploads a `[rows][row_len]` weight in the texture layout of [`super::layout`].
fn upload(gpu: &Gpu, g: &Gguf<'_>, t: &TensorInfo<'_>) -> Result<Weight, GpuError> {
    Weight::upload(gpu, t.name, t.ggml_type, g.tensor_bytes(t), rows(t))
}

/// Uploads tensors of one row length stacked (see [`Stack`]).
fn upload_stack(
    gpu: &Gpu,
    g: &Gguf<'_>,
    label: &str,
    ts: &[&TensorInfo<'_>],
) -> Result<Stack, GpuError> {
    let parts: Vec<_> = ts
        .iter()
        .map(|t| (t.name, t.ggml_type, g.tensor_bytes(t), rows(t)))
        .collect();
    Stack::upload(gpu, label, &parts)
}

/// Norm weights are uploaded as f32 whatever their file type.
fn upload_f32(gpu: &Gpu, g: &Gguf<'_>, t: &TensorInfo<'_>) -> Result<Buf, EngineError> {
    let v = g.dequantize(t).map_err(ModelError::from)?;
    Ok(gpu.storage_with(t.name, bytemuck::cast_slice(&v))?)
}

impl GpuEngine {
    /// Opens the GPU, uploads the model and allocates a KV cache for `capacity` tokens at the
    /// native grouping.
    pub async fn load(g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        let gpu = Gpu::new().await?;
        Self::load_on(gpu, g, capacity)
    }

    /// As [`GpuEngine::load`], on an opened device.
    pub fn load_on(gpu: Gpu, g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        let cfg = ModelConfig::from_gguf(g)?;
        let capacity = crate::cpu::check_capacity(&cfg, capacity)?;
        check_shapes(&cfg)?;
        let t = ModelTensors::locate(g, &cfg)?;
        let layers = t
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(LayerWeights {
                    attn_norm: upload_f32(&gpu, g, l.attn_norm)?,
                    qkv: upload_stack(&gpu, g, &format!("blk.{i}.qkv"), &[l.wq, l.wk, l.wv])?,
                    wo: upload(&gpu, g, l.wo)?,
                    ffn_norm: upload_f32(&gpu, g, l.ffn_norm)?,
                    gate_up: upload_stack(
                        &gpu,
                        g,
                        &format!("blk.{i}.gate_up"),
                        &[l.w_gate, l.w_up],
                    )?,
                    w_down: upload(&gpu, g, l.w_down)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let max_chunks = capacity.div_ceil(ATTENTION_CHUNK);
        let act = Activations::new(&gpu, &cfg, capacity, max_chunks)?;
        let grouping = Grouping::native(&cfg);
        let cache = KvCache::new(&gpu, &cfg, grouping, capacity)?;
        let token_embd = upload(&gpu, g, t.token_embd)?;
        let output = if t.tied_output {
            None
        } else {
            Some(upload(&gpu, g, t.output)?)
        };
        let output_norm = upload_f32(&gpu, g, t.output_norm)?;
        gpu.check()?;
        let gpu_is_software = gpu.is_software();
        let mut e = GpuEngine {
            gpu,
            cfg,
            grouping,
            capacity,
            max_chunks,
            len: 0,
            token_embd,
            output,
            output_norm,
            layers,
            act,
            cache,
            ops: Ops::default(),
            in_flight: Default::default(),
            readbacks: Vec::new(),
            decode_ahead: !gpu_is_software,
        };
        e.ops = e.build_ops()?;
        Ok(e)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// A description of the adapter, for reports.
    pub fn adapter(&self) -> String {
        let info = &self.gpu.info;
        let name = if info.name.is_empty() {
            "WebGPU adapter"
        } else {
            &info.name
        };
        format!("{name} ({:?}, {:?})", info.device_type, info.backend)
    }

    /// Kernel dispatches per decode step (one token; all in one submit).
    pub fn dispatches_per_token(&self) -> usize {
        self.ops.body_decode.len() + self.ops.tail_last.len()
    }

    /// Bytes of weights on the GPU (all read once per decode step).
    pub fn weight_bytes(&self) -> u64 {
        let mut n = self.token_embd.bytes() + self.output_norm.size();
        n += self.output.as_ref().map_or(0, |w| w.bytes());
        for l in &self.layers {
            n += l.attn_norm.size() + l.ffn_norm.size();
            n += l.qkv.bytes() + l.gate_up.bytes() + l.wo.bytes() + l.w_down.bytes();
        }
        n
    }

    /// Milliseconds per decode step spent in attention (attention + its reduction, all
    /// layers) at the current sequence length: those kernels alone, the median of `iters` steps,
    /// one submit each, waited for. For benchmarks.
    pub async fn time_attention(&mut self, iters: usize) -> Result<f64, EngineError> {
        let ops = &self.ops;
        let attention: Vec<&Op> = ops
            .decode_attention
            .iter()
            .map(|&i| &ops.body_decode[i])
            .collect();
        self.time_ops(&attention, iters).await
    }

    /// Milliseconds per decode step spent in each kernel, by kernel name: a decode step's
    /// ops of one kernel submitted alone (each time includes the dispatches' overhead). For
    /// benchmarks; like [`Self::time_attention`] it reruns ops of the last step.
    pub async fn time_kernels(
        &self,
        iters: usize,
    ) -> Result<Vec<(&'static str, f64)>, EngineError> {
        let ops = &self.ops;
        let step: Vec<&Op> = ops.body_decode.iter().chain(&ops.tail_last).collect();
        let mut kernels: Vec<Kernel> = step.iter().map(|op| op.kernel).collect();
        kernels.sort_by_key(|k| k.name());
        kernels.dedup();
        let mut times = Vec::new();
        for k in kernels {
            let ops: Vec<&Op> = step.iter().copied().filter(|op| op.kernel == k).collect();
            times.push((k.name(), self.time_ops(&ops, iters).await?));
        }
        Ok(times)
    }

    /// Microseconds one dispatch costs beyond its work, as the GPU runs the decode step: the
    /// smallest op there is — a SwiGLU of 4 elements, one workgroup whose other invocations
    /// return at once — dispatched as many times as a decode step has dispatches, in one
    /// submit, against once. The decode step cannot run faster than `1 / (dispatches ×
    /// this)`. For benchmarks; it overwrites 4 gate activations, which the next forward
    /// recomputes.
    pub async fn time_dispatch_overhead(&mut self, iters: usize) -> Result<f64, EngineError> {
        let a = &self.act;
        let mut b = OpBuilder::new(&self.act);
        let params = SwiGluParams {
            ffn_dim: 4,
            _pad: [0; 3],
        };
        let bufs = vec![a.gate.binding(), a.up.binding()];
        b.add(Kernel::SwiGlu, 0, params, bufs, Grid::Elementwise(4));
        // The uniforms stay alive until the probe's submits are done.
        let (_uniforms, mut ops) = b.finish(&self.gpu, &a.step)?;
        let probe = ops.pop().flatten().expect("the builder made one op");
        let n = self.dispatches_per_token();
        let many = vec![&probe; n];
        let t_many = self.time_ops(&many, iters).await?;
        let t_one = self.time_ops(&[&probe], iters).await?;
        Ok((t_many - t_one).max(0.0) * 1e3 / (n - 1).max(1) as f64)
    }

    /// Milliseconds per submit of `ops` (one compute pass, waited for by a 4-byte readback) at
    /// the current sequence length: the median of `iters` submits, so that one submit slowed
    /// by the rest of the machine does not move the figure.
    async fn time_ops(&self, ops: &[&Op], iters: usize) -> Result<f64, EngineError> {
        let n_chunks = (self.len + 1).div_ceil(ATTENTION_CHUNK) as u32;
        let step = Step {
            pos0: self.len as u32,
            n_tokens: 1,
            n_chunks,
            _pad: 0,
        };
        self.gpu
            .queue
            .write_buffer(&self.act.step.buffer, 0, bytemuck::bytes_of(&step));
        let mut ms = Vec::with_capacity(iters.max(1));
        for _ in 0..iters.max(1) {
            let t0 = web_time::Instant::now();
            let mut enc = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                ops.iter()
                    .for_each(|op| op.dispatch(&mut pass, 1, n_chunks));
            }
            enc.copy_buffer_to_buffer(
                &self.act.token_out.buffer,
                0,
                &self.act.staging.buffer,
                0,
                4,
            );
            self.gpu
                .submit_and_read(enc, &self.act.staging.buffer, 4)
                .await?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    }

    /// Regroups to `groups` KV heads: a new, empty cache at the new size and a new pooling
    /// matrix; the weights stay as they are. The old cache's buffers are destroyed first.
    pub fn regroup(&mut self, groups: usize) -> Result<(), EngineError> {
        let grouping = Grouping::new(self.cfg.n_heads, groups)?;
        if grouping.n_rep() > ATTENTION_MAX_REP {
            return Err(GpuError::Unsupported(format!(
                "{} query heads per KV head (the attention kernel holds up to {ATTENTION_MAX_REP})",
                grouping.n_rep()
            ))
            .into());
        }
        self.drop_ahead();
        self.ops = Ops::default();
        // Free the old cache before allocating the new one (peak memory = the larger of the two).
        self.cache.k.clear();
        self.cache.v.clear();
        self.cache = KvCache::new(&self.gpu, &self.cfg, grouping, self.capacity)?;
        self.grouping = grouping;
        self.len = 0;
        self.ops = self.build_ops()?;
        self.gpu.check()?;
        Ok(())
    }

    /// Builds every op of the forward for the current grouping.
    fn build_ops(&self) -> Result<Ops, EngineError> {
        let mut b = OpBuilder::new(&self.act);
        let cfg = &self.cfg;
        let a = &self.act;
        let (dim, vocab) = (cfg.dim as u32, cfg.vocab_size as u32);
        let decode = self.body_ops(&mut b, true);
        let prefill = self.body_ops(&mut b, false);
        let head = self.output.as_ref().unwrap_or(&self.token_embd);
        // Three tails: last row + GPU argmax, last row + GPU sampling, every row's logits.
        let mut tails = Vec::new();
        for last in [true, true, false] {
            let norm_params = RmsNormParams {
                dim,
                eps: cfg.rms_eps,
                last_row_only: last as u32,
                _pad: 0,
            };
            let bufs = vec![a.x.binding(), self.output_norm.binding(), a.xb.binding()];
            let norm = b.add(Kernel::RmsNorm, 0, norm_params, bufs, Grid::Rows { last });
            let store = ProductMode::Store;
            let xy = (&a.xb, &a.logits);
            let head_ops = b.product(last, (head, 0), dim, vocab, store, xy, Link::None);
            tails.push([vec![norm], head_ops].concat());
        }
        let argmax_params = ArgmaxParams {
            vocab,
            _pad: [0; 3],
        };
        let argmax = b.add_plain(
            Kernel::Argmax,
            argmax_params,
            vec![a.logits.binding(), a.token_out.binding()],
        );
        tails[0].push(argmax);
        let sample_bufs = vec![
            a.sampling.binding(),
            a.logits.binding(),
            a.token_out.binding(),
        ];
        tails[1].push(b.add_raw(Kernel::Sample, sample_bufs));
        let (uniforms, mut ops) = b.finish(&self.gpu, &a.step)?;
        let mut take = |spec: usize| ops[spec].take().expect("each op is taken once");
        Ok(Ops {
            body_decode: decode.ops.into_iter().map(&mut take).collect(),
            body_prefill: prefill.ops.into_iter().map(&mut take).collect(),
            decode_attention: decode.attention,
            decode_layers: decode.layers,
            prefill_layers: prefill.layers,
            tail_last: tails[0].iter().map(|&i| take(i)).collect(),
            tail_sample: tails[1].iter().map(|&i| take(i)).collect(),
            tail_all: tails[2].iter().map(|&i| take(i)).collect(),
            _uniforms: Some(uniforms),
        })
    }

    /// The embedding lookup and the ops of every layer, in order (see ARCHITECTURE.md), and
    /// where each layer and attention are among them. Matrix products run as matvec for one
    /// token (`decode`) or matmul for T; decode computes Q|K|V in one product and gate|up
    /// with the SwiGLU in another when the weights are stacked (see [`Stack`]).
    fn body_ops<'a>(&'a self, b: &mut OpBuilder<'a>, decode: bool) -> BodySpec {
        let cfg = &self.cfg;
        let a = &self.act;
        let (dim, hd, nh, ffn) = (
            cfg.dim as u32,
            cfg.head_dim as u32,
            cfg.n_heads as u32,
            cfg.ffn_dim as u32,
        );
        let g0 = cfg.n_kv_heads as u32;
        let groups = self.grouping.groups() as u32;
        let cap = self.capacity as u32;
        let mc = self.max_chunks as u32;
        let embed = b.add(
            Kernel::Embed,
            self.token_embd.ty.id(),
            EmbedParams {
                dim,
                vocab: cfg.vocab_size as u32,
                _pad: [0; 2],
            },
            with_weight(&self.token_embd, [a.tokens.binding(), a.x.binding()]),
            Grid::PerToken(dim / 32),
        );
        let (mut ops, mut attention, mut layers) = (vec![embed], Vec::new(), Vec::new());
        // Decode splits each RMSNorm after a residual add over the two products around it
        // (`Link`); the first layer's comes after the embedding and keeps its dispatch.
        let consume = Link::Consume {
            count: norm_parts(cfg),
            eps: cfg.rms_eps,
        };
        let produce = |gamma| Link::Produce { gamma, xn: &a.xb };
        for (l, w) in self.layers.iter().enumerate() {
            let first = ops.len();
            let mut link = consume;
            if !decode || l == 0 {
                ops.push(b.rmsnorm(cfg, a, &w.attn_norm));
                link = Link::None;
            }
            let [q, k0, v0, q_uniform] = self.qkv_ops(b, &mut ops, w, decode, link);
            let (kc, vc) = (&self.cache.k[l], &self.cache.v[l]);
            let kv_bufs = [k0, v0, self.cache.pool.binding(), a.rope.binding()];
            let kv_bufs = kv_bufs
                .into_iter()
                .chain([kc.binding(), vc.binding(), q.clone()]);
            ops.push(b.add(
                Kernel::KvStore,
                0,
                KvStoreParams {
                    groups,
                    native_groups: g0,
                    head_dim: hd,
                    capacity: cap,
                    n_heads: nh,
                    _pad: [0; 3],
                },
                kv_bufs.collect(),
                Grid::PerToken(nh * hd / 2),
            ));
            let scale = 1.0 / (hd as f32).sqrt();
            let (kernel, q) = if decode {
                (Kernel::AttentionDecode, q_uniform)
            } else {
                (Kernel::Attention, q)
            };
            let att_bufs = [kc, vc, &a.ml, &a.part].map(|x| x.binding());
            let variant = attention_variant(self.grouping.n_rep(), cfg.head_dim);
            attention.push(ops.len());
            ops.push(b.add(
                kernel,
                variant,
                AttentionParams {
                    n_heads: nh,
                    groups,
                    head_dim: hd,
                    capacity: cap,
                    max_chunks: mc,
                    scale,
                    _pad: [0; 2],
                },
                std::iter::once(q).chain(att_bufs).collect(),
                Grid::Attention(groups),
            ));
            attention.push(ops.len());
            ops.push(b.add(
                Kernel::AttentionReduce,
                0,
                ReduceParams {
                    n_heads: nh,
                    head_dim: hd,
                    max_chunks: mc,
                    _pad: 0,
                },
                vec![a.ml.binding(), a.part.binding(), a.att.binding()],
                Grid::Reduce(nh),
            ));
            let wo = (&w.wo, 0);
            let acc = ProductMode::Accumulate;
            let link = if decode {
                produce(&w.ffn_norm)
            } else {
                Link::None
            };
            ops.extend(b.product(decode, wo, nh * hd, dim, acc, (&a.att, &a.x), link));
            if !decode {
                ops.push(b.rmsnorm(cfg, a, &w.ffn_norm));
            }
            let link = if decode { consume } else { Link::None };
            self.ffn_up_ops(b, &mut ops, w, decode, link);
            let down = (&w.w_down, 0);
            // The final norm is the tail's (shared with prefill).
            let link = match self.layers.get(l + 1) {
                Some(next) if decode => produce(&next.attn_norm),
                _ => Link::None,
            };
            ops.extend(b.product(decode, down, ffn, dim, acc, (&a.gate, &a.x), link));
            layers.push(first..ops.len());
        }
        BodySpec {
            ops,
            layers,
            attention,
        }
    }

    /// The Q, K, V projections of one layer's normalised input; returns where q (read-write),
    /// k0, v0 and q as a uniform window are bound for the ops after them. Decode with a
    /// stacked Q|K|V computes all three in one matvec into `qkv` and binds its parts.
    fn qkv_ops<'a>(
        &'a self,
        b: &mut OpBuilder<'a>,
        ops: &mut Vec<usize>,
        w: &'a LayerWeights,
        decode: bool,
        link: Link<'a>,
    ) -> [wgpu::BindingResource<'a>; 4] {
        let (cfg, a) = (&self.cfg, &self.act);
        let f = 4u64;
        let q_rows = (cfg.n_heads * cfg.head_dim) as u64;
        let kv_rows = (cfg.n_kv_heads * cfg.head_dim) as u64;
        let dim = cfg.dim as u32;
        let align = self.gpu.device.limits().min_storage_buffer_offset_alignment as u64;
        let aligned = (q_rows * f).is_multiple_of(align) && (kv_rows * f).is_multiple_of(align);
        if let (true, true, Some(wt)) = (decode, aligned, w.qkv.whole()) {
            let n = (q_rows + 2 * kv_rows) as u32;
            let xy = (&a.xb, &a.qkv);
            ops.extend(b.product(true, (wt, 0), dim, n, ProductMode::Store, xy, link));
            return [
                a.qkv.range(0, q_rows * f),
                a.qkv.range(q_rows * f, kv_rows * f),
                a.qkv.range((q_rows + kv_rows) * f, kv_rows * f),
                a.qkv.uniform_window(),
            ];
        }
        for (i, (y, n)) in [(&a.q, q_rows), (&a.k0, kv_rows), (&a.v0, kv_rows)]
            .into_iter()
            .enumerate()
        {
            let part = w.qkv.part(i);
            let store = ProductMode::Store;
            ops.extend(b.product(decode, part, dim, n as u32, store, (&a.xb, y), link));
        }
        [
            a.q.binding(),
            a.k0.binding(),
            a.v0.binding(),
            a.q.uniform_window(),
        ]
    }

    /// gate = silu(W_gate·xb) · W_up·xb: decode with a stacked gate|up in one matvec, else
    /// two products and swiglu.wgsl.
    fn ffn_up_ops<'a>(
        &'a self,
        b: &mut OpBuilder<'a>,
        ops: &mut Vec<usize>,
        w: &'a LayerWeights,
        decode: bool,
        link: Link<'a>,
    ) {
        let a = &self.act;
        let (dim, ffn) = (self.cfg.dim as u32, self.cfg.ffn_dim as u32);
        if let (true, Some(wt)) = (decode, w.gate_up.whole()) {
            let swiglu = ProductMode::SwiGlu;
            ops.extend(b.product(true, (wt, 0), dim, ffn, swiglu, (&a.xb, &a.gate), link));
            return;
        }
        for (i, y) in [&a.gate, &a.up].into_iter().enumerate() {
            let part = w.gate_up.part(i);
            let store = ProductMode::Store;
            ops.extend(b.product(decode, part, dim, ffn, store, (&a.xb, y), link));
        }
        ops.push(b.add(
            Kernel::SwiGlu,
            0,
            SwiGluParams {
                ffn_dim: ffn,
                _pad: [0; 3],
            },
            vec![a.gate.binding(), a.up.binding()],
            Grid::Elementwise(ffn),
        ));
    }

    /// The embedding and the layers' ops for a forward of `t` tokens.
    fn body(&self, t: usize) -> &[Op] {
        if t == 1 {
            &self.ops.body_decode
        } else {
            &self.ops.body_prefill
        }
    }

    fn validate(&self, ids: &[u32]) -> Result<(), EngineError> {
        if ids.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(EngineError::TokenOutOfRange {
                id,
                vocab: self.cfg.vocab_size,
            });
        }
        if self.len + ids.len() > self.capacity {
            return Err(EngineError::ContextFull {
                needed: self.len + ids.len(),
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Records one chunk of ≤ PREFILL_CHUNK tokens at position `self.len`: the embedding and
    /// the blocks (only the first `body_ops` ops if given), then `tail`.
    fn record(
        &self,
        input: Input<'_>,
        tail: &[Op],
        body_ops: Option<usize>,
    ) -> wgpu::CommandEncoder {
        let n = input.len();
        let t = n as u32;
        let n_chunks = (self.len + n).div_ceil(ATTENTION_CHUNK) as u32;
        let step = Step {
            pos0: self.len as u32,
            n_tokens: t,
            n_chunks,
            _pad: 0,
        };
        self.gpu
            .queue
            .write_buffer(&self.act.step.buffer, 0, bytemuck::bytes_of(&step));
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        match input {
            Input::Ids(ids) => {
                self.gpu
                    .queue
                    .write_buffer(&self.act.tokens.buffer, 0, bytemuck::cast_slice(ids))
            }
            Input::Sampled => enc.copy_buffer_to_buffer(
                &self.act.token_out.buffer,
                0,
                &self.act.tokens.buffer,
                0,
                4,
            ),
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("forward"),
                timestamp_writes: None,
            });
            let all = self.body(n);
            let body = &all[..body_ops.unwrap_or(all.len())];
            for op in body.iter().chain(tail) {
                op.dispatch(&mut pass, t, n_chunks);
            }
        }
        enc
    }

    /// Writes the uniform of `sample.wgsl` for the next submit.
    fn write_sampling(&self, p: &SamplingParams, step: u32) {
        let u = SamplingUniform {
            vocab: self.cfg.vocab_size as u32,
            top_k: p.top_k.min(u32::MAX as usize) as u32,
            top_p: p.top_p,
            temperature: p.temperature,
            seed: p.seed,
            step,
            _pad: [0; 2],
        };
        self.gpu
            .queue
            .write_buffer(&self.act.sampling.buffer, 0, bytemuck::bytes_of(&u));
    }

    async fn run(&mut self, ids: &[u32], want: Want) -> Result<Vec<u8>, EngineError> {
        self.drop_ahead();
        self.validate(ids)?;
        self.gpu.check()?;
        let vocab = self.cfg.vocab_size as u64;
        let mut out = Vec::new();
        let chunks: Vec<&[u32]> = ids.chunks(PREFILL_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let tail: &[Op] = match want {
                Want::AllLogits => &self.ops.tail_all,
                Want::Nothing => &[],
                Want::Sampled(..) if last => &self.ops.tail_sample,
                _ if last => &self.ops.tail_last,
                _ => &[],
            };
            if let (Want::Sampled(p, step), true) = (want, last) {
                self.write_sampling(&p, step);
            }
            let mut enc = self.record(Input::Ids(chunk), tail, None);
            let (src, size) = match want {
                Want::AllLogits => (&self.act.logits, chunk.len() as u64 * vocab * 4),
                Want::LastLogits if last => (&self.act.logits, vocab * 4),
                Want::Token | Want::Sampled(..) | Want::Nothing if last => (&self.act.token_out, 4),
                _ => (&self.act.token_out, 0),
            };
            if size > 0 {
                enc.copy_buffer_to_buffer(&src.buffer, 0, &self.act.staging.buffer, 0, size);
                out.extend(
                    self.gpu
                        .submit_and_read(enc, &self.act.staging.buffer, size)
                        .await?,
                );
            } else {
                self.gpu.queue.submit([enc.finish()]);
            }
            self.len += chunk.len();
        }
        self.gpu.check()?;
        Ok(out)
    }

    /// Feeds `ids` and samples the next token on the GPU (argmax.wgsl when greedy, else
    /// sample.wgsl, the twin of [`crate::sampling::sample`]); 4 bytes are read back.
    pub async fn forward_sample(
        &mut self,
        ids: &[u32],
        p: &SamplingParams,
        step: u32,
    ) -> Result<u32, EngineError> {
        p.validate().map_err(EngineError::BadSampling)?;
        let want = if p.is_greedy() {
            Want::Token
        } else {
            Want::Sampled(*p, step)
        };
        let bytes = self.run(ids, want).await?;
        Ok(bytemuck::pod_read_unaligned(&bytes[..4]))
    }

    /// Feeds `ids` and waits for the GPU to be done with them; nothing is computed past the
    /// last layer (a chunk of a long prefill, between which a page can stop or regroup).
    pub async fn feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        self.run(ids, Want::Nothing).await.map(drop)
    }

    /// KV-cache bytes of the live sequence (f32 elements).
    pub fn kv_cache_bytes(&self) -> u64 {
        crate::model::kv_cache_bytes(&self.cfg, self.grouping.groups(), self.len, 4)
    }

    /// Feeds `ids` and returns logits `[vocab]` of the last token, or `[T][vocab]` of all.
    pub async fn forward(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>, EngineError> {
        let bytes = self
            .run(
                ids,
                if all {
                    Want::AllLogits
                } else {
                    Want::LastLogits
                },
            )
            .await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The residual stream after every block for `ids` fed from an empty cache:
    /// `[n_layers][T·dim]` (T ≤ PREFILL_CHUNK). One submit; for comparing with the CPU oracle.
    pub async fn hidden_states(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.reset();
        self.validate(ids)?;
        if ids.len() > PREFILL_CHUNK {
            return Err(EngineError::ContextFull {
                needed: ids.len(),
                capacity: PREFILL_CHUNK,
            });
        }
        let row = (ids.len() * self.cfg.dim * 4) as u64;
        let n_layers = self.cfg.n_layers;
        let staging = self.gpu.buffer(
            "hidden states",
            row * n_layers as u64,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let layers = match ids.len() {
            1 => &self.ops.decode_layers,
            _ => &self.ops.prefill_layers,
        };
        let mut enc = self.record(Input::Ids(ids), &[], Some(layers[0].end));
        for (l, ops) in layers.iter().enumerate() {
            if l > 0 {
                let t = ids.len() as u32;
                let n_chunks = ids.len().div_ceil(ATTENTION_CHUNK) as u32;
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("layer"),
                    timestamp_writes: None,
                });
                for op in &self.body(ids.len())[ops.clone()] {
                    op.dispatch(&mut pass, t, n_chunks);
                }
            }
            enc.copy_buffer_to_buffer(&self.act.x.buffer, 0, &staging.buffer, row * l as u64, row);
        }
        let bytes = self
            .gpu
            .submit_and_read(enc, &staging.buffer, row * n_layers as u64)
            .await?;
        self.len = ids.len();
        Ok(bytes
            .chunks_exact(row as usize)
            .map(bytemuck::pod_collect_to_vec)
            .collect())
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn grouping(&self) -> Grouping {
        self.grouping
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Empties the cache (a step submitted ahead is dropped).
    pub fn reset(&mut self) {
        self.drop_ahead();
        self.len = 0;
    }

    /// Takes the sequence to be `len` tokens long (for benchmarks: the cache holds whatever it
    /// holds, which does not change the work).
    pub fn skip_to(&mut self, len: usize) -> Result<(), EngineError> {
        self.drop_ahead();
        crate::cpu::check_len(len, self.capacity)?;
        self.len = len;
        Ok(())
    }
}

/// Shapes the kernels assume.
fn check_shapes(cfg: &ModelConfig) -> Result<(), GpuError> {
    let bad = |m: String| Err(GpuError::Unsupported(m));
    if !cfg.dim.is_multiple_of(32)
        || !cfg.ffn_dim.is_multiple_of(32)
        || !(cfg.n_heads * cfg.head_dim).is_multiple_of(32)
    {
        return bad("dimensions must be multiples of 32".into());
    }
    let widest = cfg.dim.max(cfg.ffn_dim).max(cfg.n_heads * cfg.head_dim);
    if widest > MATVEC_MAX_IN {
        return bad(format!(
            "a matrix {widest} wide (matvec.wgsl takes up to {MATVEC_MAX_IN})"
        ));
    }
    let inputs = [cfg.dim, cfg.ffn_dim, cfg.n_heads * cfg.head_dim];
    if let Some(n) = inputs
        .into_iter()
        .find(|&n| window_tokens(n, UNIFORM_ALIGN).is_none())
    {
        return bad(format!(
            "a matrix {n} wide (matmul.wgsl reads rows through 64 KiB uniform windows at 256-byte-aligned offsets, and none holds a row of it)"
        ));
    }
    if cfg.head_dim > ATTENTION_MAX_HEAD_DIM || !cfg.head_dim.is_multiple_of(4) {
        return bad(format!(
            "head_dim {} (the attention kernels take multiples of 4 up to {ATTENTION_MAX_HEAD_DIM})",
            cfg.head_dim
        ));
    }
    if cfg.native_n_rep() > ATTENTION_MAX_REP {
        return bad(format!("{} query heads per KV head", cfg.native_n_rep()));
    }
    Ok(())
}

/// Partial sums of x² a decode product of the residual stream leaves for the next RMSNorm:
/// one per workgroup of a `dim`-row matvec ([`ProductMode::AccumulateForNorm`]).
fn norm_parts(cfg: &ModelConfig) -> u32 {
    product_invocations(cfg.dim as u32, false).div_ceil(MATVEC_WORKGROUP)
}

/// Bytes of each of the two ranges of `Activations::spare` (a multiple of every device's
/// storage offset alignment, which WebGPU caps at 256).
const SPARE_RANGE: u64 = 256;

/// How a decode product takes part in an RMSNorm split over two products (matvec.wgsl):
/// the one that adds to the residual stream leaves xn = γ ⊙ x and Σ x² by workgroup, the one
/// after reads xn as its input and scales by 1 / rms(x). Prefill keeps rmsnorm.wgsl.
#[derive(Clone, Copy)]
enum Link<'a> {
    /// x is used as it is.
    None,
    /// Mode [`ProductMode::AccumulateForNorm`] with the next norm's γ.
    Produce { gamma: &'a Buf, xn: &'a Buf },
    /// x is γ ⊙ h; `count` parts of Σ h².
    Consume { count: u32, eps: f32 },
}

impl Activations {
    fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        capacity: usize,
        max_chunks: usize,
    ) -> Result<Self, GpuError> {
        let t = PREFILL_CHUNK as u64;
        let f = 4u64;
        let (dim, hd, nh, g0) = (
            cfg.dim as u64,
            cfg.head_dim as u64,
            cfg.n_heads as u64,
            cfg.n_kv_heads as u64,
        );
        let s = |label: &str, n: u64| gpu.storage(label, n * f);
        let mut table = Vec::with_capacity(capacity * cfg.head_dim);
        for pos in 0..capacity {
            for i in 0..cfg.head_dim / 2 {
                let theta =
                    pos as f64 * (cfg.rope_base as f64).powf(-2.0 * i as f64 / cfg.head_dim as f64);
                table.extend([theta.cos() as f32, theta.sin() as f32]);
            }
        }
        use wgpu::BufferUsages as U;
        let logits_bytes = t * cfg.vocab_size as u64 * f;
        Ok(Activations {
            step: gpu.buffer("step", 16, U::UNIFORM | U::COPY_DST)?,
            sampling: gpu.buffer("sampling", 32, U::UNIFORM | U::COPY_DST)?,
            tokens: s("tokens", t)?,
            x: s("x", t * dim)?,
            xb: gpu.activation("xb", t * dim * f)?,
            norm_parts: s("norm parts", norm_parts(cfg) as u64)?,
            spare: s("unused matvec bindings", 2 * SPARE_RANGE / f)?,
            q: gpu.activation("q", t * nh * hd * f)?,
            qkv: gpu.activation("qkv", (nh + 2 * g0) * hd * f)?,
            k0: s("k0", t * g0 * hd)?,
            v0: s("v0", t * g0 * hd)?,
            att: gpu.activation("att", t * nh * hd * f)?,
            ml: s("attention m,l", t * nh * max_chunks as u64 * 2)?,
            part: s("attention partials", t * nh * max_chunks as u64 * hd)?,
            gate: gpu.activation("gate", t * cfg.ffn_dim as u64 * f)?,
            up: s("up", t * cfg.ffn_dim as u64)?,
            logits: s("logits", t * cfg.vocab_size as u64)?,
            token_out: s("token", 4)?,
            staging: gpu.buffer("staging", logits_bytes, U::MAP_READ | U::COPY_DST)?,
            rope: gpu.storage_with("rope table", bytemuck::cast_slice(&table))?,
        })
    }
}

impl KvCache {
    fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        grouping: Grouping,
        capacity: usize,
    ) -> Result<Self, GpuError> {
        let bytes = (grouping.groups() * capacity * cfg.head_dim * 4) as u64;
        let per_layer = |kind: &str| {
            (0..cfg.n_layers)
                .map(|l| gpu.storage(&format!("{kind} cache {l}"), bytes))
                .collect::<Result<Vec<_>, _>>()
        };
        let plan = pooling_plan(Grouping::native(cfg), grouping);
        let mut pool = vec![0.0f32; grouping.groups() * cfg.n_kv_heads];
        for (g, sources) in plan.iter().enumerate() {
            for &(j, w) in sources {
                pool[g * cfg.n_kv_heads + j] = w;
            }
        }
        Ok(KvCache {
            k: per_layer("K")?,
            v: per_layer("V")?,
            pool: gpu.storage_with("pooling matrix", bytemuck::cast_slice(&pool))?,
        })
    }
}

impl Op {
    fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, t: u32, n_chunks: u32) {
        let [x, y, z] = self.grid.size(t, n_chunks);
        if x * y * z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

impl Grid {
    fn size(self, t: u32, n_chunks: u32) -> [u32; 3] {
        match self {
            Grid::PerToken(x) => [x.div_ceil(64), t, 1],
            Grid::Matmul {
                n_out,
                t_base,
                t_count,
            } => {
                let tokens = t.saturating_sub(t_base).min(t_count);
                let groups = tokens.div_ceil(MATMUL_TOKENS as u32);
                let x = product_invocations(n_out, false).div_ceil(MATMUL_WORKGROUP);
                [x, groups, (groups > 0) as u32]
            }
            Grid::Matvec(invocations) => [invocations.div_ceil(MATVEC_WORKGROUP), 1, 1],
            Grid::Rows { last } => [if last { 1 } else { t }, 1, 1],
            Grid::Attention(groups) => [n_chunks, groups, t],
            Grid::Reduce(heads) => [heads, t, 1],
            Grid::Elementwise(n) => [(t * n).div_ceil(256), 1, 1],
            Grid::Single => [1, 1, 1],
        }
    }
}

/// Collects ops and their uniform parameters, then creates the uniform buffer and the bind
/// groups in one go.
struct OpBuilder<'a> {
    specs: Vec<Spec<'a>>,
    /// Bound by every matvec: `spare` and `norm_parts` (see [`OpBuilder::push_matvec`]).
    act: &'a Activations,
}

struct Spec<'a> {
    kernel: Kernel,
    /// Sets the pipeline's constants ([`Kernel::constants`]).
    variant: u32,
    params: Vec<u8>,
    /// Bound in order after what `binds` puts first.
    resources: Vec<wgpu::BindingResource<'a>>,
    grid: Grid,
    binds: Binds,
}

/// What comes before an op's resources in its bindings.
#[derive(Clone, Copy, PartialEq)]
enum Binds {
    /// Its parameter slot (0), then the Step uniform (1); resources from 2.
    ParamsStep,
    /// Its parameter slot (0); resources from 2 (matvec.wgsl needs no Step).
    ParamsNoStep,
    /// Its parameter slot (0); resources from 1.
    Params,
    /// Nothing: the resources are all (the first may be a uniform written per submit).
    Raw,
}

/// An op's resources: the weight's two textures (bindings 2, 3), then `rest`.
fn with_weight<'a, const N: usize>(
    w: &'a Weight,
    rest: [wgpu::BindingResource<'a>; N],
) -> Vec<wgpu::BindingResource<'a>> {
    w.bindings().into_iter().chain(rest).collect()
}

impl<'a> OpBuilder<'a> {
    fn new(act: &'a Activations) -> Self {
        OpBuilder {
            specs: Vec::new(),
            act,
        }
    }

    fn rmsnorm(&mut self, cfg: &ModelConfig, a: &'a Activations, weight: &'a Buf) -> usize {
        let p = RmsNormParams {
            dim: cfg.dim as u32,
            eps: cfg.rms_eps,
            last_row_only: 0,
            _pad: 0,
        };
        self.add(
            Kernel::RmsNorm,
            0,
            p,
            vec![a.x.binding(), weight.binding(), a.xb.binding()],
            Grid::Rows { last: false },
        )
    }

    /// y (+)= W·x with W the `n_out` rows of `wt.0` from row `wt.1`: for x's row 0 through
    /// matvec.wgsl (`decode`; x bound as a uniform window; `link` its part in an RMSNorm),
    /// else for every token row through matmul.wgsl, one op per uniform window of x's rows
    /// (an op whose window starts past the forward's tokens is skipped when dispatched).
    #[allow(clippy::too_many_arguments)]
    fn product(
        &mut self,
        decode: bool,
        wt: (&'a Weight, u32),
        n_in: u32,
        n_out: u32,
        mode: ProductMode,
        (x, y): (&'a Buf, &'a Buf),
        link: Link<'a>,
    ) -> Vec<usize> {
        let mut p = ProductParams::new(n_in, n_out, mode, wt.1);
        if decode {
            return vec![self.push_matvec(wt.0, p, (x, y), link)];
        }
        // check_shapes makes sure a window holds at least one aligned row.
        let rows = window_tokens(n_in as usize, UNIFORM_ALIGN).unwrap_or(1);
        let row_bytes = n_in as u64 * 4;
        (0..PREFILL_CHUNK)
            .step_by(rows)
            .map(|t_base| {
                p.t_base = t_base as u32;
                p.t_count = rows as u32;
                let window = x.window(t_base as u64 * row_bytes);
                self.push_matmul(wt.0, p, window, y)
            })
            .collect()
    }

    /// A matvec.wgsl op. Where `link` does not use the γ and xn bindings, two ranges of
    /// `spare` stand in: WebGPU forbids binding one buffer range to two writable bindings of
    /// a dispatch (wgpu natively allows it, Chromium's Dawn does not).
    fn push_matvec(
        &mut self,
        w: &'a Weight,
        mut p: ProductParams,
        (x, y): (&'a Buf, &'a Buf),
        link: Link<'a>,
    ) -> usize {
        let (spare, parts) = (&self.act.spare, &self.act.norm_parts);
        let unused = || [0, 1].map(|i| spare.range(i * SPARE_RANGE, SPARE_RANGE));
        let [gamma, xn] = match link {
            Link::None => unused(),
            Link::Produce { gamma, xn } => {
                debug_assert_eq!(p.mode, ProductMode::Accumulate as u32);
                p.mode = ProductMode::AccumulateForNorm as u32;
                [gamma.binding(), xn.binding()]
            }
            Link::Consume { count, eps } => {
                (p.norm_parts, p.eps) = (count, eps);
                unused()
            }
        };
        let swiglu = p.mode == ProductMode::SwiGlu as u32;
        let rest = [x.uniform_window(), y.binding()];
        let norm = [gamma, xn, parts.binding()];
        self.push(Spec {
            kernel: Kernel::Matvec,
            variant: w.ty.id(),
            params: bytemuck::bytes_of(&p).to_vec(),
            resources: with_weight(w, rest).into_iter().chain(norm).collect(),
            grid: Grid::Matvec(product_invocations(p.n_out, swiglu)),
            binds: Binds::ParamsNoStep,
        })
    }

    fn push_matmul(
        &mut self,
        w: &'a Weight,
        p: ProductParams,
        x: wgpu::BindingResource<'a>,
        y: &'a Buf,
    ) -> usize {
        let grid = Grid::Matmul {
            n_out: p.n_out,
            t_base: p.t_base,
            t_count: p.t_count,
        };
        let resources = with_weight(w, [x, y.binding()]);
        self.add(Kernel::Matmul, w.ty.id(), p, resources, grid)
    }

    /// An op whose bindings are (params, step, resources…); `variant` sets the pipeline's
    /// constants, if the kernel has any.
    fn add<P: bytemuck::Pod>(
        &mut self,
        kernel: Kernel,
        variant: u32,
        params: P,
        resources: Vec<wgpu::BindingResource<'a>>,
        grid: Grid,
    ) -> usize {
        self.push(Spec {
            kernel,
            variant,
            params: bytemuck::bytes_of(&params).to_vec(),
            resources,
            grid,
            binds: Binds::ParamsStep,
        })
    }

    /// An op whose bindings are (params, resources…): no Step.
    fn add_plain<P: bytemuck::Pod>(
        &mut self,
        kernel: Kernel,
        params: P,
        resources: Vec<wgpu::BindingResource<'a>>,
    ) -> usize {
        self.push(Spec {
            kernel,
            variant: 0,
            params: bytemuck::bytes_of(&params).to_vec(),
            resources,
            grid: Grid::Single,
            binds: Binds::Params,
        })
    }

    /// An op bound to `resources` alone, dispatched as one workgroup.
    fn add_raw(&mut self, kernel: Kernel, resources: Vec<wgpu::BindingResource<'a>>) -> usize {
        self.push(Spec {
            kernel,
            variant: 0,
            params: Vec::new(),
            resources,
            grid: Grid::Single,
            binds: Binds::Raw,
        })
    }

    /// Adds `spec`; returns its index.
    fn push(&mut self, spec: Spec<'a>) -> usize {
        self.specs.push(spec);
        self.specs.len() - 1
    }

    fn finish(self, gpu: &Gpu, step: &Buf) -> Result<(Uniforms, Vec<Option<Op>>), GpuError> {
        let blobs: Vec<Vec<u8>> = self.specs.iter().map(|s| s.params.clone()).collect();
        let uniforms = Uniforms::new(gpu, &blobs)?;
        let ops = self
            .specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let pipeline = gpu.pipeline(spec.kernel, spec.variant);
                let mut res = Vec::new();
                if spec.binds != Binds::Raw {
                    res.push((0, uniforms.slot(i)));
                }
                if spec.binds == Binds::ParamsStep {
                    res.push((1, step.binding()));
                }
                let first = match spec.binds {
                    Binds::Raw => 0,
                    Binds::Params => 1,
                    Binds::ParamsStep | Binds::ParamsNoStep => 2,
                };
                res.extend((first..).zip(spec.resources.iter().cloned()));
                let bind = gpu.bind_numbered(&pipeline, &res);
                Some(Op {
                    kernel: spec.kernel,
                    pipeline,
                    bind,
                    grid: spec.grid,
                })
            })
            .collect();
        Ok((uniforms, ops))
    }
}

/// Natively the engine is driven synchronously (the browser awaits the async methods).
#[cfg(not(target_arch = "wasm32"))]
impl crate::engine::Engine for GpuEngine {
    fn name(&self) -> &'static str {
        "gpu"
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn grouping(&self) -> Grouping {
        self.grouping
    }
    fn regroup(&mut self, groups: usize) -> Result<(), EngineError> {
        GpuEngine::regroup(self, groups)
    }
    fn feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        pollster::block_on(GpuEngine::feed(self, ids))
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn reset(&mut self) {
        GpuEngine::reset(self)
    }
    fn kv_bytes_per_element(&self) -> usize {
        4
    }
    fn skip_to(&mut self, len: usize) -> Result<(), EngineError> {
        GpuEngine::skip_to(self, len)
    }
    fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError> {
        pollster::block_on(GpuEngine::forward(self, ids, all_logits))
    }
    fn forward_sample(
        &mut self,
        ids: &[u32],
        p: &crate::sampling::SamplingParams,
        step: u32,
    ) -> Result<u32, EngineError> {
        pollster::block_on(GpuEngine::forward_sample(self, ids, p, step))
    }
    fn next_token(
        &mut self,
        gen: &mut crate::engine::Generator,
    ) -> Result<Option<u32>, EngineError> {
        pollster::block_on(GpuEngine::next_token(self, gen))
    }
}
