// The engine's dedicated Web Worker (src/ui/engine/worker.rs). The page posts the address of
// its own wasm-bindgen module and the WebAssembly.Module it compiled; the worker instantiates
// them (the module's `main` finds no window and mounts nothing) and hands over to
// `engine_worker` (told whether to ask for a WebGPU adapter at once), which answers the page's
// typed messages (src/protocol.rs) from then on.
// Whatever escapes it (a WebAssembly trap: memory exhausted, say) is posted as {lost}, so
// that the page can say so and offer "Reload the engine".
const lost = (why) => self.postMessage({ lost: String(why) });
self.addEventListener("unhandledrejection", (e) => lost(e.reason?.message ?? e.reason));
self.addEventListener("error", (e) => lost(e.message));
self.addEventListener(
  "message",
  async (e) => {
    try {
      const bindings = await import(e.data.glue);
      await bindings.default({ module_or_path: e.data.module });
      bindings.engine_worker(e.data.warmGpu === true);
    } catch (err) {
      lost(`it could not start: ${err?.message ?? err}`);
    }
  },
  { once: true },
);
