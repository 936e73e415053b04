//! Every WGSL kernel of the engine, embedded from `shaders/`, with what the Rust side and the
//! WGSL side must agree on, stated once here:
//!
//! - the constants both use (chunk length, most heads per KV head, rows per invocation, the
//!   texture layout's `WIDTH` and `LANES`, the [`ProductMode`]s, the ggml type ids of
//!   [`WEIGHT_TYPES`], [`NON_FINITE_TOKEN`]) and each kernel's workgroup size, written into a
//!   generated prelude ahead of the kernel's source ([`Kernel::source`]), so that no WGSL
//!   file repeats a number the host also uses;
//! - what a kernel's pipeline is specialised for ([`Variant`]: its overridable constants);
//! - the binding layout of each kernel ([`Kernel::bindings`]), which the op constructors of
//!   [`super::ops`] fill and a test checks against the shader (naga reflection).
//!
//! A kernel's module is the prelude + `common.wgsl` + (for kernels that read weights)
//! `quant.wgsl` + (for kernels that touch the KV cache) the cache's element type,
//! `kv_f32.wgsl`, `kv_f16.wgsl` or `kv_q8_0.wgsl` ([`Kernel::kv_part`]) + its own file.

use super::layout;
use crate::gguf::GgmlType;
use crate::model::KvType;

pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
pub const QUANT: &str = include_str!("../../shaders/quant.wgsl");

/// Attention chunk length (positions per workgroup); `CHUNK` in the attention kernels.
pub const ATTENTION_CHUNK: usize = 64;
/// Most query heads per KV head the attention kernels hold; `MAX_REP`.
pub const ATTENTION_MAX_REP: usize = 16;
/// Largest head dimension the attention kernels hold; `MAX_HD`.
pub const ATTENTION_MAX_HEAD_DIM: usize = 256;
/// Weight rows one matvec.wgsl or matmul.wgsl invocation computes; `ROWS`.
pub const PRODUCT_ROWS: u32 = 4;
/// Tokens per invocation in matmul.wgsl; `TT`.
pub const MATMUL_TOKENS: usize = 8;

/// What argmax.wgsl and sample.wgsl write when a logit is NaN or infinite: no token.
pub const NON_FINITE_TOKEN: u32 = u32::MAX;

/// The weight types the kernels dequantize (quant.wgsl), by their ggml ids: `GGML_F32`,
/// `GGML_Q4_1`, `GGML_Q6_K`, … in the prelude. Every type the crate runs
/// ([`crate::gguf::SUPPORTED`]); src/gpu/layout.rs says how each lies on the GPU.
pub const WEIGHT_TYPES: [GgmlType; 13] = crate::gguf::SUPPORTED;

/// What a matrix product does with its result (`mode` in matvec.wgsl / matmul.wgsl, which
/// compare it with the prelude's `MODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductMode {
    /// y = W·x
    Store = 0,
    /// y += W·x (residual connections)
    Accumulate = 1,
    /// y = silu(W_gate·x) · W_up·x, W_gate and W_up stacked (`n_out` rows each); matvec only.
    SwiGlu = 2,
    /// y += W·x, then the first half of the RMSNorm that follows: xn = γ ⊙ y, and each
    /// workgroup's Σ y² into `parts` (the second half is `norm_parts` of the next product);
    /// matvec only.
    AccumulateForNorm = 3,
}

impl ProductMode {
    pub const ALL: [ProductMode; 4] = [
        ProductMode::Store,
        ProductMode::Accumulate,
        ProductMode::SwiGlu,
        ProductMode::AccumulateForNorm,
    ];

    /// Its name in the prelude.
    pub fn wgsl_name(self) -> &'static str {
        match self {
            ProductMode::Store => "MODE_STORE",
            ProductMode::Accumulate => "MODE_ACCUMULATE",
            ProductMode::SwiGlu => "MODE_SWIGLU",
            ProductMode::AccumulateForNorm => "MODE_ACCUMULATE_FOR_NORM",
        }
    }
}

/// What a kernel's pipeline is specialised for: the values of its pipeline-overridable
/// constants. Ops of one kernel and variant share one pipeline ([`super::Gpu::pipeline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// A kernel without overridable constants.
    Plain,
    /// A kernel that reads weights (embed, matvec, matmul), for a weight type: `WTYPE`, the
    /// type's ggml id (one of [`WEIGHT_TYPES`]).
    Weights { ggml_id: u32 },
    /// A kernel that touches the KV cache (kv_store, attention, attention_probe), for the
    /// cache's element type: no constants, its module includes the type's WGSL.
    Cache { kv: KvType },
    /// attention_decode.wgsl for groups of up to `n_rep` query heads (≤ ATTENTION_MAX_REP)
    /// and `head_dim` (≤ ATTENTION_MAX_HEAD_DIM, a multiple of 4): `N_REP` and `HD4`; and the
    /// cache's element type.
    AttentionDecode {
        n_rep: u32,
        head_dim: u32,
        kv: KvType,
    },
}

