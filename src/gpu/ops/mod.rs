//! One constructor per kernel (ratchet's `ops/` are the model): each takes what its kernel
//! reads and writes, and returns an [`OpSpec`] that holds the kernel's parameter struct (the
//! `bytemuck` twin of its WGSL `Params`), the resources in the order of
//! [`Kernel::bindings`], and its dispatch [`Grid`]. The engine's forward
//! (`engine/graph.rs`) and the kernel tests build their dispatches with the same
//! constructors; [`OpList`] turns many specs into ops (one uniform buffer for all their
//! parameters), [`run`] runs one on its own.

mod attention;
mod product;
mod rows;

pub use attention::*;
pub use product::*;
pub use rows::*;

use super::context::{Buf, Gpu, Uniforms};
use super::kernels::{Kernel, Slot, Variant};
use super::GpuError;

/// Which forward an op is built for: decode (one token; matvec.wgsl, attention_decode.wgsl)
/// or a prefill chunk (up to `PREFILL_CHUNK` tokens; matmul.wgsl, attention.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Decode,
    Prefill,
}

impl Pass {
    /// The pass of a forward of `tokens` tokens.
    pub fn of(tokens: usize) -> Pass {
        match tokens {
            1 => Pass::Decode,
            _ => Pass::Prefill,
        }
    }
}

/// One dispatch, before its bind group exists.
pub struct OpSpec<'a> {
    pub kernel: Kernel,
    /// What its pipeline is specialised for.
    pub variant: Variant,
    /// The `Params` uniform's bytes; empty for a kernel without one.
    params: Vec<u8>,
    /// Bound in the order of the kernel's non-`Params`, non-`Step` slots.
    resources: Vec<wgpu::BindingResource<'a>>,
    pub grid: Grid,
}

impl<'a> OpSpec<'a> {
    /// An op of `kernel` with parameters `params` (if the kernel has a `Params` slot).
    pub fn new<P: bytemuck::Pod>(
        kernel: Kernel,
        variant: Variant,
        params: &P,
        resources: Vec<wgpu::BindingResource<'a>>,
        grid: Grid,
    ) -> Self {
        OpSpec {
            kernel,
            variant,
            params: bytemuck::bytes_of(params).to_vec(),
            resources,
            grid,
        }
    }

    /// An op of a kernel without a `Params` slot.
    pub fn bare(kernel: Kernel, resources: Vec<wgpu::BindingResource<'a>>, grid: Grid) -> Self {
        OpSpec {
            kernel,
            variant: Variant::Plain,
            params: Vec::new(),
            resources,
            grid,
        }
    }

    /// The bind group entries: the kernel's slots filled from `params`, `step` and the
    /// resources, in order. Errors if the resources do not fill the slots exactly.
    fn entries(
        &self,
        params: Option<wgpu::BindingResource<'a>>,
        step: Option<wgpu::BindingResource<'a>>,
    ) -> Result<Vec<(u32, wgpu::BindingResource<'a>)>, GpuError> {
        let mut rest = self.resources.iter().cloned();
        let mut out = Vec::new();
        for &(binding, slot) in self.kernel.bindings() {
            let r = match slot {
                Slot::Params => params.clone(),
                Slot::Step => step.clone(),
                _ => rest.next(),
            };
            let r = r.ok_or_else(|| self.mismatch("a binding has no resource"))?;
            out.push((binding, r));
        }
        match rest.next() {
            Some(_) => Err(self.mismatch("more resources than bindings")),
            None => Ok(out),
        }
    }

    fn mismatch(&self, what: &str) -> GpuError {
        GpuError::Internal(format!("{}: {what}", self.kernel.name()))
    }
}

