//! What the engine keeps on the GPU: the model's weights ([`ModelWeights`]), the activation
//! buffers of one forward ([`Activations`]), and the KV cache at the current grouping with its
//! regrouping maps ([`KvCache`]). Shapes for the default model in ARCHITECTURE.md.

use super::PREFILL_CHUNK;
use crate::engine::EngineError;
use crate::gguf::{GgmlType, Gguf};
use crate::gpu::context::{Buf, Gpu};
use crate::gpu::layout;
use crate::gpu::ops::norm_parts;
use crate::gpu::weight::{Stack, Weight};
use crate::gpu::GpuError;
use crate::model::{ModelConfig, ModelTensors, Tensor};

mod kv_cache;
pub(super) use kv_cache::{check_slots, KvCache};

/// One transformer block's weights.
pub(super) struct LayerWeights {
    pub attn_norm: Buf,              // [dim] f32
    pub qkv: Stack,                  // Q [n_heads·hd][dim] | K [G0·hd][dim] | V [G0·hd][dim]
    pub bias: Option<[Buf; 3]>,      // Q [n_heads·hd], K, V [G0·hd] f32 (Qwen2)
    pub q_norm: Option<Buf>,         // [hd] f32, each query head (Gemma)
    pub k_norm: Option<Buf>,         // [hd] f32, each key head (Gemma)
    pub wo: Weight,                  // [dim][n_heads·hd]
    pub post_attn_norm: Option<Buf>, // [dim] f32 (Gemma)
    pub ffn_norm: Buf,               // [dim] f32
    pub gate_up: Stack,              // gate [ffn][dim] | up [ffn][dim]
    pub w_down: Weight,              // [dim][ffn]
    pub post_ffn_norm: Option<Buf>,  // [dim] f32 (Gemma)
}

/// The model's weights, quantized as in the file (see `layout.rs`); norms as f32.
pub(super) struct ModelWeights {
    pub token_embd: Weight,     // [vocab][dim]
    pub output: Option<Weight>, // [vocab][dim]; None when tied to token_embd
    pub output_norm: Buf,       // [dim] f32
    pub layers: Vec<LayerWeights>,
}

impl ModelWeights {
    pub fn upload(gpu: &Gpu, g: &Gguf<'_>, t: &ModelTensors<'_, '_>) -> Result<Self, EngineError> {
        let layers = t
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(LayerWeights {
                    attn_norm: upload_f32(gpu, g, l.attn_norm)?,
                    qkv: upload_stack(gpu, g, &format!("blk.{i}.qkv"), &[l.wq, l.wk, l.wv])?,
                    bias: match (l.bq, l.bk, l.bv) {
                        (Some(q), Some(k), Some(v)) => Some([
                            upload_f32(gpu, g, q)?,
                            upload_f32(gpu, g, k)?,
                            upload_f32(gpu, g, v)?,
                        ]),
                        _ => None,
                    },
                    q_norm: upload_opt(gpu, g, l.q_norm)?,
                    k_norm: upload_opt(gpu, g, l.k_norm)?,
                    wo: upload(gpu, g, l.wo)?,
                    post_attn_norm: upload_opt(gpu, g, l.post_attn_norm)?,
                    ffn_norm: upload_f32(gpu, g, l.ffn_norm)?,
                    gate_up: upload_stack(
                        gpu,
                        g,
                        &format!("blk.{i}.gate_up"),
                        &[l.w_gate, l.w_up],
                    )?,
                    w_down: upload(gpu, g, l.w_down)?,
                    post_ffn_norm: upload_opt(gpu, g, l.post_ffn_norm)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(ModelWeights {
            token_embd: upload(gpu, g, t.token_embd)?,
            output: match t.tied_output {
                true => None,
                false => Some(upload(gpu, g, t.output)?),
            },
            output_norm: upload_f32(gpu, g, t.output_norm)?,
            layers,
        })
    }

    /// The output head: its own matrix, or the embedding table when tied.
    pub fn head(&self) -> &Weight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Bytes of weights on the GPU (all read once per decode step).
    pub fn bytes(&self) -> u64 {
        let mut n = self.token_embd.bytes() + self.output_norm.size();
        n += self.output.as_ref().map_or(0, |w| w.bytes());
        for l in &self.layers {
            n += l.attn_norm.size() + l.ffn_norm.size();
            let norms = [&l.q_norm, &l.k_norm, &l.post_attn_norm, &l.post_ffn_norm];
            n += norms.into_iter().flatten().map(|b| b.size()).sum::<u64>();
            n += l.bias.iter().flatten().map(|b| b.size()).sum::<u64>();
            n += l.qkv.bytes() + l.gate_up.bytes() + l.wo.bytes() + l.w_down.bytes();
        }
        n
    }
}

/// A weight matrix as the GPU will hold it: (name, type, rows, row length).
type Planned<'a> = (&'a str, GgmlType, usize, usize);

/// The matrices [`ModelWeights::upload`] will make textures of, Q|K|V and gate|up as one
/// where their types agree (as [`Stack`] stacks them).
fn planned<'a>(t: &ModelTensors<'_, 'a>) -> Vec<Planned<'a>> {
    let one = |w: Tensor<'_, 'a>| (w.name, w.ggml_type, w.rows(), w.dims[0] as usize);
    let stack = |ws: &[Tensor<'_, 'a>]| -> Vec<Planned<'a>> {
        match ws.iter().all(|w| w.ggml_type == ws[0].ggml_type) {
            true => vec![(
                ws[0].name,
                ws[0].ggml_type,
                ws.iter().map(|w| w.rows()).sum(),
                ws[0].dims[0] as usize,
            )],
            false => ws.iter().map(|&w| one(w)).collect(),
        }
    };
    let mut out = vec![one(t.token_embd)];
    if !t.tied_output {
        out.push(one(t.output));
    }
    for l in &t.layers {
        out.extend(stack(&[l.wq, l.wk, l.wv]));
        out.extend(stack(&[l.w_gate, l.w_up]));
        out.extend([one(l.wo), one(l.w_down)]);
    }
    out
}

