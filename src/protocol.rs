//! The messages between the page and the engine when the engine runs in a dedicated Web Worker
//! (`ui/engine/worker.rs` answers them, `ui/engine/remote.rs` asks): typed with serde, encoded
//! with postcard (compact; an `f32` array travels as its bytes) and posted as one transferred
//! `Uint8Array` each way (HTML Living Standard, "Web workers" and structured cloning).
//!
//! The page asks one thing at a time: every [`Request`] gets exactly one [`Event::Reply`], in
//! order; a calibration sends [`Event::Calibrating`] after each layer before its reply. Errors
//! cross as [`Failure`]s and become [`EngineError`]s again on the page, GPU failures kept apart
//! so that the page still offers "Reload the engine" for them.
//!
//! Pure: no browser API here, so the messages' round trips are tested natively.

use crate::engine::{AttentionWeights, Backend, EngineError, Generator};
use crate::model::KvType;
use crate::regroup::Method;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Which backend the page asks for (`?backend=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BackendChoice {
    /// WebGPU on a hardware adapter; the CPU without WebGPU or on a software adapter.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl BackendChoice {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "gpu" => Some(Self::Gpu),
            "cpu" => Some(Self::Cpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
        }
    }
}

/// What the page asks of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Build the engine from the GGUF bytes sent beside this message. `page_webgpu`: whether
    /// the page itself may have a WebGPU adapter (it has, or has not looked yet): if so and the
    /// worker has none, the worker answers [`FailureKind::NoWorkerWebGpu`] and the page looks
    /// for itself (and runs the GPU engine on its own thread where it has one).
    Load {
        choice: BackendChoice,
        ahead: Option<bool>,
        page_webgpu: bool,
    },
    /// Empty the KV cache.
    Reset,
    /// Regroup to `groups` with `method`; `maps` (`regroup::store::to_bytes`) for a calibrated
    /// merge, none for mean-pooling and for every G ≥ the native one.
    Regroup {
        groups: usize,
        method: Method,
        maps: Option<Vec<u8>>,
    },
    /// Keep K and V as this type from now on (`Engine::set_kv_type`: the cache restarts
    /// empty, at the grouping it had).
    SetKvType(KvType),
    /// Forget a decode step submitted ahead.
    DropAhead,
    /// Take back the positions from this one on (`Engine::skip_to`): the attention view feeds
    /// the last token of a finished run again to read its weights.
    SkipTo(usize),
    /// Add tokens to the cache (a prefill chunk).
    Feed(Vec<u32>),
    /// Add tokens and read back the last row of logits, or every row.
    Forward {
        ids: Vec<u32>,
        all: bool,
    },
    /// Perplexity of the ids from an empty cache (left empty).
    Perplexity(Vec<u32>),
    /// The generator's next token (it travels there and back).
    NextToken(Generator),
    /// Watch a layer's attention weights, or none.
    Probe(Option<usize>),
    /// The watched layer's weights for the last token fed.
    AttentionWeights,
    /// Fit the calibrated merge to `groups` on these calibration ids.
    Calibrate {
        groups: usize,
        ids: Vec<u32>,
    },
    /// Developer tools: destroy the GPU device, panic, or exhaust memory.
    LoseDevice,
    Crash,
    ExhaustMemory,
}

/// What the engine gives back for a request that succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    Loaded(Facts),
    Done,
    Logits(Vec<f32>),
    Perplexity(f64),
    Token(Option<u32>, Generator),
    Weights(Option<AttentionWeights>),
    /// `regroup::store::to_bytes` of the fitted regrouping.
    Calibrated(Vec<u8>),
}

/// What the page shows of a loaded engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub capacity: usize,
    /// What runs the model: the GPU adapter, or the CPU backend.
    pub device: String,
    pub backend: Backend,
    /// The CPU's cores: the CPU backend or a software GPU adapter.
    pub is_software: bool,
    pub decode_ahead: bool,
    /// Why this backend (for the header).
    pub why: String,
}

/// A request that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// `EngineError::Gpu`: the message is its inner text.
    Gpu,
    /// `EngineError::DeviceLost`: the message is its inner text.
    DeviceLost,
    /// The worker has no WebGPU where the page has: the page runs the engine itself.
    NoWorkerWebGpu,
    /// Anything else, as its text.
    Other,
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        let (kind, message) = match e {
            EngineError::Gpu(m) => (FailureKind::Gpu, m),
            EngineError::DeviceLost(m) => (FailureKind::DeviceLost, m),
            other => (FailureKind::Other, other.to_string()),
        };
        Failure { kind, message }
    }
}

impl From<Failure> for EngineError {
    fn from(f: Failure) -> Self {
        match f.kind {
            FailureKind::Gpu => EngineError::Gpu(f.message),
            FailureKind::DeviceLost => EngineError::DeviceLost(f.message),
            FailureKind::NoWorkerWebGpu | FailureKind::Other => EngineError::Relayed(f.message),
        }
    }
}

/// A request with its number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: u64,
    pub request: Request,
}

/// What the worker posts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The worker's module is running and listens.
    Ready,
    /// The answer to request `id`; `len` is the KV cache's positions after it.
    Reply {
        id: u64,
        len: usize,
        answer: Result<Answer, Failure>,
    },
    /// A calibration fitted `layer` of `layers`.
    Calibrating { layer: usize, layers: usize },
    /// The worker panicked (its message); it is gone.
    Panicked(String),
}

/// A message's bytes.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing plain enums, vectors and strings into a Vec cannot fail.
    postcard::to_allocvec(message).unwrap_or_default()
}

/// A message from its bytes; the error says what was wrong with them.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("a malformed engine message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::GenerateParams;
    use crate::sampling::SamplingParams;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(m: T) {
        let back: T = decode(&encode(&m)).expect("decodes");
        assert_eq!(back, m);
    }

    #[test]
    fn every_message_comes_back_as_it_went() {
        let params = GenerateParams {
            max_tokens: 7,
            sampling: SamplingParams::default(),
            stop_token: Some(2),
        };
        let gen = Generator::with_limits(vec![1, 2, 3], params, 100, 64).expect("valid");
        for request in [
            Request::Load {
                choice: BackendChoice::Cpu,
                ahead: Some(false),
                page_webgpu: true,
            },
            Request::Regroup {
                groups: 1,
                method: Method::Calibrated,
                maps: Some(vec![0, 255, 7]),
            },
            Request::Forward {
                ids: vec![5, 49151],
                all: true,
            },
            Request::NextToken(gen.clone()),
            Request::Probe(Some(29)),
            Request::SkipTo(41),
            Request::SetKvType(KvType::Q8_0),
            Request::SetKvType(KvType::F16),
            Request::Calibrate {
                groups: 2,
                ids: vec![1; 300],
            },
        ] {
            round_trip(Envelope { id: 9, request });
        }
        let weights = AttentionWeights {
            layer: 3,
            positions: 2,
            weights: vec![0.25, 0.75, f32::MIN_POSITIVE, 1.0],
        };
        for answer in [
            Ok(Answer::Logits(vec![-1.5, f32::MAX, 0.0])),
            Ok(Answer::Token(Some(42), gen)),
            Ok(Answer::Weights(Some(weights))),
            Err(Failure::from(EngineError::DeviceLost("gone".into()))),
        ] {
            round_trip(Event::Reply {
                id: u64::MAX,
                len: 12,
                answer,
            });
        }
    }

    #[test]
    fn gpu_failures_stay_gpu_failures_and_the_rest_keep_their_text() {
        let lost = EngineError::DeviceLost("driver reset".into());
        assert_eq!(EngineError::from(Failure::from(lost.clone())), lost);
        let full = EngineError::ContextFull {
            needed: 9,
            capacity: 8,
        };
        let relayed = EngineError::from(Failure::from(full.clone()));
        assert_eq!(relayed.to_string(), full.to_string());
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let bytes = encode(&Event::Ready);
        assert!(decode::<Envelope>(&[0xff; 3]).is_err());
        assert!(decode::<Event>(&bytes[..0]).is_err());
    }
}
