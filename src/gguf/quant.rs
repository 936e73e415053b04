//! ggml tensor types and dequantization to f32.
//!
//! Block layouts follow ggml's `ggml-common.h` and `dequantize_row_*` in `ggml-quants.c`:
//! - the legacy types: a block of 32 weights shares one f16 scale `d` (and for Q4_1/Q5_1 one
//!   f16 minimum `m`); Q5_0/Q5_1 keep the fifth bit of each weight in a 32-bit mask `qh`;
//! - the K-quants: a super-block of 256 weights with an f16 scale `d` (and minimum scale
//!   `dmin`) and per sub-block (16 or 32 weights) small integer scales, packed in 6 bits
//!   (Q3_K, Q4_K, Q5_K), 4 bits (Q2_K) or stored as i8 (Q6_K): `kquant.rs`.
//!
//! The `#[repr(C)]` structs below state each layout once and assert its size at compile time;
//! decoding reads the same fields from unaligned file bytes.

use super::kquant::{dequant_q2_k, dequant_q3_k, dequant_q45_k, dequant_q6_k};
use super::GgufError;
use half::{bf16, f16};

/// ggml tensor types by their GGUF ids. Only some are supported for compute; the others are
/// named so that an unsupported file gets a precise message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Iq2Xxs,
    Iq2Xs,
    Iq3Xxs,
    Iq1S,
    Iq4Nl,
    Iq3S,
    Iq2S,
    Iq4Xs,
    I8,
    I16,
    I32,
    I64,
    F64,
    Iq1M,
    BF16,
    Tq1_0,
    Tq2_0,
    Mxfp4,
}

/// The types this crate can dequantize and run.
pub const SUPPORTED: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Weights per block for the quantized types used here.
pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK8_0: usize = 32;

/// `d: f16, qs: 32 × 4-bit` — value = (q − 8) · d.
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK4_0 / 2],
}
/// `d: f16, m: f16, qs: 32 × 4-bit` — value = q · d + m.
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK4_1 / 2],
}
/// `d: f16, qs: 32 × i8` — value = q · d.
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK8_0],
}
/// `d: f16, qh: 32 fifth bits, qs: 32 × 4-bit` — value = (q | h·16 − 16) · d.
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
/// `d, m: f16, qh, qs` — value = (q | h·16) · d + m.
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
/// Weights per K-quant super-block.
pub const QK_K: usize = 256;
/// 16 sub-blocks of 16: `scales` (low nibble scale, high nibble min), 2-bit `qs`, `d`, `dmin`.
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: u16,
    pub dmin: u16,
}
/// 16 sub-blocks of 16: the high bit in `hmask`, 2-bit `qs`, 6-bit scales packed in 12 bytes.
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: u16,
}
/// 8 sub-blocks of 32: `d`, `dmin`, 6-bit scales and mins packed in 12 bytes, 4-bit `qs`.
#[repr(C)]
pub struct BlockQ4K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
/// As Q4_K with a fifth bit per weight in `qh`.
#[repr(C)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
/// 16 sub-blocks of 16: low 4 bits in `ql`, high 2 in `qh`, i8 `scales`, `d` — (q − 32)·d·s.
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl GgmlType {
    pub fn from_u32(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            16 => Iq2Xxs,
            17 => Iq2Xs,
            18 => Iq3Xxs,
            19 => Iq1S,
            20 => Iq4Nl,
            21 => Iq3S,
            22 => Iq2S,
            23 => Iq4Xs,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => Iq1M,
            30 => BF16,
            34 => Tq1_0,
            35 => Tq2_0,
            39 => Mxfp4,
            _ => return None,
        })
    }

    /// The GGUF id of the type (the inverse of [`GgmlType::from_u32`]).
    pub fn id(self) -> u32 {
        (0..40)
            .find(|&i| GgmlType::from_u32(i) == Some(self))
            .unwrap_or(u32::MAX)
    }

    /// ggml's name for the type, as users see it in tools.
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            Iq2Xxs => "IQ2_XXS",
            Iq2Xs => "IQ2_XS",
            Iq3Xxs => "IQ3_XXS",
            Iq1S => "IQ1_S",
            Iq4Nl => "IQ4_NL",
            Iq3S => "IQ3_S",
            Iq2S => "IQ2_S",
            Iq4Xs => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            Iq1M => "IQ1_M",
            BF16 => "BF16",
            Tq1_0 => "TQ1_0",
            Tq2_0 => "TQ2_0",
            Mxfp4 => "MXFP4",
        }
    }

    /// (elements per block, bytes per block), from ggml's type traits.
    pub fn block(self) -> (u64, u64) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Iq4Nl => (32, 18),
            Mxfp4 => (32, 17),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            Iq2Xxs => (256, 66),
            Iq2Xs => (256, 74),
            Iq3Xxs => (256, 98),
            Iq1S => (256, 50),
            Iq3S => (256, 110),
            Iq2S => (256, 82),
            Iq4Xs => (256, 136),
            Iq1M => (256, 56),
            Tq1_0 => (256, 54),
            Tq2_0 => (256, 66),
        }
    }

    pub fn is_supported(self) -> bool {
        SUPPORTED.contains(&self)
    }

    /// The error for a tensor of an unsupported type (tensor name filled in by the caller).
    pub fn unsupported(self, tensor: &str) -> GgufError {
        GgufError::UnsupportedTensorType {
            type_name: self.name(),
            tensor: tensor.to_string(),
            supported: SUPPORTED.map(|t| t.name()).join(", "),
        }
    }
}

pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `n` elements of type `ty` from `bytes` into f32.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, GgufError> {
    if !ty.is_supported() {
        return Err(ty.unsupported(""));
    }
    let (block, block_bytes) = ty.block();
    let (block, block_bytes) = (block as usize, block_bytes as usize);
    if !n.is_multiple_of(block) || bytes.len() != n / block * block_bytes {
        return Err(GgufError::BadTensorData {
            tensor: String::new(),
            reason: format!("{} bytes cannot hold {n} {} values", bytes.len(), ty.name()),
        });
    }
    let mut out = Vec::with_capacity(n);
    let blocks = bytes.chunks_exact(block_bytes);
    match ty {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| f16_at(b, 0))),
        GgmlType::BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::Q4_0 => blocks.for_each(|b| dequant_q4_0(b, &mut out)),
        GgmlType::Q4_1 => blocks.for_each(|b| dequant_q4_1(b, &mut out)),
        GgmlType::Q8_0 => blocks.for_each(|b| dequant_q8_0(b, &mut out)),
        GgmlType::Q5_0 => blocks.for_each(|b| dequant_q5(b, &mut out, false)),
        GgmlType::Q5_1 => blocks.for_each(|b| dequant_q5(b, &mut out, true)),
        GgmlType::Q2K => blocks.for_each(|b| dequant_q2_k(b, &mut out)),
        GgmlType::Q3K => blocks.for_each(|b| dequant_q3_k(b, &mut out)),
        GgmlType::Q4K => blocks.for_each(|b| dequant_q45_k(b, &mut out, false)),
        GgmlType::Q5K => blocks.for_each(|b| dequant_q45_k(b, &mut out, true)),
        GgmlType::Q6K => blocks.for_each(|b| dequant_q6_k(b, &mut out)),
        _ => return Err(ty.unsupported("")),
    }
    Ok(out)
}

/// Low nibbles hold weights 0..16 of the block, high nibbles weights 16..32.
fn nibbles(qs: &[u8]) -> impl Iterator<Item = u8> + '_ {
    qs.iter().map(|q| q & 0x0F).chain(qs.iter().map(|q| q >> 4))
}

fn dequant_q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(nibbles(&b[2..18]).map(|q| (q as f32 - 8.0) * d));
}

fn dequant_q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    out.extend(nibbles(&b[4..20]).map(|q| q as f32 * d + m));
}

fn dequant_q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
}