/// Checks, before anything is allocated, that every weight's textures fit the device's
/// largest 2D texture array (a weight taller than one 2D texture is split over its layers:
/// [`Gpu::texture_with`]) and that all of them fit the memory budget, if one is set: the
/// bytes they take.
pub(super) fn check_fits(gpu: &Gpu, t: &ModelTensors<'_, '_>) -> Result<u64, GpuError> {
    let l = &gpu.limits;
    let largest = (
        l.max_texture_dimension_2d as usize,
        l.max_texture_array_layers as usize,
    );
    fits(&planned(t), largest, gpu.budget())
}

fn fits(
    weights: &[Planned<'_>],
    (largest, layers): (usize, usize),
    budget: Option<u64>,
) -> Result<u64, GpuError> {
    let mut total = 0u64;
    for &(name, ty, rows, row_len) in weights {
        let f = layout::footprint(ty, rows, row_len)
            .ok_or_else(|| GpuError::Unsupported(format!("tensor {name} of type {}", ty.name())))?;
        let (w, h) = (f.payload.0.max(f.scales.0), f.payload.1.max(f.scales.1));
        if w > largest || h.div_ceil(largest) > layers {
            return Err(GpuError::Unsupported(format!(
                "{name} ({rows} rows of {row_len} {} weights) needs {h} texture rows of {w} texels; this GPU's largest texture array holds {layers} layers of {largest}×{largest}",
                ty.name()
            )));
        }
        total += f.bytes;
    }
    match budget {
        Some(b) if total > b => Err(GpuError::OutOfMemory(format!(
            "the model's weights take {total} bytes on the GPU, past the budget of {b}"
        ))),
        _ => Ok(total),
    }
}

/// Uploads a `[rows][row_len]` weight in the texture layout of `layout.rs`.
fn upload(gpu: &Gpu, g: &Gguf<'_>, t: Tensor<'_, '_>) -> Result<Weight, GpuError> {
    Weight::upload(gpu, t.name, t.ggml_type, &t.bytes(g), t.rows())
}

/// Uploads tensors of one row length stacked (see [`Stack`]).
fn upload_stack(
    gpu: &Gpu,
    g: &Gguf<'_>,
    label: &str,
    ts: &[Tensor<'_, '_>],
) -> Result<Stack, GpuError> {
    let bytes: Vec<_> = ts.iter().map(|t| t.bytes(g)).collect();
    let parts: Vec<_> = ts
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (t.name, t.ggml_type, &b[..], t.rows()))
        .collect();
    Stack::upload(gpu, label, &parts)
}

/// A norm the architecture may not have.
fn upload_opt(
    gpu: &Gpu,
    g: &Gguf<'_>,
    t: Option<Tensor<'_, '_>>,
) -> Result<Option<Buf>, EngineError> {
    t.map(|t| upload_f32(gpu, g, t)).transpose()
}

/// Norm weights are uploaded as f32 whatever their file type.
fn upload_f32(gpu: &Gpu, g: &Gguf<'_>, t: Tensor<'_, '_>) -> Result<Buf, EngineError> {
    let v = t.f32(g)?;
    Ok(gpu.storage_with(t.name, bytemuck::cast_slice(&v))?)
}

/// Bytes of each of the two ranges of [`Activations::spare`] (a multiple of every device's
/// storage offset alignment, which WebGPU caps at 256).
pub(super) const SPARE_RANGE: u64 = 256;

