//! The page's side of the engine's Web Worker: starts it (`static/worker.js` with the page's
//! own wasm-bindgen module, already compiled), posts one [`Request`] at a time and waits for
//! its reply, handing calibration progress on meanwhile. A worker that crashes — a panic, a
//! WebAssembly trap, memory exhausted — becomes [`EngineError::WorkerLost`] for the request
//! waiting and every later one; the page then offers "Reload the engine", which starts a new
//! worker.

use super::super::js::describe;
use crate::engine::EngineError;
use crate::protocol::{
    self, Answer, BackendChoice, Envelope, Event, Facts, Failure, FailureKind, Request,
};
use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::StreamExt;
use js_sys::{Array, Object, Reflect, Uint8Array};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

/// How long a new worker may take to say it is ready.
const START_MS: i32 = 30_000;

/// What the page hears from the worker.
enum Heard {
    Event(Event),
    /// The worker is gone, and why.
    Lost(String),
}

/// Why a load in the worker did not give an engine.
pub enum Refusal {
    /// The worker has no WebGPU where the page has: the page runs the engine itself.
    NoWebGpu(String),
    /// The model or the device failed: the same would happen on the page's thread.
    Failed(String),
}

/// A running worker and its inbox.
pub struct RemoteEngine {
    worker: Worker,
    inbox: UnboundedReceiver<Heard>,
    next_id: u64,
    /// Set once the worker is gone.
    lost: Option<String>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(ErrorEvent)>,
}

