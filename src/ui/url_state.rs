//! The page's settings, the one source of what the controls set (the model, G and method among
//! them), and the link a person can share: `?model=smollm2-135m|gemma-3-270m&prompt=…&chat=0|1&groups=G&budget=B&regroup=calibrated|mean
//! &kv=f32|f16|q8_0&calib_tokens=N&quality_tokens=N&temperature=…
//! &top_k=…&top_p=…&seed=…&max_tokens=…&ignore_eos=0|1&autorun=1&ahead=0|1&backend=auto|gpu|cpu
//! &worker=0|1`. Read once at start
//! and written back (with `history.replaceState`) whenever they change.

use super::engine::BackendChoice;
use crate::model::{KvType, ModelConfig};
use crate::models::{self, BuiltinModel};
use crate::regroup::Method;
use crate::regroup::MIN_TOKENS;
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;
use web_sys::UrlSearchParams;

/// Everything the controls set, as typed values.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The built-in model the page loads (`model=NAME`, a name of [`crate::models`]); a file
    /// the person drops or picks is loaded instead until they choose a built-in one again.
    pub model: &'static BuiltinModel,
    pub prompt: String,
    /// Wrap the prompt as one user turn of the model's chat template (where it has one: a
    /// model without one, such as Gemma 3 270M, takes the prompt as it is).
    pub chat: bool,
    /// KV groups asked for; `None` means the model's own ([`Settings::groups_on`] is the G in
    /// use).
    pub groups: Option<usize>,
    /// A KV budget instead of one G for every layer (`budget=B`): B KV heads per layer on
    /// average, 1 to H in steps of 1/layers, each layer's G chosen by its measured sensitivity
    /// (`owner/budget.rs`). `None`: the uniform G.
    pub budget: Option<f64>,
    /// How a G below the model's own is made (`regroup=calibrated|mean`).
    pub regroup: Method,
    /// How the KV cache keeps K and V (`kv=f32|f16|q8_0`; f16 by default, on either engine,
    /// as llama.cpp keeps its cache). [`Settings::kv_type_on`] is the type in use.
    pub kv_type: KvType,
    /// Calibration tokens (`calib_tokens=N`, at least 64); `None`: the page's default for the
    /// adapter.
    pub calib_tokens: Option<usize>,
    /// Tokens of the built-in passage "What each G buys" scores (`quality_tokens=N`).
    pub quality_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u32,
    pub max_tokens: usize,
    /// Keep generating past the end-of-sequence token.
    pub ignore_eos: bool,
    /// Start generating as soon as the model is loaded.
    pub autorun: bool,
    /// Show developer tools (e.g. simulating a lost GPU device).
    pub debug: bool,
    /// Decode one step ahead (`GpuEngine::decode_ahead`); `None` leaves the adapter's
    /// default (on for a hardware GPU, off for a software one).
    pub ahead: Option<bool>,
    /// Which engine runs the model (`backend=auto|gpu|cpu`, `auto` by default).
    pub backend: BackendChoice,
    /// Run the engine in a Web Worker where the browser can (`worker=0`: on the page's
    /// thread, for comparing the two).
    pub worker: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: &models::DEFAULT,
            prompt: "Explain in two sentences why the sky is blue.".into(),
            chat: true,
            groups: None,
            budget: None,
            regroup: Method::Calibrated,
            kv_type: KvType::F16,
            calib_tokens: None,
            quality_tokens: 128,
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
            max_tokens: 64,
            ignore_eos: false,
            autorun: false,
            debug: false,
            ahead: None,
            backend: BackendChoice::Auto,
            worker: true,
        }
    }
}

impl Settings {
    /// The G the page runs on a model of `cfg`: the one asked for where the model has it, else
    /// the model's own.
    pub fn groups_on(&self, cfg: &ModelConfig) -> usize {
        let valid = cfg.valid_groups();
        self.groups
            .filter(|g| valid.contains(g))
            .unwrap_or(cfg.n_kv_heads)
    }

