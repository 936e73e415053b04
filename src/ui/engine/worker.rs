//! The engine's dedicated Web Worker: `static/worker.js` instantiates the page's own module
//! there and calls [`engine_worker`], which listens for the page's [`Envelope`]s and answers
//! each in order with [`local::execute`] — the GPU engine (WebGPU is exposed to workers in
//! Chrome and Edge) or the `cpu-q8` engine — so that a long prefill, a calibration or a
//! decode never holds the page's thread. A panic is posted before the worker dies, so the page
//! can say what happened.

use super::super::js::probe_webgpu;
use super::local::{self, LocalEngine};
use crate::engine::{EngineError, Generator};
use crate::protocol::{
    self, Answer, BackendChoice, Envelope, Event, Failure, FailureKind, Request,
};
use futures_channel::mpsc::{unbounded, UnboundedReceiver};
use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use js_sys::{Array, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// A request and the bytes beside it (the model's, for a load).
type Incoming = Result<(Envelope, Option<Vec<u8>>), String>;

/// Whether this worker has WebGPU, and why not: looked for once, at its start where the page
/// may want the GPU (`warm_gpu`), else at the first load that does.
type WebGpu = Shared<LocalBoxFuture<'static, Result<(), String>>>;

/// The worker's entry point (called by `static/worker.js`); does nothing outside a worker.
/// `warm_gpu`: ask for a WebGPU adapter now, while the page reads the model.
pub fn engine_worker(warm_gpu: bool) {
    let Ok(scope) = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>() else {
        return;
    };
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post(&Event::Panicked(info.to_string()));
    }));
    let (tx, rx) = unbounded::<Incoming>();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        let _ = tx.unbounded_send(read(&e));
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget(); // the worker's whole life
    let webgpu: WebGpu = probe_webgpu().boxed_local().shared();
    if warm_gpu {
        spawn_local(webgpu.clone().map(drop));
    }
    spawn_local(serve(rx, webgpu));
    post(&Event::Ready);
}

/// A message's envelope and bytes.
fn read(e: &MessageEvent) -> Incoming {
    let parts: Array = e.data().dyn_into().map_err(|_| "not an array")?;
    let head: Uint8Array = parts.get(0).dyn_into().map_err(|_| "no envelope")?;
    let envelope = protocol::decode(&head.to_vec())?;
    let bytes = parts
        .get(1)
        .dyn_into::<Uint8Array>()
        .ok()
        .map(|b| b.to_vec());
    Ok((envelope, bytes))
}

/// Answers the requests one after another, for the worker's life.
async fn serve(mut rx: UnboundedReceiver<Incoming>, webgpu: WebGpu) {
    let mut loaded: Option<(LocalEngine, Vec<u8>)> = None;
    let mut ahead: Option<Ahead> = None;
    while let Some(incoming) = rx.next().await {
        let (envelope, bytes) = match incoming {
            Ok(m) => m,
            Err(why) => {
                post(&Event::Panicked(format!(
                    "a request it could not read: {why}"
                )));
                return;
            }
        };
        let id = envelope.id;
        let (answer, len) = match taken(&mut loaded, ahead.take(), &envelope.request) {
            Some(step) => (Ok(step.answer), step.len_after),
            None => {
                let answer = answer(&mut loaded, envelope.request, bytes, &webgpu).await;
                (answer, loaded.as_ref().map_or(0, |(e, _)| e.len()))
            }
        };
        let reply = Event::Reply { id, len, answer };
        post(&reply);
        let Event::Reply {
            answer: Ok(Answer::Token(Some(_), gen)),
            ..
        } = reply
        else {
            continue;
        };
        if let Some((engine, bytes)) = loaded.as_mut() {
            ahead = step_ahead(engine, bytes, gen).await;
        }
    }
}

/// A decode step the worker computed while the page showed the token before it (the CPU
/// engine's; the GPU engine decodes ahead by itself): the generator the page will send with
/// its next request, the answer to it, and the cache's length before and after that step.
struct Ahead {
    from: Generator,
    answer: Answer,
    len_before: usize,
    len_after: usize,
}

