use gqa_lab::gpu::kernels::*;
use gqa_lab::gpu::Gpu;
use std::time::Instant;
fn main() {
    let gpu = pollster::block_on(Gpu::new()).unwrap();
    println!("{:?}", gpu.info.name);
    let step = gpu.uniform_with(bytemuck::bytes_of(&Step { pos0: 0, n_tokens: 1, n_chunks: 1, _pad: 0 })).unwrap();
    for (ty, bb, n_out) in [(3u32, 20usize, 1536u32), (8, 34, 49152)] {
        let n_in = 576u32;
        let w = gpu.storage_with("w", &vec![0x11u8; (n_out * n_in / 32) as usize * if bb == 34 { 36 } else { bb }]).unwrap();
        let x = gpu.storage("x", n_in as u64 * 4 * 4).unwrap();
        let y = gpu.storage("y", n_out as u64 * 4 * 4).unwrap();
        let p = MatmulParams { n_in, n_out, accumulate: 0, last_row_only: 0 };
        gpu.run_kernel(Kernel::Matmul, ty, bytemuck::bytes_of(&p), Some(&step), &[&w, &x, &y], [n_out.div_ceil(64), 1, 1]).unwrap();
        pollster::block_on(gpu.read(&y)).unwrap();
        let t = Instant::now();
        for _ in 0..5 {
            gpu.run_kernel(Kernel::Matmul, ty, bytemuck::bytes_of(&p), Some(&step), &[&w, &x, &y], [n_out.div_ceil(64), 1, 1]).unwrap();
        }
        pollster::block_on(gpu.read(&y)).unwrap();
        println!("matmul type {ty} {n_out}x{n_in}: {:?}", t.elapsed() / 5);
    }
}
