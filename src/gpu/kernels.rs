//! Every WGSL kernel of the engine, embedded from `shaders/`, with what the Rust side and the
//! WGSL side must agree on, stated once here:
//!
//! - the constants both use (chunk length, most heads per KV head, rows per invocation, the
//!   texture layout's `WIDTH` and `LANES`) and each kernel's workgroup size, written into a
//!   generated prelude ahead of the kernel's source ([`Kernel::source`]), so that no WGSL file
//!   repeats a number the host also uses;
//! - the binding layout of each kernel ([`Kernel::bindings`]), which the op constructors of
//!   [`super::ops`] fill and a test checks against the shader (naga reflection).
//!
//! A kernel's module is the prelude + `common.wgsl` + (for kernels that read weights)
//! `quant.wgsl` + its own file.

use super::layout;

pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
pub const QUANT: &str = include_str!("../../shaders/quant.wgsl");

/// Attention chunk length (positions per workgroup); `CHUNK` in the attention kernels.
pub const ATTENTION_CHUNK: usize = 64;
/// Most query heads per KV head the attention kernels hold; `MAX_REP`.
pub const ATTENTION_MAX_REP: usize = 16;
/// Largest head dimension the attention kernels hold; `MAX_HD`.
pub const ATTENTION_MAX_HEAD_DIM: usize = 128;
/// Weight rows one matvec.wgsl or matmul.wgsl invocation computes; `ROWS`.
pub const PRODUCT_ROWS: u32 = 4;
/// Tokens per invocation in matmul.wgsl; `TT`.
pub const MATMUL_TOKENS: usize = 8;

/// One compute kernel: its file and whether it dequantizes weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    Embed,
    Matvec,
    Matmul,
    RmsNorm,
    SwiGlu,
    KvStore,
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
    pub const ALL: [Kernel; 12] = [
        Kernel::Embed,
        Kernel::Matvec,
        Kernel::Matmul,
        Kernel::RmsNorm,
        Kernel::SwiGlu,
        Kernel::KvStore,
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
            Kernel::SwiGlu => "swiglu",
            Kernel::KvStore => "kv_store",
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
            Kernel::SwiGlu => include_str!("../../shaders/swiglu.wgsl"),
            Kernel::KvStore => include_str!("../../shaders/kv_store.wgsl"),
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
            Kernel::Matvec | Kernel::RmsNorm | Kernel::AttentionDecode => 32,
            Kernel::Embed
            | Kernel::Matmul
            | Kernel::KvStore
            | Kernel::Attention
            | Kernel::AttentionProbe => 64,
            Kernel::SwiGlu | Kernel::Argmax | Kernel::Sample => 256,
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

    /// The pipeline-overridable constants of the kernel and their values for `variant`
    /// (a weight type id for kernels that read weights; [`attention_variant`] for
    /// attention_decode; nothing for the others).
    pub fn constants(self, variant: u32) -> Vec<(&'static str, f64)> {
        match self {
            _ if self.reads_weights() => vec![("WTYPE", variant as f64)],
            Kernel::AttentionDecode => vec![
                ("N_REP", (variant & 0xFF) as f64),
                ("HD4", (variant >> 8) as f64),
            ],
            _ => Vec::new(),
        }
    }

    /// The constants shared with the host, and this kernel's workgroup size as `WG`.
    pub fn prelude(self) -> String {
        let consts: [(&str, usize); 8] = [
            ("WG", self.workgroup_size() as usize),
            ("CHUNK", ATTENTION_CHUNK),
            ("MAX_REP", ATTENTION_MAX_REP),
            ("MAX_HD", ATTENTION_MAX_HEAD_DIM),
            ("ROWS", PRODUCT_ROWS as usize),
            ("TT", MATMUL_TOKENS),
            ("WIDTH", layout::WIDTH),
            ("LANES", layout::LANES),
        ];
        let mut s =
            String::from("// Generated by src/gpu/kernels.rs: constants shared with the host.\n");
        for (name, v) in consts {
            s.push_str(&format!("const {name}: u32 = {v}u;\n"));
        }
        s
    }

    /// The complete WGSL module.
    pub fn source(self) -> String {
        let quant = if self.reads_weights() { QUANT } else { "" };
        format!("{}{COMMON}\n{quant}\n{}", self.prelude(), self.file())
    }
}

/// The pipeline variant of attention_decode.wgsl for `n_rep` query heads per KV head and
/// `head_dim` (≤ ATTENTION_MAX_REP and ATTENTION_MAX_HEAD_DIM, a multiple of 4).
pub fn attention_variant(n_rep: usize, head_dim: usize) -> u32 {
    (n_rep as u32) | ((head_dim as u32 / 4) << 8)
}
