//! Matrix products with quantized weights: matvec.wgsl for one token (decode), matmul.wgsl
//! for up to a prefill chunk of tokens, one dispatch per 64 KiB uniform window of the input.

use super::{params_struct, Grid, OpSpec};
use crate::gpu::context::{Buf, UNIFORM_WINDOW};
use crate::gpu::kernels::{Kernel, ProductMode, Variant, PRODUCT_ROWS};
use crate::gpu::layout::LANES;
use crate::gpu::Weight;

params_struct! {
    /// `Params` of matmul.wgsl and matvec.wgsl: `y (+)= W[row0..row0 + n_out]·x`.
    ProductParams = "Params" for [Matvec, Matmul] {
        n_in: u32,
        n_out: u32,
        /// A [`ProductMode`] as u32.
        mode: u32,
        /// First weight row (a part of a stacked tensor).
        row0: u32,
        /// matmul.wgsl: the tokens `t_base..t_base + t_count` whose rows of x are in the bound
        /// uniform window (which starts at row `t_base`). matvec.wgsl ignores them.
        t_base: u32,
        t_count: u32,
        /// matvec.wgsl: x is γ ⊙ h and the sums are scaled by 1 / rms(h), from this many
        /// partial sums of h² that a [`ProductMode::AccumulateForNorm`] product wrote (0: x is
        /// used as it is).
        norm_parts: u32,
        /// The RMSNorm's ε, with `norm_parts`.
        eps: f32,
    }
}

impl ProductParams {
    /// `y (+)= W[row0..row0 + n_out]·x`; matmul's windows are set by [`matmul`].
    pub fn new(n_in: u32, n_out: u32, mode: ProductMode, row0: u32) -> Self {
        ProductParams {
            n_in,
            n_out,
            mode: mode as u32,
            row0,
            t_base: 0,
            t_count: 1,
            norm_parts: 0,
            eps: 0.0,
        }
    }
}

/// Invocations (per group of tokens) that matvec.wgsl and matmul.wgsl need for `n_out`
/// outputs (`row_stride` in quant.wgsl): a multiple of [`LANES`], each computing
/// [`PRODUCT_ROWS`] rows, in matvec's SwiGLU mode half as many outputs (a gate and an up row
/// each).
pub fn product_invocations(n_out: u32, swiglu: bool) -> u32 {
    let per = if swiglu {
        PRODUCT_ROWS / 2
    } else {
        PRODUCT_ROWS
    };
    let lanes = LANES as u32;
    n_out.div_ceil(per).div_ceil(lanes) * lanes
}

/// Partial sums of x² that an [`ProductMode::AccumulateForNorm`] matvec of `n_out` rows
/// leaves: one per workgroup.
pub fn norm_parts(n_out: u32) -> u32 {
    product_invocations(n_out, false).div_ceil(Kernel::Matvec.workgroup_size())
}

/// Most inputs matvec.wgsl takes: its uniform `x` (4096 vec4s) fills the uniform window.
pub const MATVEC_MAX_IN: usize = (UNIFORM_WINDOW / 4) as usize;

/// WebGPU's largest `minUniformBufferOffsetAlignment` (a power of two): offsets that are
/// multiples of it are aligned on every device.
pub const UNIFORM_ALIGN: usize = 256;

/// Token rows of an `n_in`-wide activation that one uniform window holds, from an offset
/// that is a multiple of `align` bytes (rows `t_base`, `t_base + this`, … start windows):
/// the most rows that fit, rounded down to a multiple that keeps every window aligned.
/// `None` if not even one aligned step fits.
pub fn window_tokens(n_in: usize, align: usize) -> Option<usize> {
    let row = n_in * 4;
    let step = align / gcd(row, align); // rows per aligned step
    let fit = UNIFORM_WINDOW as usize / row;
    let w = fit / step * step;
    (w > 0).then_some(w)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The RMSNorm bindings of a matvec (6, 7, 8): γ, xn and the partial sums of x².
pub struct NormBinds<'a> {
    pub gamma: wgpu::BindingResource<'a>,
    pub xn: wgpu::BindingResource<'a>,
    pub parts: wgpu::BindingResource<'a>,
}

/// matvec.wgsl: `y (+)= W[row0..]·x` for one token, x (`[n_in]`) bound as a uniform window.
pub fn matvec<'a>(
    w: &'a Weight,
    p: ProductParams,
    x: wgpu::BindingResource<'a>,
    y: &'a Buf,
    norm: NormBinds<'a>,
) -> OpSpec<'a> {
    let swiglu = p.mode == ProductMode::SwiGlu as u32;
    let [wq, ws] = w.bindings();
    let resources = vec![wq, ws, x, y.binding(), norm.gamma, norm.xn, norm.parts];
    let grid = Grid::Flat(product_invocations(p.n_out, swiglu));
    OpSpec::new(Kernel::Matvec, Variant::weights(w.ty), &p, resources, grid)
}

/// matmul.wgsl: `y (+)= W[row0..]·x` for up to `max_tokens` rows of x (`[T][n_in]`), one op
/// per uniform window of x's rows (an op whose window starts past a forward's tokens
/// dispatches nothing). The engine checks at load that a window holds an aligned row of
/// every input it multiplies ([`window_tokens`]).
pub fn matmul<'a>(
    w: &'a Weight,
    p: ProductParams,
    x: &'a Buf,
    y: &'a Buf,
    max_tokens: usize,
) -> Vec<OpSpec<'a>> {
    let rows = window_tokens(p.n_in as usize, UNIFORM_ALIGN).unwrap_or(1);
    let row_bytes = p.n_in as u64 * 4;
    (0..max_tokens)
        .step_by(rows)
        .map(|t_base| {
            let p = ProductParams {
                t_base: t_base as u32,
                t_count: rows as u32,
                ..p
            };
            let [wq, ws] = w.bindings();
            let window = x.window(t_base as u64 * row_bytes);
            let grid = Grid::Matmul {
                invocations: product_invocations(p.n_out, false),
                t_base: p.t_base,
                t_count: p.t_count,
            };
            let resources = vec![wq, ws, window, y.binding()];
            OpSpec::new(Kernel::Matmul, Variant::weights(w.ty), &p, resources, grid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_whole_aligned_rows() {
        // SmolLM2: 576-wide rows are 2304 = 9·256 bytes, so any row starts aligned.
        assert_eq!(window_tokens(576, 256), Some(28));
        assert_eq!(window_tokens(1536, 256), Some(10));
        // 128-byte rows start aligned every second row.
        assert_eq!(window_tokens(32, 256), Some(512));
        assert_eq!(window_tokens(96, 256), Some(170));
        // A whole window per row.
        assert_eq!(window_tokens(16384, 256), Some(1));
        // 65408-byte rows: every second row is aligned, and two do not fit.
        assert_eq!(window_tokens(16352, 256), None);
    }
}
