//! A weight tensor on the GPU: its payload and scale textures (see [`super::layout`]: every
//! type as 32-weight blocks, K-quants repacked at upload) and its ggml type, which selects the
//! kernels' dequantization (`WTYPE` in quant.wgsl).

use super::context::{Gpu, Tex};
use super::layout::{self, planes};
use super::GpuError;
use crate::gguf::GgmlType;

pub struct Weight {
    pub payload: Tex,
    pub scales: Tex,
    pub ty: GgmlType,
    /// Elements per row: the input width of a product with this weight.
    pub row_len: usize,
}

impl Weight {
    /// Uploads a `[rows][row_len]` tensor given as its GGUF bytes.
    pub fn upload(
        gpu: &Gpu,
        label: &str,
        ty: GgmlType,
        bytes: &[u8],
        rows: usize,
    ) -> Result<Self, GpuError> {
        let p = planes(ty, bytes, rows).ok_or_else(|| {
            GpuError::Unsupported(format!("tensor {label} of type {}", ty.name()))
        })?;
        let (block, block_bytes) = ty.block();
        let row_bytes = bytes.len() / rows.max(1);
        let row_len = (row_bytes as u64 / block_bytes.max(1) * block) as usize;
        // A texture taller than the device allows: say which tensor and why.
        let limit = gpu.limits.max_texture_dimension_2d;
        let tallest = p.payload_size.1.max(p.scale_size.1);
        if tallest > limit {
            return Err(GpuError::Unsupported(format!(
                "tensor {label} ({rows} × {row_len} {}) needs a texture {tallest} texels tall \
                 ({} wide); this GPU's largest is {limit} (src/gpu/layout.rs)",
                ty.name(),
                layout::WIDTH
            )));
        }
        let payload = gpu.texture_with(
            label,
            wgpu::TextureFormat::Rgba32Uint,
            p.payload_size.0,
            p.payload_size.1,
            &p.payload,
        )?;
        let format = match p.scale_words {
            1 => Some(wgpu::TextureFormat::R32Uint),
            2 => Some(wgpu::TextureFormat::Rg32Uint),
            4 => Some(wgpu::TextureFormat::Rgba32Uint),
            _ => None,
        };
        let scales = match format {
            Some(format) => {
                let (w, h) = p.scale_size;
                gpu.texture_with(label, format, w, h, &p.scales)?
            }
            None => gpu.texture_with(label, wgpu::TextureFormat::R32Uint, 1, 1, &[0])?,
        };
        Ok(Weight {
            payload,
            scales,
            ty,
            row_len,
        })
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.payload.size() + self.scales.size()
    }

    /// Bindings 2 and 3 of every kernel that reads weights (`wq`, `ws` in quant.wgsl).
    pub fn bindings(&self) -> [wgpu::BindingResource<'_>; 2] {
        [self.payload.binding(), self.scales.binding()]
    }
}

/// Tensors that share a row length, stacked row after row into one texture pair when their
/// types match (Q|K|V, gate|up), so that decode computes them in one dispatch; parts of
/// different types stay apart. Either way part `i` is read as (weight, first row).
pub enum Stack {
    /// One texture pair; part `i`'s rows start at `starts[i]`.
    One {
        w: Box<Weight>,
        starts: Vec<u32>,
    },
    Parts(Vec<Weight>),
}

/// One part of a [`Stack`] as it is in the file: label, type, bytes, rows.
pub type Part<'a> = (&'a str, GgmlType, &'a [u8], usize);

impl Stack {
    pub fn upload(gpu: &Gpu, label: &str, parts: &[Part<'_>]) -> Result<Self, GpuError> {
        let Some(&(_, ty, first, rows0)) = parts.first() else {
            return Err(GpuError::Internal(format!("{label}: nothing to stack")));
        };
        // Same type and the same bytes per row: the same row length.
        let stackable = parts
            .iter()
            .all(|&(_, t, b, r)| t == ty && b.len() * rows0 == first.len() * r);
        if !stackable {
            return parts
                .iter()
                .map(|&(l, t, b, r)| Weight::upload(gpu, l, t, b, r))
                .collect::<Result<_, _>>()
                .map(Stack::Parts);
        }
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.2.iter().copied()).collect();
        let starts = parts
            .iter()
            .scan(0u32, |row, p| {
                let start = *row;
                *row += p.3 as u32;
                Some(start)
            })
            .collect();
        let rows = parts.iter().map(|p| p.3).sum();
        Ok(Stack::One {
            w: Box::new(Weight::upload(gpu, label, ty, &bytes, rows)?),
            starts,
        })
    }

    /// Part `i` as (weight, its first row there).
    pub fn part(&self, i: usize) -> (&Weight, u32) {
        match self {
            Stack::One { w, starts } => (w, starts[i]),
            Stack::Parts(ws) => (&ws[i], 0),
        }
    }

    /// The whole stack as one weight, when its parts could be stacked.
    pub fn whole(&self) -> Option<&Weight> {
        match self {
            Stack::One { w, .. } => Some(w),
            Stack::Parts(_) => None,
        }
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        match self {
            Stack::One { w, .. } => w.bytes(),
            Stack::Parts(ws) => ws.iter().map(Weight::bytes).sum(),
        }
    }
}
