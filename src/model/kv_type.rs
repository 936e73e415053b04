//! The KV cache's element types: how the engines keep K and V ([`KvType`]), and the rows of
//! one cache in that type ([`KvRows`]): written from f32, read back as f32.
//!
//! - `f32`: 4 bytes a value, as computed.
//! - `f16`: IEEE binary16, 2 bytes a value (llama.cpp's default cache type, and WebLLM's).
//! - `q8_0`: GGML's Q8_0 (`ggml-quants.c`, `quantize_row_q8_0_ref`): blocks of 32 values as
//!   32 × i8 and one f16 scale d = max|x| / 127, q = round(x / d) (half away from zero), read
//!   back as d·q; 34 bytes per 32 values (8.5 bits a value), llama.cpp's `--cache-type-k q8_0`.
//!
//! Every backend rounds as this module does (the GPU's kv_store.wgsl and kv_quant.wgsl are
//! its twins), so attention reads the same values whatever the backend. A non-finite value
//! stays visible: f16 keeps an infinity or a NaN (and a value past ±65504 becomes ±∞); a
//! q8_0 block holding one reads back as NaN throughout, never as a quiet 0.

use super::kv_cache::ElementType;
use half::f16;
use serde::{Deserialize, Serialize};

/// Values per q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per q8_0 block: the f16 scale, then 32 × i8 (GGML's `block_q8_0`).
pub const Q8_0_BYTES: usize = 34;

/// How a KV cache keeps its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum KvType {
    #[default]
    F32,
    F16,
    Q8_0,
}

impl KvType {
    pub const ALL: [KvType; 3] = [KvType::F32, KvType::F16, KvType::Q8_0];

    /// Its name in the CLI, the URL and the reports: `f32`, `f16`, `q8_0` (llama.cpp's names;
    /// the calculator's [`ElementType`]s say `fp32` and `fp16`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Its block of values and their bytes (the one arithmetic of `kv_cache`).
    pub fn element(self) -> ElementType {
        match self {
            KvType::F32 => ElementType::FP32,
            KvType::F16 => ElementType::FP16,
            KvType::Q8_0 => ElementType::Q8_0,
        }
    }

    /// Whether it can keep rows of `head_dim` values: q8_0 needs whole blocks.
    pub fn holds(self, head_dim: usize) -> bool {
        self != KvType::Q8_0 || head_dim.is_multiple_of(Q8_0_BLOCK)
    }

    /// `x` as the cache gives it back after writing it (a row of whole blocks for q8_0).
    pub fn round(self, x: &mut [f32]) {
        match self {
            KvType::F32 => {}
            KvType::F16 => x.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
            KvType::Q8_0 => {
                for b in x.chunks_mut(Q8_0_BLOCK) {
                    let mut blk = [0u8; Q8_0_BYTES];
                    q8_0_encode(b, &mut blk);
                    q8_0_decode(&blk, b);
                }
            }
        }
    }
}

/// One q8_0 block of `x` (32 values) into `out` (34 bytes).
fn q8_0_encode(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let finite = x.iter().all(|v| v.is_finite());
    let d = if finite { amax / 127.0 } else { f32::NAN };
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (q, v) in out[2..].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8; // round: half away from zero, as C's roundf
    }
}

/// One q8_0 block back to 32 values.
fn q8_0_decode(blk: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    for (o, q) in out.iter_mut().zip(&blk[2..]) {
        *o = d * (*q as i8) as f32;
    }
}

/// An f16's value as f32, exactly (`half`'s conversion, tested on all 65,536), without a
/// branch, so that a row's loop can vectorize (SIMD128; `half` branches per value where the
/// CPU has no F16C, as in WebAssembly):
/// the f16's exponent and mantissa bits moved to an f32's place give its value times 2⁻¹¹²,
/// which one exact multiplication scales back (subnormals included); an exponent of all ones
/// is an infinity or a NaN.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
#[inline]
fn f16_to_f32(h: u16) -> f32 {
    let (h, sign) = (h as u32 & 0x7fff, (h as u32 & 0x8000) << 16);
    let scaled = f32::from_bits(h << 13) * f32::from_bits(0x7780_0000); // × 2¹¹²
    let special = match h & 0x03ff {
        0 => 0x7f80_0000,             // ±∞
        m => 0x7fc0_0000 | (m << 13), // NaN, quiet, with its payload
    };
    let bits = if h >= 0x7c00 {
        special
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | sign)
}

/// One cache's K or V values (`rows` rows of `head_dim`) in their type.
#[derive(Debug, Clone, PartialEq)]
pub enum KvRows {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// `[rows][head_dim / 32]` blocks of [`Q8_0_BYTES`].
    Q8_0(Vec<u8>),
}

impl KvRows {
    /// Zeroed rows (`t` must hold `head_dim`: [`KvType::holds`]).
    pub fn new(t: KvType, rows: usize, head_dim: usize) -> Self {
        let n = rows * head_dim;
        match t {
            KvType::F32 => KvRows::F32(vec![0.0; n]),
            KvType::F16 => KvRows::F16(vec![f16::ZERO; n]),
            KvType::Q8_0 => KvRows::Q8_0(vec![0; n / Q8_0_BLOCK * Q8_0_BYTES]),
        }
    }

    pub fn kv_type(&self) -> KvType {
        match self {
            KvRows::F32(_) => KvType::F32,
            KvRows::F16(_) => KvType::F16,
            KvRows::Q8_0(_) => KvType::Q8_0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            KvRows::F32(v) => 4 * v.len(),
            KvRows::F16(v) => 2 * v.len(),
            KvRows::Q8_0(v) => v.len(),
        }
    }

