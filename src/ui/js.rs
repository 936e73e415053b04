//! Small browser helpers: time, yielding to the event loop, the WebGPU probe.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Milliseconds since the page started (`performance.now()`).
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// Lets the browser paint and handle input (a `setTimeout(0)` turn of the event loop).
pub async fn yield_now() {
    let p = Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = JsFuture::from(p).await;
}

/// A readable text for a JS exception or rejection.
pub fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// `navigator.gpu` of this thread (the page's or a worker's), or why there is none; asks for no
/// adapter, so costs nothing.
pub fn navigator_gpu() -> Result<JsValue, String> {
    let nav = Reflect::get(&js_sys::global(), &"navigator".into()).map_err(|e| describe(&e))?;
    let gpu = Reflect::get(&nav, &"gpu".into()).unwrap_or(JsValue::UNDEFINED);
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser exposes no WebGPU (navigator.gpu is missing)".into());
    }
    Ok(gpu)
}

/// Checks that `navigator.gpu` exists and gives an adapter — on the page or in a worker —;
/// the error says why not.
pub async fn probe_webgpu() -> Result<(), String> {
    let gpu = navigator_gpu()?;
    let request: Function = Reflect::get(&gpu, &"requestAdapter".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or("navigator.gpu.requestAdapter is missing")?;
    let promise: Promise = request
        .call0(&gpu)
        .map_err(|e| describe(&e))?
        .dyn_into()
        .map_err(|_| "requestAdapter did not return a promise")?;
    let adapter = JsFuture::from(promise).await.map_err(|e| describe(&e))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("WebGPU is present but gives no GPU adapter (it may be disabled or blocklisted for this GPU)".into());
    }
    Ok(())
}