impl Variant {
    /// The variant of a kernel that reads weights of type `ty`.
    pub fn weights(ty: GgmlType) -> Self {
        Variant::Weights { ggml_id: ty.id() }
    }

    /// The pipeline-overridable constants it sets, by name.
    pub fn constants(self) -> Vec<(&'static str, f64)> {
        match self {
            Variant::Plain | Variant::Cache { .. } => Vec::new(),
            Variant::Weights { ggml_id } => vec![("WTYPE", ggml_id as f64)],
            Variant::AttentionDecode {
                n_rep, head_dim, ..
            } => {
                vec![("N_REP", n_rep as f64), ("HD4", (head_dim / 4) as f64)]
            }
        }
    }

    /// The KV cache's element type its module is made for (f32 where the kernel does not
    /// touch the cache).
    pub fn kv(self) -> KvType {
        match self {
            Variant::Cache { kv } | Variant::AttentionDecode { kv, .. } => kv,
            _ => KvType::F32,
        }
    }
}

/// One compute kernel: its file and whether it dequantizes weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    Embed,
    Matvec,
    Matmul,
    RmsNorm,
    HeadNorm,
    AddBias,
    SwiGlu,
    KvStore,
    KvQuant,
    Attention,
    AttentionDecode,
    AttentionReduce,
    AttentionProbe,
    Argmax,
    Sample,
}

/// What a binding of a kernel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The kernel's `Params` uniform (one 256-byte slot of the engine's uniform buffer).
    Params,
    /// The `Step` uniform of common.wgsl, written once per forward.
    Step,
    /// Another uniform (an activation window, or a uniform written per submit).
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
    /// A `texture_2d<u32>` (a weight's two textures, quant.wgsl).
    Texture,
}

use Slot as S;

