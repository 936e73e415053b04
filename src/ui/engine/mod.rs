//! The page's engine: one handle over wherever the model runs — a dedicated Web Worker
//! ([`remote`] asks, [`worker`] answers; typed messages in [`crate::protocol`]), so that the
//! page's thread only draws and answers input; or, where a worker cannot run it (no module
//! workers, no WebGPU in workers, `?worker=0`), the page's own thread ([`local`]). Either way
//! the same [`local::execute`] runs each request, on the GPU engine or the `cpu-q8` engine.
//!
//! What the page reads often (the config, the cache's length, the grouping, the cache's
//! element type, the watched layer) is kept here, so that reading it costs no message.

mod local;
mod remote;
pub mod worker;

pub use crate::protocol::BackendChoice;

use super::js::{navigator_gpu, probe_webgpu};
use crate::engine::calibrate::Progress;
use crate::engine::{AttentionWeights, EngineError, Generator};
use crate::model::{KvType, ModelConfig};
use crate::protocol::{Answer, Facts, Request};
use crate::regroup::store;
use crate::regroup::{Grouping, Regrouping};
use js_sys::Uint8Array;
use local::LocalEngine;
use remote::{Refusal, RemoteEngine};
use std::rc::Rc;
use std::sync::Arc;

/// The loaded engine, and what the page knows of it without asking.
pub struct PageEngine {
    runner: Runner,
    cfg: ModelConfig,
    facts: Facts,
    /// Where it runs, and why there (for the header).
    pub thread: Thread,
    len: usize,
    regrouping: Arc<Regrouping>,
    kv_type: KvType,
    probe: Option<usize>,
}

enum Runner {
    /// On the page's thread, with the GGUF bytes it was built from (for calibration).
    Here {
        engine: LocalEngine,
        bytes: Rc<Vec<u8>>,
    },
    Worker(RemoteEngine),
}

/// A worker started ahead of the load (while the model's bytes are read), or why it did not.
pub struct WorkerStart(Result<RemoteEngine, String>);

/// Where the engine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub worker: bool,
    pub why: String,
}

impl PageEngine {
    /// Starts the engine's worker (it instantiates the page's module: worth doing while the
    /// model is read).
    pub async fn start_worker(choice: BackendChoice) -> WorkerStart {
        WorkerStart(RemoteEngine::start(choice != BackendChoice::Cpu).await)
    }

    /// Builds the engine `choice` asks for from the model's bytes (`cfg` read from them
    /// already), in `worker` when there is one and it can run it, else on the page's thread.
    /// The page looks for WebGPU itself only where it runs the engine, or where the worker has
    /// none (a thread's first adapter request can hold it for seconds while the browser
    /// connects it to its GPU process).
    pub async fn load(
        bytes: &Uint8Array,
        cfg: ModelConfig,
        choice: BackendChoice,
        ahead: Option<bool>,
        worker: Option<WorkerStart>,
    ) -> Result<Self, String> {
        let native = Arc::new(Regrouping::mean(
            &cfg,
            Grouping::of(&cfg, cfg.n_kv_heads).map_err(|e| e.to_string())?,
        ));
        let mut webgpu = None;
        let here_because = match worker {
            Some(WorkerStart(Ok(mut remote))) => {
                match Self::load_in_worker(&mut remote, bytes, choice, ahead, &mut webgpu).await {
                    Ok(facts) => {
                        let thread = Thread {
                            worker: true,
                            why: "in a dedicated Web Worker: the page's thread only draws and answers input".into(),
                        };
                        let runner = Runner::Worker(remote);
                        return Ok(Self::new(runner, cfg, facts, thread, native));
                    }
                    Err(Refusal::NoWebGpu(why)) => why,
                    Err(Refusal::Failed(why)) => return Err(why),
                }
            }
            Some(WorkerStart(Err(why))) => format!("the engine's worker did not start ({why})"),
            None => "asked for (worker=0)".into(),
        };
        let webgpu = match webgpu {
            Some(known) => known,
            None => page_webgpu(choice).await,
        };
        let bytes = Rc::new(bytes.to_vec());
        let (engine, facts) = local::open(&bytes, choice, ahead, webgpu).await?;
        let thread = Thread {
            worker: false,
            why: format!("on the page's thread: {here_because}"),
        };
        let runner = Runner::Here { engine, bytes };
        Ok(Self::new(runner, cfg, facts, thread, native))
    }

