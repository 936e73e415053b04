//! Buffers and textures whose bytes are counted while they live ([`Buf`], [`Tex`]), the
//! optional memory budget that an allocation must fit, the device's size limits, and the
//! engine's uniform buffer of parameter slots ([`Uniforms`]).

use super::Gpu;
use crate::gpu::GpuError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A buffer whose bytes are counted while it lives, and which is destroyed when dropped.
pub struct Buf {
    pub buffer: wgpu::Buffer,
    size: u64,
    counter: Arc<AtomicU64>,
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.buffer.destroy();
        self.counter.fetch_sub(self.size, Ordering::Relaxed);
    }
}

impl Buf {
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }
    /// `size` bytes from `offset` (a multiple of the device's storage offset alignment).
    pub fn range(&self, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset,
            size: wgpu::BufferSize::new(size),
        })
    }
    /// The first [`UNIFORM_WINDOW`] bytes as a uniform binding (the buffer must have been
    /// created with [`Gpu::activation`]).
    pub fn uniform_window(&self) -> wgpu::BindingResource<'_> {
        self.window(0)
    }
    /// [`UNIFORM_WINDOW`] bytes from `offset` (a multiple of the device's uniform offset
    /// alignment) as a uniform binding.
    pub fn window(&self, offset: u64) -> wgpu::BindingResource<'_> {
        self.range(offset, UNIFORM_WINDOW)
    }
}

/// Bytes of an activation bound as a uniform (`array<vec4<f32>, 4096>` in matvec.wgsl):
/// WebGPU's guaranteed `maxUniformBufferBindingSize`.
pub const UNIFORM_WINDOW: u64 = 65536;

/// A texture whose bytes are counted while it lives, and which is destroyed when dropped.
pub struct Tex {
    pub texture: wgpu::Texture,
    pub view: wgpu::TextureView,
    size: u64,
    counter: Arc<AtomicU64>,
}

impl Drop for Tex {
    fn drop(&mut self) {
        self.texture.destroy();
        self.counter.fetch_sub(self.size, Ordering::Relaxed);
    }
}

impl Tex {
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::TextureView(&self.view)
    }
}

impl Gpu {
    /// Bytes in live buffers.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Caps the bytes of live buffers and textures: an allocation past `bytes` fails with
    /// [`GpuError::OutOfMemory`] before the device is asked, as one would on a GPU that has
    /// no more (browsers do not say how much memory a GPU has). `None` lifts the cap.
    pub fn set_budget(&mut self, bytes: Option<u64>) {
        self.budget = bytes;
    }

    /// The cap [`Gpu::set_budget`] set, if any.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Room for `size` more bytes within the budget.
    fn reserve(&self, label: &str, size: u64) -> Result<(), GpuError> {
        let used = self.allocated_bytes();
        match self.budget {
            Some(budget) if used + size > budget => Err(GpuError::OutOfMemory(format!(
                "{label} needs {size} bytes, and {used} of the budget of {budget} are in use"
            ))),
            _ => Ok(()),
        }
    }

    /// A zeroed buffer of at least `size` bytes (rounded up to 4, at least 16).
    pub fn buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<Buf, GpuError> {
        let size = size.max(16).div_ceil(4) * 4;
        check_size(&self.limits, label, size, usage)?;
        self.reserve(label, size)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        self.allocated.fetch_add(size, Ordering::Relaxed);
        Ok(Buf {
            buffer,
            size,
            counter: self.allocated.clone(),
        })
    }