impl Kernel {
    pub const ALL: [Kernel; 15] = [
        Kernel::Embed,
        Kernel::Matvec,
        Kernel::Matmul,
        Kernel::RmsNorm,
        Kernel::HeadNorm,
        Kernel::AddBias,
        Kernel::SwiGlu,
        Kernel::KvStore,
        Kernel::KvQuant,
        Kernel::Attention,
        Kernel::AttentionDecode,
        Kernel::AttentionReduce,
        Kernel::AttentionProbe,
        Kernel::Argmax,
        Kernel::Sample,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::Matvec => "matvec",
            Kernel::Matmul => "matmul",
            Kernel::RmsNorm => "rmsnorm",
            Kernel::HeadNorm => "head_norm",
            Kernel::AddBias => "add_bias",
            Kernel::SwiGlu => "swiglu",
            Kernel::KvStore => "kv_store",
            Kernel::KvQuant => "kv_quant",
            Kernel::Attention => "attention",
            Kernel::AttentionDecode => "attention_decode",
            Kernel::AttentionReduce => "attention_reduce",
            Kernel::AttentionProbe => "attention_probe",
            Kernel::Argmax => "argmax",
            Kernel::Sample => "sample",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Kernel::Embed => include_str!("../../shaders/embed.wgsl"),
            Kernel::Matvec => include_str!("../../shaders/matvec.wgsl"),
            Kernel::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Kernel::RmsNorm => include_str!("../../shaders/rmsnorm.wgsl"),
            Kernel::HeadNorm => include_str!("../../shaders/head_norm.wgsl"),
            Kernel::AddBias => include_str!("../../shaders/add_bias.wgsl"),
            Kernel::SwiGlu => include_str!("../../shaders/swiglu.wgsl"),
            Kernel::KvStore => include_str!("../../shaders/kv_store.wgsl"),
            Kernel::KvQuant => include_str!("../../shaders/kv_quant.wgsl"),
            Kernel::Attention => include_str!("../../shaders/attention.wgsl"),
            Kernel::AttentionDecode => include_str!("../../shaders/attention_decode.wgsl"),
            Kernel::AttentionReduce => include_str!("../../shaders/attention_reduce.wgsl"),
            Kernel::AttentionProbe => include_str!("../../shaders/attention_probe.wgsl"),
            Kernel::Argmax => include_str!("../../shaders/argmax.wgsl"),
            Kernel::Sample => include_str!("../../shaders/sample.wgsl"),
        }
    }

    /// Threads per workgroup; `WG` in the kernel's source.
    pub fn workgroup_size(self) -> u32 {
        match self {
            Kernel::AttentionReduce => 8,
            Kernel::Matvec | Kernel::RmsNorm | Kernel::HeadNorm | Kernel::AttentionDecode => 32,
            Kernel::Embed
            | Kernel::Matmul
            | Kernel::KvStore
            | Kernel::KvQuant
            | Kernel::Attention
            | Kernel::AttentionProbe => 64,
            Kernel::SwiGlu | Kernel::AddBias | Kernel::Argmax | Kernel::Sample => 256,
        }
    }

    /// The kernel's bindings of group 0, by binding number.
    pub fn bindings(self) -> &'static [(u32, Slot)] {
        match self {
            Kernel::Embed => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Texture),
                (3, S::Texture),
                (4, S::Read),
                (5, S::ReadWrite),
            ],
            Kernel::Matvec => &[
                (0, S::Params),
                (2, S::Texture),
                (3, S::Texture),
                (4, S::Uniform),
                (5, S::ReadWrite),
                (6, S::ReadWrite),
                (7, S::ReadWrite),
                (8, S::ReadWrite),
            ],
            Kernel::Matmul => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Texture),
                (3, S::Texture),
                (4, S::Uniform),
                (5, S::ReadWrite),
            ],
            Kernel::RmsNorm => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Read),
                (3, S::Read),
                (4, S::ReadWrite),
            ],
            Kernel::HeadNorm | Kernel::AddBias => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::ReadWrite),
                (3, S::Read),
            ],
            Kernel::SwiGlu => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::ReadWrite),
                (3, S::Read),
            ],
            Kernel::KvStore => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::ReadWrite),
                (3, S::ReadWrite),
                (4, S::Read),
                (5, S::Read),
                (6, S::Read),
                (7, S::Read),
                (8, S::ReadWrite),
                (9, S::ReadWrite),
                (10, S::ReadWrite),
                (11, S::Read),
            ],
            Kernel::KvQuant => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Read),
                (3, S::Read),
                (4, S::ReadWrite),
                (5, S::ReadWrite),
            ],
            Kernel::Attention => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Read),
                (3, S::Read),
                (4, S::Read),
                (5, S::ReadWrite),
                (6, S::ReadWrite),
                (7, S::Read),
            ],
            Kernel::AttentionDecode => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Uniform),
                (3, S::Read),
                (4, S::Read),
                (5, S::ReadWrite),
                (6, S::ReadWrite),
                (7, S::Read),
            ],
            Kernel::AttentionReduce => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Read),
                (3, S::Read),
                (4, S::Read),
                (5, S::ReadWrite),
            ],
            Kernel::AttentionProbe => &[
                (0, S::Params),
                (1, S::Step),
                (2, S::Read),
                (3, S::Read),
                (4, S::Read),
                (5, S::ReadWrite),
            ],
            Kernel::Argmax => &[(0, S::Params), (1, S::Read), (2, S::ReadWrite)],
            Kernel::Sample => &[(0, S::Uniform), (1, S::Read), (2, S::ReadWrite)],
        }
    }

    /// Whether the kernel reads quantized weights (and so takes the WTYPE constant).
    pub fn reads_weights(self) -> bool {
        matches!(self, Kernel::Embed | Kernel::Matvec | Kernel::Matmul)
    }

    /// The KV cache buffers the kernel reads in the cache's element type (`kv_buf` of the
    /// kv_*.wgsl files renamed to each), if it touches the cache: kv_store writes pairs of
    /// the type and reads none; kv_quant writes q8_0 blocks.
    pub fn cache_reads(self) -> Option<&'static [&'static str]> {
        match self {
            Kernel::KvStore | Kernel::KvQuant => Some(&[]),
            Kernel::Attention | Kernel::AttentionDecode => Some(&["kc", "vc"]),
            Kernel::AttentionProbe => Some(&["kc"]),
            _ => None,
        }
    }

    /// The variants a kernel is made in for a cache of type `kv` (each weight type, for the
    /// kernels that read weights; `n_rep` 3 and `head_dim` 64 for attention_decode): what the
    /// shader tests validate.
    pub fn variants(self, kv: KvType) -> Vec<Variant> {
        match self {
            _ if self.reads_weights() => WEIGHT_TYPES.map(Variant::weights).to_vec(),
            Kernel::AttentionDecode => vec![Variant::AttentionDecode {
                n_rep: 3,
                head_dim: 64,
                kv,
            }],
            Kernel::KvQuant => vec![Variant::Plain],
            _ if self.cache_reads().is_some() => vec![Variant::Cache { kv }],
            _ => vec![Variant::Plain],
        }
    }

    /// Whether `variant` is one this kernel is made in.
    pub fn takes(self, variant: Variant) -> bool {
        match variant {
            Variant::Plain => self.variants(KvType::F32) == [Variant::Plain],
            Variant::Weights { .. } => self.reads_weights(),
            Variant::Cache { .. } => {
                self.variants(KvType::F32) == [Variant::Cache { kv: KvType::F32 }]
            }
            Variant::AttentionDecode { .. } => self == Kernel::AttentionDecode,
        }
    }

    /// The constants shared with the host, and this kernel's workgroup size as `WG`.
    pub fn prelude(self) -> String {
        let mut s =
            String::from("// Generated by src/gpu/kernels.rs: constants shared with the host.\n");
        let wg = ("WG".to_string(), self.workgroup_size());
        for (name, v) in [wg].into_iter().chain(shared_constants()) {
            s.push_str(&format!("const {name}: u32 = {v}u;\n"));
        }
        s
    }

    /// The complete WGSL module of `variant`.
    pub fn source(self, variant: Variant) -> String {
        let quant = if self.reads_weights() { QUANT } else { "" };
        let kv = self.kv_part(variant.kv());
        format!("{}{COMMON}\n{quant}\n{kv}\n{}", self.prelude(), self.file())
    }

    /// What the kernel includes of the cache's element type `kv`: the type's WGSL up to its
    /// `// per buffer` line, then what follows it once for each buffer the kernel reads, with
    /// `kv_buf` renamed to the buffer (kc_slice, vc_slice). kv_quant writes q8_0 blocks
    /// whatever `kv` is asked. Nothing for the other kernels.
    pub fn kv_part(self, kv: KvType) -> String {
        let Some(reads) = self.cache_reads() else {
            return String::new();
        };
        let kv = if self == Kernel::KvQuant {
            KvType::Q8_0
        } else {
            kv
        };
        let file = match kv {
            KvType::F32 => include_str!("../../shaders/kv_f32.wgsl"),
            KvType::F16 => include_str!("../../shaders/kv_f16.wgsl"),
            KvType::Q8_0 => include_str!("../../shaders/kv_q8_0.wgsl"),
        };
        let (head, per_buffer) = file.split_once("// per buffer\n").unwrap_or((file, ""));
        let mut s = head.to_string();
        for name in reads {
            s.push_str(&per_buffer.replace("kv_buf", name));
        }
        s
    }
}

