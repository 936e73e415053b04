//! The small kernels: the embedding lookup, RMSNorm, SwiGLU, and sampling (argmax, and
//! temperature / top-k / top-p).

use super::{params_struct, Grid, OpSpec};
use crate::gpu::context::Buf;
use crate::gpu::kernels::{Kernel, Variant};
use crate::gpu::Weight;

params_struct! {
    /// `Params` of embed.wgsl.
    EmbedParams = "Params" for [Embed] {
        dim: u32,
        /// Each row times this (√dim for Gemma, else 1).
        scale: f32,
        _pad: [u32; 2],
    }
}

params_struct! {
    /// `Params` of rmsnorm.wgsl.
    RmsNormParams = "Params" for [RmsNorm] {
        dim: u32,
        eps: f32,
        /// Normalise only the forward's last row, into row 0 of the output.
        last_row_only: u32,
        /// Add the normalised row to the output instead of storing it.
        add: u32,
    }
}

params_struct! {
    /// `Params` of swiglu.wgsl.
    SwiGluParams = "Params" for [SwiGlu] {
        ffn_dim: u32,
        /// GeGLU (tanh GELU) instead of SwiGLU.
        gelu: u32,
        _pad: [u32; 2],
    }
}

params_struct! {
    /// `Params` of add_bias.wgsl.
    AddBiasParams = "Params" for [AddBias] {
        n: u32,
        _pad: [u32; 3],
    }
}

params_struct! {
    /// `Params` of head_norm.wgsl.
    HeadNormParams = "Params" for [HeadNorm] {
        heads: u32,
        head_dim: u32,
        eps: f32,
        _pad: u32,
    }
}

params_struct! {
    /// `Params` of argmax.wgsl.
    ArgmaxParams = "Params" for [Argmax] {
        vocab: u32,
        _pad: [u32; 3],
    }
}

params_struct! {
    /// `Sampling` in sample.wgsl: a uniform written before each sampled forward.
    SamplingUniform = "Sampling" for [Sample] {
        vocab: u32,
        top_k: u32,
        top_p: f32,
        temperature: f32,
        seed: u32,
        step: u32,
        _pad: [u32; 2],
    }
}

/// embed.wgsl: x (`[T][dim]`) = `scale` · the rows of the embedding table `w` for `tokens`
/// (`[T]`).
pub fn embed<'a>(
    w: &'a Weight,
    (dim, scale): (u32, f32),
    tokens: &'a Buf,
    x: &'a Buf,
) -> OpSpec<'a> {
    let [wq, ws] = w.bindings();
    let resources = vec![wq, ws, tokens.binding(), x.binding()];
    let p = EmbedParams {
        dim,
        scale,
        _pad: [0; 2],
    };
    let grid = Grid::PerToken(dim / 32);
    OpSpec::new(Kernel::Embed, Variant::weights(w.ty), &p, resources, grid)
}

/// rmsnorm.wgsl: out = x / rms(x) ⊙ γ for each row of x (`[T][dim]`), or with `last_row_only`
/// for the forward's last row, into row 0 of out.
pub fn rmsnorm<'a>(p: RmsNormParams, x: &'a Buf, gamma: &'a Buf, out: &'a Buf) -> OpSpec<'a> {
    let resources = vec![x.binding(), gamma.binding(), out.binding()];
    let grid = Grid::Rows {
        last: p.last_row_only != 0,
    };
    OpSpec::new(Kernel::RmsNorm, Variant::Plain, &p, resources, grid)
}

/// swiglu.wgsl: gate = silu(gate) ⊙ up (or with `gelu`, gelu(gate) ⊙ up), over
/// `[T][ffn_dim]`.
pub fn swiglu<'a>(ffn_dim: u32, gelu: bool, gate: &'a Buf, up: &'a Buf) -> OpSpec<'a> {
    let p = SwiGluParams {
        ffn_dim,
        gelu: gelu as u32,
        _pad: [0; 2],
    };
    let grid = Grid::Elementwise(ffn_dim);
    let resources = vec![gate.binding(), up.binding()];
    OpSpec::new(Kernel::SwiGlu, Variant::Plain, &p, resources, grid)
}

/// head_norm.wgsl: each `[head_dim]` head of x (`[T][heads][head_dim]`, a binding so that a
/// range of the decode Q|K|V buffer serves) normalised in place, times γ (`[head_dim]`).
pub fn head_norm<'a>(
    p: HeadNormParams,
    x: wgpu::BindingResource<'a>,
    gamma: &'a Buf,
) -> OpSpec<'a> {
    let grid = Grid::Reduce(p.heads);
    OpSpec::new(
        Kernel::HeadNorm,
        Variant::Plain,
        &p,
        vec![x, gamma.binding()],
        grid,
    )
}

/// add_bias.wgsl: x (`[T][n]`, a binding so that a range of the decode Q|K|V buffer
/// serves) += bias (`[n]`) on every row.
pub fn add_bias<'a>(n: u32, x: wgpu::BindingResource<'a>, bias: &'a Buf) -> OpSpec<'a> {
    let p = AddBiasParams { n, _pad: [0; 3] };
    let grid = Grid::Elementwise(n);
    OpSpec::new(
        Kernel::AddBias,
        Variant::Plain,
        &p,
        vec![x, bias.binding()],
        grid,
    )
}

/// argmax.wgsl: token[0] = the index of the largest of `vocab` logits (the lowest on ties),
/// or [`NON_FINITE_TOKEN`](crate::gpu::kernels::NON_FINITE_TOKEN).
pub fn argmax<'a>(vocab: u32, logits: &'a Buf, token: &'a Buf) -> OpSpec<'a> {
    let p = ArgmaxParams {
        vocab,
        _pad: [0; 3],
    };
    let resources = vec![logits.binding(), token.binding()];
    OpSpec::new(Kernel::Argmax, Variant::Plain, &p, resources, Grid::Single)
}

/// sample.wgsl: token[0] = a token drawn from the logits with the settings in `sampling` (a
/// [`SamplingUniform`]), or [`NON_FINITE_TOKEN`](crate::gpu::kernels::NON_FINITE_TOKEN).
pub fn sample<'a>(sampling: &'a Buf, logits: &'a Buf, token: &'a Buf) -> OpSpec<'a> {
    let resources = vec![sampling.binding(), logits.binding(), token.binding()];
    OpSpec::bare(Kernel::Sample, resources, Grid::Single)
}
