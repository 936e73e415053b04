//! The wgpu device: adapter and limits, errors the device reports, submits, pipelines and
//! bind groups. Follows wgpu's `hello_compute` example: adapter → device → buffers → bind
//! group → dispatch → copy → map, each step with its error.
//!
//! - `memory.rs`: buffers and textures whose bytes are counted, and the optional budget;
//! - `readback.rs`: submitting and mapping what a submit copied out.

mod memory;
mod readback;

pub use memory::{Buf, Tex, Uniforms, UNIFORM_WINDOW};

use super::kernels::{Kernel, Variant};
use super::GpuError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device and queue with bookkeeping: bytes allocated, device-lost and uncaptured errors.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    allocated: Arc<AtomicU64>,
    /// Most bytes the engine may hold in buffers and textures (`None`: the device's limits).
    budget: Option<u64>,
    /// Rows of one layer of a weight texture: the device's largest 2D texture (fewer in tests
    /// that split weights over layers).
    texture_rows: u32,
    fault: Fault,
    pipelines: Mutex<HashMap<(Kernel, Variant), wgpu::ComputePipeline>>,
    /// Command buffers submitted so far ([`Gpu::submit`]).
    submits: AtomicU64,
}

/// The first error the device reported and nobody has checked yet.
type Fault = Arc<Mutex<Option<GpuError>>>;

impl Gpu {
    /// Opens the default adapter (`WGPU_BACKEND` etc. are honoured natively) with its real limits.
    pub async fn new() -> Result<Self, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gqa-lab"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoDevice(e.to_string()))?;
        let fault = watch_faults(&device);
        Ok(Gpu {
            device,
            queue,
            info,
            texture_rows: limits.max_texture_dimension_2d,
            limits,
            allocated: Arc::new(AtomicU64::new(0)),
            budget: None,
            fault,
            pipelines: Mutex::new(HashMap::new()),
            submits: AtomicU64::new(0),
        })
    }

    /// Whether the adapter is a GPU emulated on the CPU (lavapipe natively; in the browser the
    /// fallback adapter, e.g. SwiftShader).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Submits one encoder's commands (every submit of the engine goes through here, so that
    /// [`Gpu::submits`] counts them).
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.submits.fetch_add(1, Ordering::Relaxed);
        self.queue.submit([encoder.finish()])
    }

    /// Submits made so far: what a test counts to see that nothing runs that should not.
    pub fn submits(&self) -> u64 {
        self.submits.load(Ordering::Relaxed)
    }

    /// The first error the device reported since the last check, if any.
    pub fn check(&self) -> Result<(), GpuError> {
        match self.fault.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Destroys the device, as a driver reset would: every later use fails with
    /// [`GpuError::DeviceLost`]. For the page's developer tools, which test "Reload the
    /// engine" with it.
    pub fn lose_device(&self) {
        self.device.destroy();
    }

    /// The pipeline of `kernel` specialised for `variant` (made once, then cached).
    pub fn pipeline(&self, kernel: Kernel, variant: Variant) -> wgpu::ComputePipeline {
        debug_assert!(kernel.takes(variant), "{}: {variant:?}", kernel.name());
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((kernel, variant))
            .or_insert_with(|| self.make_pipeline(kernel, variant))
            .clone()
    }

    fn make_pipeline(&self, kernel: Kernel, variant: Variant) -> wgpu::ComputePipeline {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name()),
                source: wgpu::ShaderSource::Wgsl(kernel.source(variant).into()),
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &variant.constants(),
                    ..Default::default()
                },
                cache: None,
            })
    }

    /// A bind group for `pipeline` with each resource at its binding number.
    pub fn bind_numbered(
        &self,
        pipeline: &wgpu::ComputePipeline,
        resources: &[(u32, wgpu::BindingResource<'_>)],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = resources
            .iter()
            .map(|(i, r)| wgpu::BindGroupEntry {
                binding: *i,
                resource: r.clone(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }
}

/// Keeps the first device-lost or uncaptured error `device` reports, for [`Gpu::check`].
fn watch_faults(device: &wgpu::Device) -> Fault {
    let fault: Fault = Arc::new(Mutex::new(None));
    let keep = |slot: &Fault, err: GpuError| {
        if let Ok(mut slot) = slot.lock() {
            slot.get_or_insert(err);
        }
    };
    let f = fault.clone();
    device.set_device_lost_callback(move |reason, msg| {
        keep(&f, GpuError::DeviceLost(format!("{reason:?}: {msg}")));
    });
    let f = fault.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        let err = match e {
            wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory(e.to_string()),
            other => GpuError::Internal(other.to_string()),
        };
        keep(&f, err);
    }));
    fault
}