/// How many workgroups an op dispatches, as a function of the forward's tokens `t` and the
/// attention chunks `n_chunks` covering its positions (both known only per submit).
#[derive(Debug, Clone, Copy)]
pub enum Grid {
    /// (⌈n/WG⌉, T, 1): n invocations per token.
    PerToken(u32),
    /// (⌈invocations/WG⌉, ⌈tokens/TT⌉, 1) for the tokens of `t_base..t_base + t_count` that
    /// the forward has; nothing if none (matmul.wgsl).
    Matmul {
        invocations: u32,
        t_base: u32,
        t_count: u32,
    },
    /// (⌈invocations/WG⌉, 1, 1)
    Flat(u32),
    /// (T, 1, 1), or 1 when `last`: one workgroup per row.
    Rows { last: bool },
    /// (n_chunks, G, T)
    Attention(u32),
    /// (n_heads, T, 1)
    Reduce(u32),
    /// ⌈T·n/WG⌉ workgroups
    Elementwise(u32),
    /// One workgroup.
    Single,
    /// (n, 1, 1): one workgroup per item, whatever the tokens.
    Each(u32),
}

impl Grid {
    /// The dispatch size for a kernel of `wg` threads per workgroup.
    pub fn size(self, wg: u32, t: u32, n_chunks: u32) -> [u32; 3] {
        match self {
            Grid::PerToken(n) => [n.div_ceil(wg), t, 1],
            Grid::Matmul {
                invocations,
                t_base,
                t_count,
            } => {
                let tokens = t.saturating_sub(t_base).min(t_count);
                let groups = tokens.div_ceil(super::kernels::MATMUL_TOKENS as u32);
                [invocations.div_ceil(wg), groups, (groups > 0) as u32]
            }
            Grid::Flat(n) => [n.div_ceil(wg), 1, 1],
            Grid::Rows { last } => [if last { 1 } else { t }, 1, 1],
            Grid::Attention(groups) => [n_chunks, groups, t],
            Grid::Reduce(heads) => [heads, t, 1],
            Grid::Elementwise(n) => [(t * n).div_ceil(wg), 1, 1],
            Grid::Single => [1, 1, 1],
            Grid::Each(n) => [n, 1, 1],
        }
    }
}

/// A kernel bound to its buffers, ready to record.
pub struct Op {
    pub kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    grid: Grid,
}

impl Op {
    /// Records the dispatch for a forward of `t` tokens over `n_chunks` attention chunks
    /// (nothing if its grid is empty).
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, t: u32, n_chunks: u32) {
        let [x, y, z] = self.grid.size(self.kernel.workgroup_size(), t, n_chunks);
        if x * y * z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, z);
    }

    fn build(
        gpu: &Gpu,
        spec: &OpSpec<'_>,
        params: Option<wgpu::BindingResource<'_>>,
        step: Option<wgpu::BindingResource<'_>>,
    ) -> Result<Op, GpuError> {
        let pipeline = gpu.pipeline(spec.kernel, spec.variant);
        let bind = gpu.bind_numbered(&pipeline, &spec.entries(params, step)?);
        Ok(Op {
            kernel: spec.kernel,
            pipeline,
            bind,
            grid: spec.grid,
        })
    }
}

/// Collects op specs, then makes one uniform buffer for all their parameters and the ops.
#[derive(Default)]
pub struct OpList<'a> {
    specs: Vec<OpSpec<'a>>,
}

impl<'a> OpList<'a> {
    /// Adds `spec`; returns its index.
    pub fn push(&mut self, spec: OpSpec<'a>) -> usize {
        self.specs.push(spec);
        self.specs.len() - 1
    }

    /// Adds every spec; returns their indices.
    pub fn extend(&mut self, specs: Vec<OpSpec<'a>>) -> Vec<usize> {
        specs.into_iter().map(|s| self.push(s)).collect()
    }