    /// Loads the engine in the worker. Where the worker has no WebGPU and the page may have
    /// (`navigator.gpu` is there), the page asks for an adapter itself (into `webgpu`): if it
    /// gets one, the page should run the engine, [`Refusal::NoWebGpu`]; if not, the worker runs
    /// what `choice` allows without (the CPU for `auto`).
    async fn load_in_worker(
        remote: &mut RemoteEngine,
        bytes: &Uint8Array,
        choice: BackendChoice,
        ahead: Option<bool>,
        webgpu: &mut Option<Result<(), String>>,
    ) -> Result<Facts, Refusal> {
        let page_may = choice != BackendChoice::Cpu && navigator_gpu().is_ok();
        let why = match remote.load(bytes, choice, ahead, page_may).await {
            Err(Refusal::NoWebGpu(why)) if page_may => why,
            answer => return answer,
        };
        let here = page_webgpu(choice).await;
        let page_has = here.is_ok();
        *webgpu = Some(here);
        match page_has {
            true => Err(Refusal::NoWebGpu(format!(
                "this browser gives WebGPU to the page but not to its workers ({why})"
            ))),
            false => remote.load(bytes, choice, ahead, false).await,
        }
    }

    fn new(
        runner: Runner,
        cfg: ModelConfig,
        facts: Facts,
        thread: Thread,
        regrouping: Arc<Regrouping>,
    ) -> Self {
        PageEngine {
            runner,
            cfg,
            facts,
            thread,
            len: 0,
            regrouping,
            // Every engine loads with an f32 cache; the page sets its own type right after.
            kv_type: KvType::F32,
            probe: None,
        }
    }

    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn is_cpu(&self) -> bool {
        self.facts.backend.is_cpu()
    }

    /// The CPU's cores run it (the CPU backend, or a software GPU adapter): smaller defaults
    /// (calibration tokens) apply.
    pub fn is_software(&self) -> bool {
        self.facts.is_software
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn capacity(&self) -> usize {
        self.facts.capacity
    }

    /// Positions in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn regrouping(&self) -> Arc<Regrouping> {
        self.regrouping.clone()
    }

    pub fn grouping(&self) -> Grouping {
        self.regrouping.grouping
    }

    pub fn attention_probe(&self) -> Option<usize> {
        self.probe
    }

