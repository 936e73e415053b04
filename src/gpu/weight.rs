//! A weight tensor on the GPU: its payload and scale textures (see [`super::layout`]) and its
//! ggml type, which selects the kernels' dequantization (`WTYPE` in quant.wgsl).

use super::context::{Gpu, Tex};
use super::layout::planes;
use super::GpuError;
use crate::gguf::GgmlType;

pub struct Weight {
    pub payload: Tex,
    pub scales: Tex,
    pub ty: GgmlType,
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
        let payload = gpu.texture_with(
            label,
            wgpu::TextureFormat::Rgba32Uint,
            p.width,
            p.payload_height,
            &p.payload,
        )?;
        let scales = if p.scales.is_empty() {
            gpu.texture_with(label, wgpu::TextureFormat::R32Uint, 1, 1, &[0])?
        } else {
            gpu.texture_with(
                label,
                wgpu::TextureFormat::R32Uint,
                p.width,
                p.scale_height,
                &p.scales,
            )?
        };
        Ok(Weight {
            payload,
            scales,
            ty,
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