/// The step computed ahead if `request` asks for it; otherwise that step is taken back (the
/// cache rewound to its length before it), and `None`.
fn taken(
    loaded: &mut Option<(LocalEngine, Vec<u8>)>,
    ahead: Option<Ahead>,
    request: &Request,
) -> Option<Ahead> {
    let step = ahead?;
    if matches!(request, Request::NextToken(gen) if *gen == step.from) {
        return Some(step);
    }
    if let Some((engine, _)) = loaded.as_mut() {
        // Rewinding only sets a length within the capacity the step was computed in.
        let _ = engine.skip_to(step.len_before);
    }
    None
}

/// Computes the next decode step of `gen` on the CPU engine now, so that it is ready when the
/// page asks; nothing while a prefill is due, the run is over or the attention view watches a
/// layer (its weights are read after each step the page takes).
async fn step_ahead(engine: &mut LocalEngine, bytes: &[u8], gen: Generator) -> Option<Ahead> {
    if !engine.backend().is_cpu()
        || gen.is_done()
        || gen.is_prefill_next()
        || engine.attention_probe().is_some()
    {
        return None;
    }
    let len_before = engine.len();
    let request = Request::NextToken(gen.clone());
    match local::execute(engine.as_mut(), bytes, request, &mut |_| {}).await {
        Ok(answer) => Some(Ahead {
            from: gen,
            answer,
            len_before,
            len_after: engine.len(),
        }),
        Err(_) => {
            // The page's own request will meet the same error and hear it.
            let _ = engine.skip_to(len_before);
            None
        }
    }
}

async fn answer(
    loaded: &mut Option<(LocalEngine, Vec<u8>)>,
    request: Request,
    bytes: Option<Vec<u8>>,
    webgpu: &WebGpu,
) -> Result<Answer, Failure> {
    match request {
        Request::Load {
            choice,
            ahead,
            page_webgpu,
        } => {
            *loaded = None; // its memory first
            let bytes = bytes.ok_or_else(|| other("a load without the model's bytes".into()))?;
            let (engine, facts) = load(&bytes, choice, ahead, page_webgpu, webgpu).await?;
            *loaded = Some((engine, bytes));
            Ok(Answer::Loaded(facts))
        }
        Request::Crash => panic!("the developer tools asked the engine's worker to crash"),
        Request::ExhaustMemory => exhaust_memory(),
        request => {
            let (engine, bytes) = loaded
                .as_mut()
                .ok_or_else(|| other("no model is loaded in the worker".into()))?;
            let mut progress = |p: crate::engine::calibrate::Progress| {
                post(&Event::Calibrating {
                    layer: p.layer,
                    layers: p.layers,
                })
            };
            local::execute(engine.as_mut(), bytes, request, &mut progress)
                .await
                .map_err(Failure::from)
        }
    }
}

/// Builds the engine here. WebGPU is looked for in the worker itself: where the worker has none
/// and the page may have (`page_webgpu`: the page has it, or has not looked), the page is told
/// so and looks for itself.
async fn load(
    bytes: &[u8],
    choice: BackendChoice,
    ahead: Option<bool>,
    page_webgpu: bool,
    webgpu: &WebGpu,
) -> Result<(LocalEngine, crate::protocol::Facts), Failure> {
    let webgpu = match choice {
        BackendChoice::Cpu => Err("not asked for".to_string()),
        _ => webgpu.clone().await,
    };
    if let (Err(why), true) = (&webgpu, page_webgpu && choice != BackendChoice::Cpu) {
        return Err(Failure {
            kind: FailureKind::NoWorkerWebGpu,
            message: format!("the engine's worker has no WebGPU: {why}"),
        });
    }
    local::open(bytes, choice, ahead, webgpu)
        .await
        .map_err(other)
}

fn other(message: String) -> Failure {
    Failure::from(EngineError::Relayed(message))
}

/// Developer tools: allocates until the worker's memory runs out (address space only: the
/// pages are never touched), which aborts it as a real out-of-memory would.
fn exhaust_memory() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(std::hint::black_box(Vec::with_capacity(64 << 20)));
    }
}

/// Posts an event to the page, its bytes transferred.
fn post(event: &Event) {
    let Ok(scope) = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>() else {
        return;
    };
    let bytes = Uint8Array::from(&protocol::encode(event)[..]);
    let _ = scope.post_message_with_transfer(&bytes, &Array::of1(&bytes.buffer()));
}
