//! The layout's unit tests: where blocks go, and for every type that the weights decoded from
//! the planes as quant.wgsl decodes them equal [`crate::gguf::dequantize`] to the bit.

use super::*;
use crate::gguf::{dequantize, SUPPORTED};

#[test]
fn q8_0_blocks_split_into_scales_and_texels() {
    // 2 rows × 1 block each: slots 0 and 1 of a group of LANES.
    let mut bytes = Vec::new();
    for r in 0..2u8 {
        bytes.extend([0x00, 0x3C]); // d = 1.0
        bytes.extend((0..32).map(|i| i + 32 * r));
    }
    let p = planes(GgmlType::Q8_0, &bytes, 2).unwrap();
    assert_eq!(p.payload_size, (2 * LANES as u32, 1));
    assert_eq!(p.scale_size, (LANES as u32, 1));
    assert_eq!(&p.scales[..3], &[0x3C00, 0x3C00, 0]);
    // Texels 0 and 1: the first texel of rows 0 and 1 (bytes 0..16, 32..48).
    assert_eq!(p.payload[0], u32::from_le_bytes([0, 1, 2, 3]));
    assert_eq!(p.payload[4], u32::from_le_bytes([32, 33, 34, 35]));
    // Texel LANES: the second texel of row 0.
    assert_eq!(p.payload[LANES * 4], u32::from_le_bytes([16, 17, 18, 19]));
}

#[test]
fn a_groups_blocks_follow_each_other() {
    // 3 rows × 2 Q4_1 blocks: row 1's block 1 is slot LANES + 1.
    let mut bytes = vec![0u8; 3 * 2 * 20];
    bytes[3 * 20..3 * 20 + 4].copy_from_slice(&[5, 6, 7, 8]);
    bytes[3 * 20 + 4] = 0xCD;
    let p = planes(GgmlType::Q4_1, &bytes, 3).unwrap();
    assert_eq!(slot(1, 1, 2), LANES + 1);
    assert_eq!(p.scales[LANES + 1], u32::from_le_bytes([5, 6, 7, 8]));
    assert_eq!(p.payload[(LANES + 1) * 4], 0xCD);
}

#[test]
fn texels_past_the_width_go_to_the_next_texture_row() {
    // WIDTH + 1 rows of one Q4_1 block: row WIDTH has slot WIDTH, at (0, 1).
    let rows = WIDTH + 1;
    let mut bytes = vec![0u8; rows * 20];
    bytes[WIDTH * 20..WIDTH * 20 + 4].copy_from_slice(&[1, 2, 3, 4]);
    bytes[WIDTH * 20 + 4] = 0xAB;
    let p = planes(GgmlType::Q4_1, &bytes, rows).unwrap();
    assert_eq!(p.scale_size, (WIDTH as u32, 2));
    assert_eq!(p.scales[WIDTH], u32::from_le_bytes([1, 2, 3, 4]));
    assert_eq!(p.payload[WIDTH * 4], 0xAB);
}

#[test]
fn float_types_have_no_scales_and_bad_shapes_are_refused() {
    let p = planes(GgmlType::F16, &[0u8; 64 * 3], 3).unwrap();
    assert!(p.scales.is_empty());
    assert_eq!(p.scale_words, 0);
    // 3 rows padded to LANES, 4 texels per block.
    assert_eq!(p.payload_size, (4 * LANES as u32, 1));
    assert!(planes(GgmlType::Q4_1, &[0u8; 30], 1).is_none());
    assert!(planes(GgmlType::Q4K, &[0u8; 143], 1).is_none());
    assert!(planes(GgmlType::Iq4Nl, &[0u8; 18], 1).is_none());
}