    /// A storage buffer holding `bytes` (padded with 4 zero bytes past the end, so kernels
    /// may read a whole word that straddles the last byte).
    pub fn storage_with(&self, label: &str, bytes: &[u8]) -> Result<Buf, GpuError> {
        let b = self.buffer(
            label,
            bytes.len() as u64 + 4,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        )?;
        let whole = bytes.len() / 4 * 4;
        self.queue.write_buffer(&b.buffer, 0, &bytes[..whole]);
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&b.buffer, whole as u64, &tail);
        }
        Ok(b)
    }

    /// Rows per layer of the weight textures from now on (tests split small weights over
    /// layers with it; at most the device's largest 2D texture).
    pub fn set_texture_rows(&mut self, rows: u32) {
        self.texture_rows = rows.clamp(1, self.limits.max_texture_dimension_2d);
    }

    /// Layers of the texture [`Gpu::texture_with`] makes for `height` rows, and their height.
    pub fn texture_layers(&self, height: u32) -> (u32, u32) {
        let rows = height.clamp(1, self.texture_rows);
        (height.div_ceil(rows), rows)
    }

    /// A `width × height` texture of `format` (`Rgba32Uint` or `R32Uint`) holding `words`
    /// (row-major, `width · height · texel words` of them), as a 2D array: one layer, or for
    /// rows past the device's largest 2D texture as many layers of that height as it takes
    /// (the last one padded), so that texel i is at row i div width of the whole.
    pub fn texture_with(
        &self,
        label: &str,
        format: wgpu::TextureFormat,
        width: u32,
        height: u32,
        words: &[u32],
    ) -> Result<Tex, GpuError> {
        let texel = format.block_copy_size(None).unwrap_or(4) as u64;
        let limit = self.limits.max_texture_dimension_2d;
        let (layers, rows) = self.texture_layers(height);
        let max_layers = self.limits.max_texture_array_layers;
        if width > limit || layers > max_layers {
            return Err(GpuError::Unsupported(format!(
                "{label} needs {height} rows of {width} texels; this GPU's largest texture array holds {max_layers} layers of {limit}×{limit}"
            )));
        }
        if words.len() as u64 * 4 != width as u64 * height as u64 * texel {
            return Err(GpuError::Internal(format!(
                "{label}: {} words for {width}×{height} texels",
                words.len()
            )));
        }
        let size = width as u64 * (rows * layers) as u64 * texel;
        self.reserve(label, size)?;
        let padded;
        let words = match layers * rows > height {
            false => words,
            true => {
                let mut w = words.to_vec();
                w.resize((size / 4) as usize, 0);
                padded = w;
                &padded
            }
        };
        let extent = wgpu::Extent3d {
            width,
            height: rows,
            depth_or_array_layers: layers,
        };
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: extent,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        self.queue.write_texture(
            texture.as_image_copy(),
            bytemuck::cast_slice(words),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * texel as u32),
                rows_per_image: Some(rows),
            },
            extent,
        );
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        self.allocated.fetch_add(size, Ordering::Relaxed);
        Ok(Tex {
            texture,
            view,
            size,
            counter: self.allocated.clone(),
        })
    }

    /// An activation buffer: read-write storage that kernels may also bind as a uniform
    /// window from any offset below `size` ([`Buf::window`]), so `size` + [`UNIFORM_WINDOW`]
    /// bytes.
    pub fn activation(&self, label: &str, size: u64) -> Result<Buf, GpuError> {
        use wgpu::BufferUsages as U;
        self.buffer(
            label,
            size + UNIFORM_WINDOW,
            U::STORAGE | U::UNIFORM | U::COPY_DST | U::COPY_SRC,
        )
    }

    /// A read-write storage buffer of `size` bytes.
    pub fn storage(&self, label: &str, size: u64) -> Result<Buf, GpuError> {
        use wgpu::BufferUsages as U;
        self.buffer(label, size, U::STORAGE | U::COPY_DST | U::COPY_SRC)
    }

    /// A uniform buffer holding `bytes` (e.g. a [`crate::gpu::ops::Step`]).
    pub fn uniform_with(&self, bytes: &[u8]) -> Result<Buf, GpuError> {
        let b = self.buffer(
            "uniform",
            bytes.len() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        self.queue.write_buffer(&b.buffer, 0, bytes);
        Ok(b)
    }
}