    /// How the KV cache keeps K and V.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Runs one request where the engine is; the cache's length follows.
    async fn call(
        &mut self,
        req: Request,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Answer, EngineError> {
        let (answer, len) = match &mut self.runner {
            Runner::Here { engine, bytes } => {
                let mut each = |p: Progress| progress(p.layer, p.layers);
                let answer = local::execute(engine.as_mut(), bytes, req, &mut each).await;
                (answer, engine.len())
            }
            Runner::Worker(w) => {
                let (answer, len) = w.call(req, None, progress).await?;
                (answer.map_err(EngineError::from), len)
            }
        };
        self.len = len;
        answer
    }

    async fn run(&mut self, req: Request) -> Result<Answer, EngineError> {
        self.call(req, &mut |_, _| {}).await
    }

    /// Runs a request whose only answer is that it was done.
    async fn act(&mut self, req: Request) -> Result<(), EngineError> {
        self.run(req).await.map(drop)
    }

    /// Empties the KV cache.
    pub async fn reset(&mut self) -> Result<(), EngineError> {
        self.act(Request::Reset).await
    }

    /// Regroups to `r` (its cache restarts empty).
    pub async fn regroup_with(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError> {
        // Maps travel for a calibrated merge and for any grouping per layer (its G's are in
        // the maps' header); a uniform mean-pool is rebuilt there from G alone.
        let maps = r.is_calibrated() || !r.is_uniform();
        match &mut self.runner {
            Runner::Here { engine, .. } => {
                engine.regroup_with(r.clone())?;
                self.len = engine.len();
            }
            Runner::Worker(_) => {
                let req = Request::Regroup {
                    groups: r.groups(),
                    method: r.method,
                    maps: maps.then(|| store::to_bytes(&r)),
                };
                self.act(req).await?;
            }
        }
        self.regrouping = r;
        Ok(())
    }

    /// Keeps K and V as `t` from now on: the cache restarts empty at the same grouping (on an
    /// error the engine keeps its type).
    pub async fn set_kv_type(&mut self, t: KvType) -> Result<(), EngineError> {
        self.act(Request::SetKvType(t)).await?;
        self.kv_type = t;
        Ok(())
    }

    /// Drops a step decoded ahead (the GPU's; the CPU never runs ahead).
    pub async fn drop_ahead(&mut self) -> Result<(), EngineError> {
        self.act(Request::DropAhead).await
    }

    /// Takes back the positions from `len` on (a step decoded ahead is dropped).
    pub async fn skip_to(&mut self, len: usize) -> Result<(), EngineError> {
        self.act(Request::SkipTo(len)).await
    }

    pub async fn feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        self.act(Request::Feed(ids.to_vec())).await
    }

    /// Feeds `ids`; the logits of the last (`[vocab]`) or of every one (`[t][vocab]`).
    pub async fn forward(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>, EngineError> {
        let ids = ids.to_vec();
        match self.run(Request::Forward { ids, all }).await? {
            Answer::Logits(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// Perplexity of `ids` from an empty cache (left empty), computed where the engine is: the
    /// logits of every position never travel.
    pub async fn perplexity(&mut self, ids: &[u32]) -> Result<f64, EngineError> {
        match self.run(Request::Perplexity(ids.to_vec())).await? {
            Answer::Perplexity(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub async fn next_token(&mut self, gen: &mut Generator) -> Result<Option<u32>, EngineError> {
        match self.run(Request::NextToken(gen.clone())).await? {
            Answer::Token(id, after) => {
                *gen = after;
                Ok(id)
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn set_attention_probe(&mut self, layer: Option<usize>) -> Result<(), EngineError> {
        self.act(Request::Probe(layer)).await?;
        self.probe = layer;
        Ok(())
    }

    pub async fn attention_weights(&mut self) -> Result<Option<AttentionWeights>, EngineError> {
        match self.run(Request::AttentionWeights).await? {
            Answer::Weights(w) => Ok(w),
            other => Err(unexpected(other)),
        }
    }

    /// Fits the calibrated merge to `groups` on `ids`, telling `progress` (layer, layers)
    /// after each layer; the engine is left regrouped as fitted, its cache empty.
    pub async fn calibrate(
        &mut self,
        groups: usize,
        ids: Vec<u32>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Arc<Regrouping>, EngineError> {
        let bytes = match self
            .call(Request::Calibrate { groups, ids }, progress)
            .await?
        {
            Answer::Calibrated(b) => b,
            other => return Err(unexpected(other)),
        };
        let r = Arc::new(store::from_bytes(&bytes, &self.cfg)?);
        self.regrouping = r.clone();
        Ok(r)
    }

    /// Developer tools: destroys the GPU device, as a driver reset would (nothing on the CPU).
    pub async fn lose_device(&mut self) -> Result<(), EngineError> {
        self.act(Request::LoseDevice).await
    }

    /// Developer tools: makes the worker panic, or exhaust its memory; refused on the page's
    /// thread, whose crash would take the page with it.
    pub async fn crash_worker(&mut self, memory: bool) -> Result<(), EngineError> {
        if !self.thread.worker {
            return Err(EngineError::Relayed(
                "the engine runs on the page's thread: crashing it would crash the page".into(),
            ));
        }
        let req = match memory {
            true => Request::ExhaustMemory,
            false => Request::Crash,
        };
        self.act(req).await
    }
}

fn unexpected(a: Answer) -> EngineError {
    let what: String = format!("{a:?}").chars().take(80).collect();
    EngineError::Relayed(format!("the engine answered out of turn: {what}"))
}

/// Whether the page's thread has WebGPU (and why not); not looked for when `choice` is the CPU.
pub async fn page_webgpu(choice: BackendChoice) -> Result<(), String> {
    match choice {
        BackendChoice::Cpu => Err("not asked for".to_string()),
        _ => probe_webgpu().await,
    }
}
