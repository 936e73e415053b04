//! Reading results back: a submit that ends by copying into a mappable buffer, then the map
//! (natively the device is polled until it is done; in the browser the map resolves on its own).

use super::{Buf, Gpu};
use crate::gpu::GpuError;

impl Gpu {
    /// Submits `encoder` (which must end by copying what is wanted into `staging`), then maps
    /// and returns the first `size` bytes of `staging`.
    pub async fn submit_and_read(
        &self,
        encoder: wgpu::CommandEncoder,
        staging: &wgpu::Buffer,
        size: u64,
    ) -> Result<Vec<u8>, GpuError> {
        self.submit(encoder);
        let slice = staging.slice(..size);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        let mapped = rx
            .await
            .map_err(|_| GpuError::DeviceLost("the map request was dropped".into()))?;
        self.check()?;
        mapped.map_err(|e| GpuError::Internal(format!("mapping the result: {e}")))?;
        let bytes = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Internal(format!("reading the result: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// The contents of a storage buffer (created with [`Gpu::storage`]).
    pub async fn read(&self, buf: &Buf) -> Result<Vec<u8>, GpuError> {
        let staging = self.buffer(
            "read",
            buf.size(),
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&buf.buffer, 0, &staging.buffer, 0, buf.size());
        self.submit_and_read(enc, &staging.buffer, buf.size()).await
    }
}