/// A uniform buffer of 256-byte slots, one per kernel invocation site, written once.
pub struct Uniforms {
    pub buf: Buf,
    slots: u64,
}

/// Uniform binding offsets must be multiples of this (the WebGPU default and maximum).
pub const UNIFORM_SLOT: u64 = 256;

impl Uniforms {
    pub fn new(gpu: &Gpu, contents: &[Vec<u8>]) -> Result<Self, GpuError> {
        let mut bytes = vec![0u8; contents.len().max(1) * UNIFORM_SLOT as usize];
        for (i, c) in contents.iter().enumerate() {
            bytes[i * UNIFORM_SLOT as usize..][..c.len()].copy_from_slice(c);
        }
        let buf = gpu.buffer(
            "uniforms",
            bytes.len() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        gpu.queue.write_buffer(&buf.buffer, 0, &bytes);
        Ok(Uniforms {
            buf,
            slots: contents.len() as u64,
        })
    }

    /// The binding of slot `i`.
    pub fn slot(&self, i: usize) -> wgpu::BindingResource<'_> {
        debug_assert!((i as u64) < self.slots);
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buf.buffer,
            offset: i as u64 * UNIFORM_SLOT,
            size: wgpu::BufferSize::new(UNIFORM_SLOT),
        })
    }
}

/// A buffer of `size` bytes for `usage` must fit the device's limits; the error names the
/// limit passed (the tighter one when both were) and gives its value.
fn check_size(
    limits: &wgpu::Limits,
    label: &str,
    size: u64,
    usage: wgpu::BufferUsages,
) -> Result<(), GpuError> {
    let storage = usage.contains(wgpu::BufferUsages::STORAGE);
    let passed = [
        ("max_buffer_size", limits.max_buffer_size, true),
        (
            "max_storage_buffer_binding_size",
            limits.max_storage_buffer_binding_size,
            storage,
        ),
    ]
    .into_iter()
    .filter(|&(_, limit, applies)| applies && size > limit)
    .min_by_key(|&(_, limit, _)| limit);
    match passed {
        Some((name, limit, _)) => Err(GpuError::TooLarge {
            what: format!("{label} (the device's {name})"),
            bytes: size,
            limit,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::BufferUsages as U;

    fn limits(buffer: u64, binding: u64) -> wgpu::Limits {
        wgpu::Limits {
            max_buffer_size: buffer,
            max_storage_buffer_binding_size: binding,
            ..wgpu::Limits::default()
        }
    }

    /// The error names the limit that was passed and gives its value (the tighter one when
    /// both were); a size within the limits passes.
    #[test]
    fn too_large_names_the_limit_passed() {
        const BINDING: &str = "max_storage_buffer_binding_size";
        let (small, big) = (1u64 << 16, 1u64 << 20);
        // (max_buffer_size, max_storage_buffer_binding_size, size, usage, the limit passed)
        let cases = [
            (big, small, 2 * big, U::MAP_READ, "max_buffer_size", big),
            (small, big, 2 * small, U::STORAGE, "max_buffer_size", small),
            (big, small, 2 * small, U::STORAGE, BINDING, small),
            (big, small, 2 * big, U::STORAGE, BINDING, small),
        ];
        for (buffer, binding, size, usage, name, limit) in cases {
            let e = check_size(&limits(buffer, binding), "cache", size, usage);
            let want = GpuError::TooLarge {
                what: format!("cache (the device's {name})"),
                bytes: size,
                limit,
            };
            assert_eq!(e, Err(want), "{buffer} {binding} {size} {usage:?}");
        }
        assert_eq!(
            check_size(&limits(big, small), "x", small, U::STORAGE),
            Ok(())
        );
        assert_eq!(
            check_size(&limits(big, small), "x", big, U::COPY_DST),
            Ok(())
        );
    }
}