/// The prelude's constants other than `WG`, by WGSL name: sizes, the product modes, the
/// ggml ids of the weight types, and the token id that reports a non-finite logit.
pub fn shared_constants() -> Vec<(String, u32)> {
    let sizes = [
        ("CHUNK", ATTENTION_CHUNK),
        ("MAX_REP", ATTENTION_MAX_REP),
        ("MAX_HD", ATTENTION_MAX_HEAD_DIM),
        ("ROWS", PRODUCT_ROWS as usize),
        ("TT", MATMUL_TOKENS),
        ("WIDTH", layout::WIDTH),
        ("LANES", layout::LANES),
    ];
    let sizes = sizes.map(|(name, v)| (name.to_string(), v as u32));
    let modes = ProductMode::ALL.map(|m| (m.wgsl_name().to_string(), m as u32));
    let types = WEIGHT_TYPES.map(|ty| (format!("GGML_{}", ty.name()), ty.id()));
    let no_token = [("NON_FINITE_TOKEN".to_string(), NON_FINITE_TOKEN)];
    sizes
        .into_iter()
        .chain(modes)
        .chain(types)
        .chain(no_token)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prelude names the modes and type ids with the host's values, and every weight
    /// type has a texture layout.
    #[test]
    fn prelude_names_modes_and_type_ids() {
        let prelude = Kernel::Matvec.prelude();
        for line in [
            "const WG: u32 = 32u;",
            "const MODE_SWIGLU: u32 = 2u;",
            "const MODE_ACCUMULATE_FOR_NORM: u32 = 3u;",
            "const GGML_Q4_1: u32 = 3u;",
            "const GGML_BF16: u32 = 30u;",
            "const GGML_Q5_0: u32 = 6u;",
            "const GGML_Q6_K: u32 = 14u;",
            "const NON_FINITE_TOKEN: u32 = 4294967295u;",
        ] {
            assert!(prelude.contains(line), "{line} missing from\n{prelude}");
        }
        for ty in WEIGHT_TYPES {
            assert!(layout::texels_per_block(ty).is_some(), "{}", ty.name());
        }
    }
}