/// Q5_0 (`d, qh, qs`) or Q5_1 (`d, m, qh, qs`): weight j takes bit j of `qh` as its fifth.
fn dequant_q5(b: &[u8], out: &mut Vec<f32>, with_min: bool) {
    let d = f16_at(b, 0);
    // Q5_1: q·d + m; Q5_0: (q − 16)·d, as ggml rounds them.
    let (m, offset, rest) = if with_min {
        (f16_at(b, 2), 0.0, &b[4..])
    } else {
        (0.0, 16.0, &b[2..])
    };
    let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let qs = &rest[4..20];
    let fifth = |j: usize| (((qh >> j) & 1) << 4) as u8;
    let low = (0..16).map(|j| (qs[j] & 0x0F) | fifth(j));
    let high = (0..16).map(|j| (qs[j] >> 4) | fifth(j + 16));
    out.extend(low.chain(high).map(|q| (q as f32 - offset) * d + m));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_1_block_decodes_low_then_high_nibbles() {
        let mut b = Vec::new();
        b.extend(h(0.5));
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        let v = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        assert_eq!(v[0], -1.0);
        assert_eq!(v[15], 15.0 * 0.5 - 1.0);
        assert_eq!(v[16], 15.0 * 0.5 - 1.0);
        assert_eq!(v[31], -1.0);
    }

    #[test]
    fn q4_0_and_q8_0_blocks() {
        let mut b = h(2.0).to_vec();
        b.extend([0x80u8; 16]); // low nibble 0 → −8·2, high nibble 8 → 0
        let v = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        assert!(v[..16].iter().all(|&x| x == -16.0) && v[16..].iter().all(|&x| x == 0.0));
        let mut b = h(0.25).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!(v[0], -4.0);
        assert_eq!(v[31], 15.0 * 0.25);
    }

    #[test]
    fn float_types() {
        let v = dequantize(GgmlType::BF16, &bf16::from_f32(1.5).to_le_bytes(), 1).unwrap();
        assert_eq!(v, [1.5]);
        let v = dequantize(GgmlType::F16, &h(-3.0), 1).unwrap();
        assert_eq!(v, [-3.0]);
        let v = dequantize(GgmlType::F32, &7.25f32.to_le_bytes(), 1).unwrap();
        assert_eq!(v, [7.25]);
    }

    #[test]
    fn unsupported_type_names_the_supported_ones() {
        let e = GgmlType::Iq4Nl.unsupported("blk.0.ffn_up.weight");
        assert_eq!(
            e.to_string(),
            "unsupported tensor type IQ4_NL in blk.0.ffn_up.weight (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)"
        );
    }

    #[test]
    fn ids_round_trip() {
        for id in 0..64 {
            if let Some(t) = GgmlType::from_u32(id) {
                assert_eq!(t.id(), id);
            }
        }
        assert_eq!(GgmlType::Q8_0.id(), 8);
    }

    /// Random blocks of each type against gguf-py's dequantization of the same bytes
    /// (tests/fixtures/dequant, made by scripts/fixtures/dequant.py): equal to 1 ulp (gguf-py
    /// multiplies in another order for some types).
    #[test]
    fn every_block_type_matches_gguf_py() {
        macro_rules! case {
            ($ty:expr, $name:literal) => {
                (
                    $ty,
                    &include_bytes!(concat!("../../tests/fixtures/dequant/", $name, ".blocks"))[..],
                    &include_bytes!(concat!("../../tests/fixtures/dequant/", $name, ".f32"))[..],
                )
            };
        }
        let cases = [
            case!(GgmlType::Q4_0, "Q4_0"),
            case!(GgmlType::Q4_1, "Q4_1"),
            case!(GgmlType::Q5_0, "Q5_0"),
            case!(GgmlType::Q5_1, "Q5_1"),
            case!(GgmlType::Q8_0, "Q8_0"),
            case!(GgmlType::Q2K, "Q2_K"),
            case!(GgmlType::Q3K, "Q3_K"),
            case!(GgmlType::Q4K, "Q4_K"),
            case!(GgmlType::Q5K, "Q5_K"),
            case!(GgmlType::Q6K, "Q6_K"),
        ];
        for (ty, blocks, want) in cases {
            let want: Vec<f32> = want
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let got = dequantize(ty, blocks, want.len()).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let tol = w.abs() * 2.0 * f32::EPSILON;
                assert!((g - w).abs() <= tol, "{} value {i}: {g} vs {w}", ty.name());
            }
        }
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 34], 31).is_err());
    }
}