    /// The ops, in the order pushed, each bound to `step` where its kernel reads the Step,
    /// and the uniform buffer of their parameters (which must live as long as they do).
    pub fn finish(self, gpu: &Gpu, step: &Buf) -> Result<(Uniforms, Vec<Op>), GpuError> {
        let blobs: Vec<Vec<u8>> = self.specs.iter().map(|s| s.params.clone()).collect();
        let uniforms = Uniforms::new(gpu, &blobs)?;
        let ops = self
            .specs
            .iter()
            .enumerate()
            .map(|(i, spec)| Op::build(gpu, spec, Some(uniforms.slot(i)), Some(step.binding())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((uniforms, ops))
    }
}

/// Runs one op on its own (one submit), for a forward of `t` tokens over `n_chunks`
/// attention chunks; `step` is bound where the kernel reads the Step. For kernel tests and
/// tools; the engine records its ops into one pass instead.
pub fn run(
    gpu: &Gpu,
    spec: &OpSpec<'_>,
    step: Option<&Buf>,
    t: u32,
    n_chunks: u32,
) -> Result<(), GpuError> {
    let params = (!spec.params.is_empty())
        .then(|| gpu.uniform_with(&spec.params))
        .transpose()?;
    let op = Op::build(
        gpu,
        spec,
        params.as_ref().map(Buf::binding),
        step.map(Buf::binding),
    )?;
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        op.dispatch(&mut pass, t, n_chunks);
    }
    gpu.submit(enc);
    gpu.check()
}

/// One field of a parameter struct: name, byte offset, byte size.
pub type Field = (&'static str, usize, usize);

/// A kernel parameter struct's layout, for the test that holds it to its WGSL twin.
pub trait ParamsLayout: bytemuck::Pod {
    /// The WGSL struct's name.
    const WGSL: &'static str;
    /// The kernels whose parameter slot holds it.
    const KERNELS: &'static [Kernel];
    fn fields() -> Vec<Field>;
}

/// Declares a `#[repr(C)]` parameter struct and its [`ParamsLayout`].
macro_rules! params_struct {
    ($(#[$m:meta])* $name:ident = $wgsl:literal for [$($k:ident),*] {
        $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)?
    }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }

        impl $crate::gpu::ops::ParamsLayout for $name {
            const WGSL: &'static str = $wgsl;
            const KERNELS: &'static [$crate::gpu::kernels::Kernel] =
                &[$($crate::gpu::kernels::Kernel::$k),*];
            fn fields() -> Vec<$crate::gpu::ops::Field> {
                vec![$((stringify!($f), std::mem::offset_of!($name, $f), std::mem::size_of::<$t>())),*]
            }
        }
    };
}
pub(crate) use params_struct;

params_struct! {
    /// `Step` in common.wgsl: what changes per forward (one uniform, written per submit).
    Step = "Step" for [Embed, Matmul, RmsNorm, SwiGlu, KvStore, KvQuant, Attention, AttentionDecode, AttentionReduce, AttentionProbe] {
        pos0: u32,
        n_tokens: u32,
        n_chunks: u32,
        _pad: u32,
    }
}

impl Step {
    /// A forward of `n_tokens` tokens from position `pos0`.
    pub fn new(pos0: usize, n_tokens: usize) -> Self {
        Step {
            pos0: pos0 as u32,
            n_tokens: n_tokens as u32,
            n_chunks: (pos0 + n_tokens).div_ceil(super::kernels::ATTENTION_CHUNK) as u32,
            _pad: 0,
        }
    }
}

/// Every parameter struct's layout, with its WGSL name and kernels (for the layout test).
pub fn params_layouts() -> Vec<(&'static str, &'static [Kernel], usize, Vec<Field>)> {
    fn one<P: ParamsLayout>() -> (&'static str, &'static [Kernel], usize, Vec<Field>) {
        (P::WGSL, P::KERNELS, std::mem::size_of::<P>(), P::fields())
    }
    vec![
        one::<Step>(),
        one::<EmbedParams>(),
        one::<ProductParams>(),
        one::<RmsNormParams>(),
        one::<SwiGluParams>(),
        one::<KvStoreParams>(),
        one::<KvQuantParams>(),
        one::<AttentionParams>(),
        one::<ReduceParams>(),
        one::<ProbeParams>(),
        one::<ArgmaxParams>(),
        one::<SamplingUniform>(),
    ]
}