impl RemoteEngine {
    /// Starts the worker and waits until it listens. `warm_gpu`: the worker asks for a WebGPU
    /// adapter at once, while the page still reads the model (a thread's first request can take
    /// seconds while the browser connects it to its GPU process).
    pub async fn start(warm_gpu: bool) -> Result<Self, String> {
        let glue = glue_url()?;
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("worker.js", &opts).map_err(|e| describe(&e))?;
        let (tx, inbox) = unbounded();
        let ready = Rc::new(Cell::new(false));
        let on_message = listen(tx.clone(), ready.clone());
        let on_error = Closure::<dyn FnMut(ErrorEvent)>::new({
            let tx = tx.clone();
            move |e: ErrorEvent| {
                e.prevent_default();
                let _ = tx.unbounded_send(Heard::Lost(e.message()));
            }
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        give_up_after(START_MS, tx, ready);
        let init = Object::new();
        let _ = Reflect::set(&init, &"glue".into(), &glue.into());
        let _ = Reflect::set(&init, &"module".into(), &wasm_bindgen::module());
        let _ = Reflect::set(&init, &"warmGpu".into(), &warm_gpu.into());
        worker.post_message(&init).map_err(|e| describe(&e))?;
        let mut me = RemoteEngine {
            worker,
            inbox,
            next_id: 0,
            lost: None,
            _on_message: on_message,
            _on_error: on_error,
        };
        match me.inbox.next().await {
            Some(Heard::Event(Event::Ready)) => Ok(me),
            Some(Heard::Lost(why)) => Err(why),
            _ => Err("it said something else before it was ready".into()),
        }
    }

    /// Builds the engine in the worker from the model's bytes (copied there).
    pub async fn load(
        &mut self,
        bytes: &Uint8Array,
        choice: BackendChoice,
        ahead: Option<bool>,
        page_webgpu: bool,
    ) -> Result<Facts, Refusal> {
        let req = Request::Load {
            choice,
            ahead,
            page_webgpu,
        };
        let failed = |e: EngineError| Refusal::Failed(e.to_string());
        match self.call(req, Some(bytes), &mut |_, _| {}).await {
            Ok((Ok(Answer::Loaded(facts)), _)) => Ok(facts),
            Ok((
                Err(Failure {
                    kind: FailureKind::NoWorkerWebGpu,
                    message,
                }),
                _,
            )) => Err(Refusal::NoWebGpu(message)),
            Ok((Err(f), _)) => Err(failed(f.into())),
            Ok((Ok(other), _)) => Err(Refusal::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => Err(failed(e)),
        }
    }

    /// Posts `request` (with `bytes` beside it) and waits for its answer and the cache's length
    /// after it; `progress` hears a calibration's layers. The error is the worker's loss.
    pub async fn call(
        &mut self,
        request: Request,
        bytes: Option<&Uint8Array>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Result<Answer, Failure>, usize), EngineError> {
        if let Some(why) = &self.lost {
            return Err(EngineError::WorkerLost(why.clone()));
        }
        self.next_id += 1;
        let id = self.next_id;
        if let Err(e) = self.post(&Envelope { id, request }, bytes) {
            return Err(self.lose(e));
        }
        loop {
            match self.inbox.next().await {
                Some(Heard::Event(Event::Reply { id: r, len, answer })) if r == id => {
                    return Ok((answer, len))
                }
                Some(Heard::Event(Event::Calibrating { layer, layers })) => progress(layer, layers),
                Some(Heard::Event(Event::Panicked(why))) => {
                    return Err(self.lose(format!("it panicked: {why}")))
                }
                Some(Heard::Event(_)) => {}
                Some(Heard::Lost(why)) => return Err(self.lose(why)),
                None => return Err(self.lose("its messages stopped".into())),
            }
        }
    }

    /// The envelope's bytes (transferred), and the model's beside them (copied by the browser:
    /// the page keeps its own, in case the worker cannot run the engine).
    fn post(&self, envelope: &Envelope, bytes: Option<&Uint8Array>) -> Result<(), String> {
        let head = Uint8Array::from(&protocol::encode(envelope)[..]);
        let (message, transfer) = (Array::of1(&head), Array::of1(&head.buffer()));
        if let Some(b) = bytes {
            message.push(b);
        }
        self.worker
            .post_message_with_transfer(&message, &transfer)
            .map_err(|e| describe(&e))
    }

    /// Marks the worker gone (and ends it): every request from now on fails with `why`.
    fn lose(&mut self, why: String) -> EngineError {
        let why = match why.as_str() {
            "" | "unreachable" | "Uncaught RuntimeError: unreachable" => {
                format!("a WebAssembly trap ({why:?}), most often its memory running out")
            }
            _ => why,
        };
        self.worker.terminate();
        self.lost = Some(why.clone());
        EngineError::WorkerLost(why)
    }
}

impl Drop for RemoteEngine {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

/// The page's own wasm-bindgen module, which the worker imports: trunk preloads it.
fn glue_url() -> Result<String, String> {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let link = doc
        .query_selector("link[rel=modulepreload]")
        .ok()
        .flatten()
        .ok_or("the page names no module to preload")?;
    link.get_attribute("href")
        .ok_or_else(|| "the module link has no address".into())
}

/// The worker's messages into the inbox: protocol bytes, or `{lost}` from `worker.js`.
fn listen(tx: UnboundedSender<Heard>, ready: Rc<Cell<bool>>) -> Closure<dyn FnMut(MessageEvent)> {
    Closure::new(move |e: MessageEvent| {
        let data = e.data();
        let heard = match data.dyn_ref::<Uint8Array>() {
            Some(bytes) => match protocol::decode::<Event>(&bytes.to_vec()) {
                Ok(ev) => Heard::Event(ev),
                Err(why) => Heard::Lost(why),
            },
            None => Heard::Lost(lost_text(&data)),
        };
        if matches!(heard, Heard::Event(Event::Ready)) {
            ready.set(true);
        }
        let _ = tx.unbounded_send(heard);
    })
}

fn lost_text(data: &JsValue) -> String {
    Reflect::get(data, &"lost".into())
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| "it posted something unreadable".into())
}

/// Says the worker is lost if it has not said it is ready within `ms`.
fn give_up_after(ms: i32, tx: UnboundedSender<Heard>, ready: Rc<Cell<bool>>) {
    let Some(w) = web_sys::window() else { return };
    let late = Closure::once_into_js(move || {
        if !ready.get() {
            let why = format!("it did not start within {} s", ms / 1000);
            let _ = tx.unbounded_send(Heard::Lost(why));
        }
    });
    let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(late.unchecked_ref(), ms);
}