/// Activation buffers, sized for PREFILL_CHUNK tokens (T). The logits of every row of a
/// prefill, which only the all-logits forward reads (perplexity), live in [`AllLogits`],
/// made on first use.
pub(super) struct Activations {
    pub sampling: Buf,   // uniform SamplingUniform, written before a sampled forward
    pub step: Buf,       // uniform Step
    pub tokens: Buf,     // [T] u32
    pub x: Buf,          // [T][dim] residual stream
    pub xb: Buf,         // [T][dim] normalised (also bound as a uniform window by matvec)
    pub norm_parts: Buf, // decode: Σ x² by workgroup of a dim-row matvec (matvec.wgsl)
    pub spare: Buf,      // 2 × SPARE_RANGE, bound where a matvec does not use its γ and xn
    pub q: Buf,          // [T][n_heads][hd] (rotated in place by kv_store; uniform window too)
    pub k0: Buf,         // [T][G0][hd] native-head K projection
    pub v0: Buf,         // [T][G0][hd]
    pub qkv: Buf,        // decode: [n_heads·hd | G0·hd | G0·hd], q, k0, v0 of one token
    pub att: Buf,        // [T][n_heads][hd] (uniform window too)
    pub ml: Buf,         // [T][n_heads][max_chunks] (m, l)
    pub part: Buf,       // [T][n_heads][max_chunks][hd]
    pub gate: Buf,       // [T][ffn] (uniform window too)
    pub up: Buf,         // [T][ffn]
    pub logits: Buf,     // [vocab]: the last row's
    pub token_out: Buf,  // [1] u32
    pub staging: Buf,    // readback of logits [vocab]
    pub rope: Buf,       // [capacity][hd/2] (cos, sin)
    pub rope_local: Option<Buf>, // the same for sliding-window layers (their own base)
    pub probe: Buf,      // [n_heads][capacity]: the attention view's weights (probe.rs)
    pub probe_staging: Buf, // readback of `probe`
}

impl Activations {
    pub fn new(
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
        let (ffn, vocab, mc) = (cfg.ffn_dim as u64, cfg.vocab_size as u64, max_chunks as u64);
        let s = |label: &str, n: u64| gpu.storage(label, n * f);
        let table = cfg.rope_table(capacity); // with Llama 3's frequency factors, if any
        use wgpu::BufferUsages as U;
        Ok(Activations {
            step: gpu.buffer("step", 16, U::UNIFORM | U::COPY_DST)?,
            sampling: gpu.buffer("sampling", 32, U::UNIFORM | U::COPY_DST)?,
            tokens: s("tokens", t)?,
            x: s("x", t * dim)?,
            xb: gpu.activation("xb", t * dim * f)?,
            norm_parts: s("norm parts", norm_parts(cfg.dim as u32) as u64)?,
            spare: s("unused matvec bindings", 2 * SPARE_RANGE / f)?,
            q: gpu.activation("q", t * nh * hd * f)?,
            qkv: gpu.activation("qkv", (nh + 2 * g0) * hd * f)?,
            k0: s("k0", t * g0 * hd)?,
            v0: s("v0", t * g0 * hd)?,
            att: gpu.activation("att", t * nh * hd * f)?,
            ml: s("attention m,l", t * nh * mc * 2)?,
            part: s("attention partials", t * nh * mc * hd)?,
            gate: gpu.activation("gate", t * ffn * f)?,
            up: s("up", t * ffn)?,
            logits: s("logits", vocab)?,
            token_out: s("token", 4)?,
            staging: gpu.buffer("staging", vocab * f, U::MAP_READ | U::COPY_DST)?,
            rope: gpu.storage_with("rope table", bytemuck::cast_slice(&table))?,
            rope_local: match cfg.local_rope_table(capacity) {
                Some(t) => Some(gpu.storage_with("local rope table", bytemuck::cast_slice(&t))?),
                None => None,
            },
            probe: s("attention weights", nh * capacity as u64)?,
            probe_staging: gpu.buffer(
                "attention weights readback",
                nh * capacity as u64 * f,
                U::MAP_READ | U::COPY_DST,
            )?,
        })
    }

    /// One of the two ranges of `spare` that stand in for a matvec's unused γ and xn.
    pub fn spare_range(&self, i: u64) -> wgpu::BindingResource<'_> {
        self.spare.range(i * SPARE_RANGE, SPARE_RANGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight too tall for the device's textures, or weights past the budget, are refused
    /// by name before any allocation.
    #[test]
    fn weights_that_do_not_fit_are_named_up_front() {
        let small = [("blk.0.ffn_up.weight", GgmlType::Q8_0, 64, 256)];
        let device = (8192, 256);
        let bytes = fits(&small, device, None).unwrap();
        assert!(bytes >= 64 * 256 / 32 * 34);
        assert_eq!(fits(&small, device, Some(bytes)).unwrap(), bytes);
        let e = fits(&small, device, Some(bytes - 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("past the budget"), "{e}");
        // 262,144 rows of 4,096 Q8_0 weights: 67M texels, 16,384 texture rows: two layers of
        // 8,192, or too many for a device of one layer.
        let tall = [("token_embd.weight", GgmlType::Q8_0, 262_144, 4096)];
        assert!(fits(&tall, device, None).is_ok());
        let e = fits(&tall, (8192, 1), None).unwrap_err().to_string();
        assert!(e.contains("token_embd.weight (262144 rows of 4096 Q8_0 weights) needs 16384 texture rows of 4096 texels; this GPU's largest texture array holds 1 layers of 8192×8192"), "{e}");
    }
}