/// A K-quant super-block of one row becomes 8 slots of its group: row 2's sub-block 5 of
/// super-block 1 is block 13, and its rg scale texel holds d·sc and dmin·m.
#[test]
fn k_quant_super_blocks_become_eight_blocks() {
    let (rows, per_row) = (3usize, 2usize);
    let mut bytes = vec![0u8; rows * per_row * 144];
    let at = (2 * per_row + 1) * 144;
    bytes[at..at + 2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
    bytes[at + 2..at + 4].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
    // Sub-block 5: scale (q[9] & 15) | (q[1] >> 6) << 4 = 3 | 16, min (q[9] >> 4) | (q[5] >> 6) << 4.
    bytes[at + 4 + 9] = 0x73;
    bytes[at + 4 + 1] = 0x40;
    bytes[at + 4 + 5] = 0x80;
    // Weight 0 of sub-block 5: the high nibble of qs[64]; weight 16: of qs[80].
    bytes[at + 16 + 64] = 0x90;
    bytes[at + 16 + 80] = 0x40;
    let p = planes(GgmlType::Q4K, &bytes, rows).unwrap();
    assert_eq!(p.scale_words, 2);
    let s = slot(2, 13, 16);
    assert_eq!(p.scales[2 * s], (0.5f32 * 19.0).to_bits());
    assert_eq!(p.scales[2 * s + 1], (0.25f32 * 39.0).to_bits());
    assert_eq!(p.payload[payload_texel(s, 1, 0) * 4], 0x49);
}

/// splitmix64, for random blocks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Random bytes of `blocks` file blocks of `ty` whose f16 scales (and float values) are
/// finite: every other bit random.
fn random_blocks(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    use GgmlType::*;
    let h = |x: f32| f16::from_f32(x).to_le_bytes();
    match ty {
        F32 => return (0..n).flat_map(|_| rng.f().to_le_bytes()).collect(),
        F16 => return (0..n).flat_map(|_| h(rng.f())).collect(),
        BF16 => {
            return (0..n)
                .flat_map(|_| half::bf16::from_f32(rng.f()).to_le_bytes())
                .collect()
        }
        _ => {}
    }
    let (block, bytes) = file_block(ty);
    let halves: &[usize] = match ty {
        Q4_0 | Q8_0 | Q5_0 => &[0],
        Q4_1 | Q5_1 | Q4K | Q5K => &[0, 2],
        Q6K => &[208],
        Q2K => &[80, 82],
        Q3K => &[108],
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    for _ in 0..n / block {
        let mut b: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
        for &i in halves {
            b[i..i + 2].copy_from_slice(&h(rng.f() * 0.05));
        }
        out.extend(b);
    }
    out
}

/// Block `b` of row `o` decoded from the planes with quant.wgsl's arithmetic.
fn decode(ty: GgmlType, p: &WeightPlanes, o: usize, b: usize, nb: usize) -> [f32; 32] {
    use GgmlType::*;
    let tpb = texels_per_block(ty).unwrap();
    let at = slot(o, b, nb);
    // The payload's words in order, and the scale texel.
    let q: Vec<u32> = (0..tpb)
        .flat_map(|j| {
            let t = payload_texel(at, tpb, j) * 4;
            p.payload[t..t + 4].to_vec()
        })
        .collect();
    let sw = p.scale_words;
    let s = &p.scales[at * sw..(at + 1) * sw];
    let lo = |w: u32| f16::from_bits(w as u16).to_f32();
    let hi = |w: u32| f16::from_bits((w >> 16) as u16).to_f32();
    let nib = |l: usize| ((q[l % 16 / 4] >> (8 * (l % 4) + 4 * (l / 16))) & 15) as f32;
    let bit = |w: u32, l: usize| ((w >> l) & 1) as f32;
    let crumb = |l: usize| ((q[l / 16] >> (2 * (l % 16))) & 3) as f32;
    std::array::from_fn(|l| match ty {
        F32 => f32::from_bits(q[l]),
        F16 if l % 2 == 0 => lo(q[l / 2]),
        F16 => hi(q[l / 2]),
        BF16 => f32::from_bits((q[l / 2] >> (16 * (l % 2))) << 16),
        Q8_0 => (q[l / 4] >> (8 * (l % 4))) as u8 as i8 as f32 * lo(s[0]),
        Q4_0 => (nib(l) - 8.0) * lo(s[0]),
        Q4_1 => nib(l) * lo(s[0]) + hi(s[0]),
        Q5_0 => (nib(l) + bit(s[1], l) * 16.0 - 16.0) * lo(s[0]),
        Q5_1 => (nib(l) + bit(s[1], l) * 16.0) * lo(s[0]) + hi(s[0]),
        Q4K => nib(l) * f32::from_bits(s[0]) - f32::from_bits(s[1]),
        Q5K => (nib(l) + bit(s[2], l) * 16.0) * f32::from_bits(s[0]) - f32::from_bits(s[1]),
        Q6K => {
            let high = ((s[l / 16] >> (2 * (l % 16))) & 3) as f32;
            (nib(l) + high * 16.0 - 32.0) * f32::from_bits(s[2 + l / 16])
        }
        Q2K => {
            let sc = (q[2] >> (8 * (l / 16))) & 255;
            let (d, dmin) = (lo(q[3]), hi(q[3]));
            crumb(l) * (d * (sc & 15) as f32) - dmin * (sc >> 4) as f32
        }
        Q3K => {
            let s = ((q[3] >> (16 + 8 * (l / 16))) & 255) as i32 - 32;
            (crumb(l) + bit(q[2], l) * 4.0 - 4.0) * (lo(q[3]) * s as f32)
        }
        _ => unreachable!(),
    })
}

/// For every type the crate reads: random blocks (11 rows, not a whole group of LANES, of 512
/// weights: two K-quant super-blocks) decoded from the planes as the kernels decode them are
/// gguf::dequantize's values, bit for bit (a zero's sign aside); and the planes' sizes are
/// those of the module doc's table.
#[test]
fn every_type_decodes_from_its_planes_as_the_reader_does() {
    let mut rng = Rng(5);
    let (rows, row_len) = (11usize, 512usize);
    for ty in SUPPORTED {
        let bytes = random_blocks(&mut rng, ty, rows * row_len);
        let want = dequantize(ty, &bytes, rows * row_len).unwrap();
        let p = planes(ty, &bytes, rows).unwrap();
        let nb = row_len / 32;
        let slots = rows.next_multiple_of(LANES) * nb;
        let tpb = texels_per_block(ty).unwrap();
        assert_eq!(p.payload.len(), slots * tpb * 4, "{}", ty.name());
        assert_eq!(p.scales.len(), slots * p.scale_words, "{}", ty.name());
        assert_eq!(p.scale_words, scale_words(ty));
        for o in 0..rows {
            for b in 0..nb {
                let got = decode(ty, &p, o, b, nb);
                let want = &want[o * row_len + 32 * b..][..32];
                for (l, (g, w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || (*g == 0.0 && *w == 0.0),
                        "{} row {o} block {b} weight {l}: {g} vs {w}",
                        ty.name()
                    );
                }
            }
        }
    }
}

/// Bytes per 32 weights on the GPU, as the module doc states them.
#[test]
fn gpu_bytes_per_block_are_the_documented_ones() {
    use GgmlType::*;
    let want = [
        (F32, 128),
        (F16, 64),
        (BF16, 64),
        (Q8_0, 36),
        (Q4_0, 20),
        (Q4_1, 20),
        (Q5_0, 24),
        (Q5_1, 24),
        (Q4K, 24),
        (Q5K, 32),
        (Q6K, 32),
        (Q2K, 16),
        (Q3K, 16),
    ];
    for (ty, bytes) in want {
        assert_eq!(gpu_bytes_per_block(ty), Some(bytes), "{}", ty.name());
    }
    assert_eq!(want.len(), SUPPORTED.len());
}
