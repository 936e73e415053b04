// llama.cpp's decode speed on a GGUF, natively, through node-llama-cpp's prebuilt builds:
// the CPU build is the peer of `gqa-lab bench --backend cpu-q8` on the same machine, same
// threads; with LLAMA_GPU=vulkan its Vulkan build (GGML_VK_VISIBLE_DEVICES=0 lets it use
// lavapipe, which it skips otherwise) is the peer of `--backend gpu` on the same device.
//
//   npm install --prefix /tmp/nlc node-llama-cpp@3.22.1
//   NODE_PATH=/tmp/nlc/node_modules node benches/llama-cpp.mjs MODEL.gguf [context=128] [decode=32] [threads=2]
//   LLAMA_GPU=vulkan GGML_VK_VISIBLE_DEVICES=0 NODE_PATH=… node benches/llama-cpp.mjs …
//
// Feeds `context` prompt ids (a fixed pattern of ids 100..1000), then times `decode`
// greedy tokens one at a time; prints one JSON line: prefill and decode tokens per second.
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(join((process.env.NODE_PATH ?? "").split(":")[0] || process.cwd(), "x"));
const { getLlama } = await import(require.resolve("node-llama-cpp"));
const [model_path, context = "128", decode = "32", threads = "2"] = process.argv.slice(2);
const [n_ctx, n_dec, n_thr] = [Number(context), Number(decode), Number(threads)];

const gpu = process.env.LLAMA_GPU === "vulkan" ? "vulkan" : false;
const llama = await getLlama({ gpu, build: "never" });
const model = await llama.loadModel({ modelPath: model_path, gpuLayers: gpu ? "max" : 0 });
const ctx = await model.createContext({ contextSize: n_ctx + n_dec + 8, threads: n_thr, batchSize: 512 });
const seq = ctx.getSequence();
const prompt = [model.tokens.bos, ...Array.from({ length: n_ctx - 1 }, (_, i) => 100 + ((i * 7919) % 900))];
let t0 = performance.now(), first = 0, n = 0;
for await (const _ of seq.evaluate(prompt, { temperature: 0 })) {
  n++;
  if (n === 1) first = performance.now();
  if (n > n_dec) break;
}
const end = performance.now();
console.log(JSON.stringify({
  peer: `llama.cpp (node-llama-cpp 3.22.1, ${gpu ? "Vulkan" : "CPU"} build)`, model: model_path, threads: n_thr, context: n_ctx,
  prefill_tok_s: +(n_ctx / ((first - t0) / 1000)).toFixed(1),
  decode_tok_s: +(n_dec / ((end - first) / 1000)).toFixed(1),
}));