    /// Writes `x` (`head_dim` values) as row `row`, rounded to the type.
    pub fn write(&mut self, row: usize, x: &[f32]) {
        let hd = x.len();
        match self {
            KvRows::F32(v) => v[row * hd..(row + 1) * hd].copy_from_slice(x),
            KvRows::F16(v) => v[row * hd..(row + 1) * hd]
                .iter_mut()
                .zip(x)
                .for_each(|(o, x)| *o = f16::from_f32(*x)),
            KvRows::Q8_0(v) => {
                let rb = hd / Q8_0_BLOCK * Q8_0_BYTES;
                let blocks = v[row * rb..(row + 1) * rb].chunks_exact_mut(Q8_0_BYTES);
                for (blk, x) in blocks.zip(x.chunks_exact(Q8_0_BLOCK)) {
                    q8_0_encode(x, blk);
                }
            }
        }
    }

    /// Row `row` as f32: borrowed where the type is f32, else decoded into `buf`
    /// (`head_dim` long).
    #[inline]
    pub fn read<'a>(&'a self, row: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let hd = buf.len();
        match self {
            KvRows::F32(v) => &v[row * hd..(row + 1) * hd],
            KvRows::F16(v) => {
                let row = &v[row * hd..(row + 1) * hd];
                // Natively `half` converts with the CPU's F16C instructions where it has them
                // (measured: twice as fast as `f16_to_f32` in SSE2); WebAssembly has none, and
                // `half`'s portable conversion branches per value.
                #[cfg(not(target_arch = "wasm32"))]
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(row, buf);
                #[cfg(target_arch = "wasm32")]
                buf.iter_mut()
                    .zip(row)
                    .for_each(|(o, h)| *o = f16_to_f32(h.to_bits()));
                buf
            }
            KvRows::Q8_0(v) => {
                let rb = hd / Q8_0_BLOCK * Q8_0_BYTES;
                let blocks = v[row * rb..(row + 1) * rb].chunks_exact(Q8_0_BYTES);
                for (blk, o) in blocks.zip(buf.chunks_exact_mut(Q8_0_BLOCK)) {
                    q8_0_decode(blk, o);
                }
                buf
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u32, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 8.0 - 4.0
            })
            .collect()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn rows_read_back_as_round_says() {
        for t in KvType::ALL {
            let (rows, hd) = (5, 64);
            let x = noise(7, rows * hd);
            let mut cache = KvRows::new(t, rows, hd);
            for (r, row) in x.chunks_exact(hd).enumerate().rev() {
                cache.write(r, row);
            }
            let mut buf = vec![0.0; hd];
            for (r, row) in x.chunks_exact(hd).enumerate() {
                let mut want = row.to_vec();
                t.round(&mut want);
                assert_eq!(cache.read(r, &mut buf), want, "{} row {r}", t.name());
            }
            assert_eq!(cache.bytes() as u64, t.element().row_bytes(hd as u64) * 5);
        }
    }

    #[test]
    fn f16_rounds_to_nearest_and_q8_0_within_half_a_step() {
        let x = noise(3, 256);
        let mut h = x.clone();
        KvType::F16.round(&mut h);
        for (a, b) in x.iter().zip(&h) {
            assert!((a - b).abs() <= a.abs() * 2f32.powi(-11), "{a} {b}");
        }
        let mut q = x.clone();
        KvType::Q8_0.round(&mut q);
        for (xb, qb) in x.chunks(32).zip(q.chunks(32)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // d is rounded to f16, so a value may be off by half a step and its share of d's
            // rounding (127 steps at most of 2⁻¹¹ relative each).
            let d = amax / 127.0;
            for (a, b) in xb.iter().zip(qb) {
                assert!((a - b).abs() <= d * 0.5 + amax * 2f32.powi(-11), "{a} {b}");
            }
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn q8_0_is_ggml_block_q8_0() {
        // max |x| = 63.5: d = 0.5, and x = 1.25 → q = round(2.5) = 3 (half away from zero).
        let mut x = [0.0f32; 32];
        x[0] = -63.5;
        x[1] = 1.25;
        x[2] = 0.2;
        let mut blk = [0u8; Q8_0_BYTES];
        q8_0_encode(&x, &mut blk);
        assert_eq!(f16::from_le_bytes([blk[0], blk[1]]), f16::from_f32(0.5));
        assert_eq!(blk[2] as i8, -127);
        assert_eq!(blk[3] as i8, 3);
        assert_eq!(blk[4] as i8, 0);
        // An all-zero block has scale 0; a NaN makes the whole block NaN.
        let mut z = [0.0f32; 32];
        KvType::Q8_0.round(&mut z);
        assert!(z.iter().all(|v| *v == 0.0));
        x[5] = f32::NAN;
        KvType::Q8_0.round(&mut x);
        assert!(x.iter().all(|v| v.is_nan()));
        let mut big = [70000.0f32, -1.0];
        KvType::F16.round(&mut big);
        assert_eq!(big, [f32::INFINITY, -1.0]);
    }

    /// The branch-free f16 conversion is `half`'s, bit for bit.
    #[test]
    fn f16_conversion_is_exact() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "{h:#06x}");
        }
    }

    #[test]
    fn names_and_blocks() {
        for t in KvType::ALL {
            assert_eq!(KvType::parse(t.name()), Some(t));
        }
        assert_eq!(KvType::parse("q4_0"), None);
        assert_eq!(KvType::Q8_0.element().row_bytes(64), 68);
        assert!(KvType::Q8_0.holds(256) && !KvType::Q8_0.holds(80) && KvType::F16.holds(80));
    }
}