    /// The KV budget the page runs on a model of `cfg`: the one asked for where it lies
    /// between 1 and the model's query heads, else none (the uniform G).
    pub fn budget_on(&self, cfg: &ModelConfig) -> Option<f64> {
        self.budget
            .filter(|&b| crate::regroup::budget::budget_heads(cfg, b).is_ok())
    }

    /// The KV cache type the page runs on a model of `cfg`: the one asked for where the model's
    /// heads hold it (q8_0 needs whole blocks of 32 values), else the default.
    pub fn kv_type_on(&self, cfg: &ModelConfig) -> KvType {
        match self.kv_type.holds(cfg.head_dim) {
            true => self.kv_type,
            false => Settings::default().kv_type,
        }
    }

    /// The prompt's ids as the model sees them (in the chat template when chat is on and the
    /// model has one).
    pub fn prompt_ids(&self, tok: &Tokenizer) -> Result<Vec<u32>, String> {
        let text = match self.chat && tok.chat_template.is_some() {
            true => tok.chat_prompt(&self.prompt, None),
            false => Ok(self.prompt.clone()),
        };
        text.and_then(|t| tok.encode_prompt(&t))
            .map_err(|e| e.to_string())
    }

    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        }
    }

    /// Parses a query string; values that do not parse keep their default and are reported.
    pub fn from_query(search: &str) -> (Self, Vec<String>) {
        let mut s = Settings::default();
        let mut bad = Vec::new();
        let Ok(q) = UrlSearchParams::new_with_str(search) else {
            return (s, vec!["the URL's query string could not be read".into()]);
        };
        let get = |k: &str| q.get(k);
        fn num<T: std::str::FromStr>(
            v: Option<String>,
            slot: &mut T,
            key: &str,
            bad: &mut Vec<String>,
        ) {
            if let Some(v) = v {
                match v.trim().parse() {
                    Ok(x) => *slot = x,
                    Err(_) => bad.push(format!("{key}={v:?} is not a valid number")),
                }
            }
        }
        if let Some(v) = get("model") {
            match models::by_name(v.trim()) {
                Some(m) => s.model = m,
                None => bad.push(format!(
                    "model={v:?} is not a built-in model ({})",
                    models::names()
                )),
            }
        }
        if let Some(p) = get("prompt") {
            s.prompt = p;
        }
        let mut flag = |key: &str| {
            let v = get(key)?;
            match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => Some(true),
                "0" | "false" | "no" => Some(false),
                _ => {
                    bad.push(format!("{key}={v:?} is not 1/0, true/false or yes/no"));
                    None
                }
            }
        };
        s.chat = flag("chat").unwrap_or(s.chat);
        s.ignore_eos = flag("ignore_eos").unwrap_or(false);
        s.autorun = flag("autorun").unwrap_or(false);
        s.debug = flag("debug").unwrap_or(false);
        s.ahead = flag("ahead");
        s.worker = flag("worker").unwrap_or(true);
        let mut g = 0usize;
        num(get("groups"), &mut g, "groups", &mut bad);
        s.groups = (g > 0).then_some(g);
        if let Some(v) = get("groups").filter(|v| v.trim().parse() == Ok(0usize)) {
            bad.push(format!(
                "groups={v:?} is not a valid G (at least 1 KV group)"
            ));
        }
        if let Some(v) = get("budget") {
            match v.trim().parse::<f64>() {
                Ok(b) if b.is_finite() && b >= 1.0 => s.budget = Some(b),
                _ => bad.push(format!(
                    "budget={v:?} is not a KV budget (KV heads per layer on average, from 1 to the model's query heads; the uniform G is used)"
                )),
            }
        }
        num(
            get("temperature"),
            &mut s.temperature,
            "temperature",
            &mut bad,
        );
        num(get("top_k"), &mut s.top_k, "top_k", &mut bad);
        num(get("top_p"), &mut s.top_p, "top_p", &mut bad);
        let defaults = Settings::default();
        if !(s.temperature.is_finite() && s.temperature >= 0.0) {
            bad.push(format!(
                "temperature={} is not a temperature (0 or more; 0 is greedy)",
                s.temperature
            ));
            s.temperature = defaults.temperature;
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            bad.push(format!("top_p={} is not in (0, 1]", s.top_p));
            s.top_p = defaults.top_p;
        }
        num(get("seed"), &mut s.seed, "seed", &mut bad);
        num(get("max_tokens"), &mut s.max_tokens, "max_tokens", &mut bad);
        if s.max_tokens == 0 {
            bad.push(format!(
                "max_tokens=0 asks for no token (at least 1; {} is used)",
                defaults.max_tokens
            ));
            s.max_tokens = defaults.max_tokens;
        }
        if let Some(v) = get("regroup") {
            match Method::parse(v.trim()) {
                Some(m) => s.regroup = m,
                None => bad.push(format!("regroup={v:?} is not calibrated or mean")),
            }
        }
        if let Some(v) = get("kv") {
            match KvType::parse(v.trim()) {
                Some(t) => s.kv_type = t,
                None => bad.push(format!(
                    "kv={v:?} is not a KV cache type (f32, f16 or q8_0; {} is used)",
                    s.kv_type.name()
                )),
            }
        }
        if let Some(v) = get("backend") {
            match BackendChoice::parse(v.trim()) {
                Some(b) => s.backend = b,
                None => bad.push(format!("backend={v:?} is not auto, gpu or cpu")),
            }
        }
        let mut calib = 0usize;
        num(get("calib_tokens"), &mut calib, "calib_tokens", &mut bad);
        match calib {
            0 => {}
            n if n < MIN_TOKENS => bad.push(format!(
                "calib_tokens={n} is below the {MIN_TOKENS} calibration needs"
            )),
            n => s.calib_tokens = Some(n),
        }
        num(
            get("quality_tokens"),
            &mut s.quality_tokens,
            "quality_tokens",
            &mut bad,
        );
        if s.quality_tokens < 2 {
            bad.push("quality_tokens must be at least 2".into());
            s.quality_tokens = Settings::default().quality_tokens;
        }
        (s, bad)
    }

    /// The query string for these settings (with a leading `?`).
    pub fn to_query(&self) -> String {
        let Ok(q) = UrlSearchParams::new() else {
            return String::new();
        };
        if *self.model != models::DEFAULT {
            q.append("model", self.model.name);
        }
        q.append("prompt", &self.prompt);
        q.append("chat", if self.chat { "1" } else { "0" });
        if let Some(g) = self.groups {
            q.append("groups", &g.to_string());
        }
        if let Some(b) = self.budget {
            q.append("budget", &b.to_string());
        }
        q.append("regroup", self.regroup.name());
        q.append("kv", self.kv_type.name());
        if let Some(n) = self.calib_tokens {
            q.append("calib_tokens", &n.to_string());
        }
        if self.quality_tokens != Settings::default().quality_tokens {
            q.append("quality_tokens", &self.quality_tokens.to_string());
        }
        q.append("temperature", &self.temperature.to_string());
        q.append("top_k", &self.top_k.to_string());
        q.append("top_p", &self.top_p.to_string());
        q.append("seed", &self.seed.to_string());
        q.append("max_tokens", &self.max_tokens.to_string());
        if self.backend != BackendChoice::Auto {
            q.append("backend", self.backend.name());
        }
        if let Some(a) = self.ahead {
            q.append("ahead", if a { "1" } else { "0" });
        }
        if !self.worker {
            q.append("worker", "0");
        }
        for (k, on) in [
            ("ignore_eos", self.ignore_eos),
            ("autorun", self.autorun),
            ("debug", self.debug),
        ] {
            if on {
                q.append(k, "1");
            }
        }
        format!("?{}", String::from(q.to_string()))
    }

    /// The settings in the page's URL.
    pub fn read() -> (Self, Vec<String>) {
        let search = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .unwrap_or_default();
        Self::from_query(&search)
    }

    /// Replaces the page's URL with these settings (no reload, no history entry).
    pub fn write(&self) {
        let Some(w) = web_sys::window() else { return };
        let path = w.location().pathname().unwrap_or_default();
        if let Ok(h) = w.history() {
            let url = format!("{path}{}", self.to_query());
            let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
        }
    }
}
