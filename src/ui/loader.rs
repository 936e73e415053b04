//! Getting model bytes: a built-in model from the app's own origin (streamed with progress,
//! verified by sha256, kept in Cache Storage and read from there on the next visit; a cached
//! copy whose hash is wrong is dropped and fetched again), or a file the person picked.

use super::js::{describe, now_ms, yield_now};
use crate::models::BuiltinModel;
use js_sys::{Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStreamDefaultReader, Response};

const CACHE_NAME: &str = "gqa-lab-models-v1";
/// Files past this do not fit the 4 GiB address space of wasm32 next to the app.
const MAX_FILE_BYTES: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;

/// Where the bytes are coming from, for the progress bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Download,
    Cache,
    File,
}

/// How far a load has come.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    pub loaded: u64,
    pub total: Option<u64>,
    pub elapsed_ms: f64,
}

impl Progress {
    pub fn percent(&self) -> Option<f64> {
        self.total
            .filter(|&t| t > 0)
            .map(|t| (self.loaded as f64 * 100.0 / t as f64).min(100.0))
    }
    pub fn mb_per_s(&self) -> f64 {
        self.loaded as f64 / 1e6 / (self.elapsed_ms.max(1.0) / 1e3)
    }
}

/// Model bytes with their sha256 (lowercase hex). The bytes stay in a JavaScript array: the
/// page copies only the file's head into its own memory (tokenizer, shapes) and hands the
/// whole file to the engine's worker.
pub struct Loaded {
    pub bytes: Uint8Array,
    pub sha256: String,
}

/// A built-in model (served by trunk from `static/models/`, see index.html): from Cache
/// Storage when a verified copy is there, else from the network (then stored). `on_progress`
/// is called as bytes arrive.
pub async fn load_builtin(
    model: &BuiltinModel,
    on_progress: &dyn Fn(Progress),
) -> Result<Loaded, String> {
    let url = model.url;
    let loaded = |bytes| Loaded {
        bytes,
        sha256: model.sha256.into(),
    };
    let cache = open_cache().await;
    if let Some(cache) = &cache {
        if let Some(resp) = cache_match(cache, url).await {
            match read_verified(model, resp, Phase::Cache, on_progress).await {
                Ok(bytes) => return Ok(loaded(bytes)),
                Err(e) => {
                    web_sys::console::warn_1(
                        &format!("cached model rejected ({e}); fetching it again").into(),
                    );
                    let _ = JsFuture::from(cache.delete_with_str(url)).await;
                }
            }
        }
    }
    let window = web_sys::window().ok_or("no window")?;
    let resp: Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("could not fetch the model: {}", describe(&e)))?
        .dyn_into()
        .map_err(|_| "fetch did not return a Response")?;
    if !resp.ok() {
        return Err(format!(
            "{} is not on the server ({} {} for {url}); run `scripts/setup.sh model` and rebuild",
            model.display_name,
            resp.status(),
            resp.status_text()
        ));
    }
    let bytes = read_verified(model, resp, Phase::Download, on_progress).await?;
    if let Some(cache) = &cache {
        store(cache, url, &bytes).await;
    }
    Ok(loaded(bytes))
}

/// Reads a file the person dropped or picked, hashing it as it goes.
pub async fn load_file(
    file: &web_sys::File,
    on_progress: &dyn Fn(Progress),
) -> Result<Loaded, String> {
    if file.size() > MAX_FILE_BYTES {
        return Err(format!(
            "{} is {:.1} GB: too large for the browser (wasm32 has 4 GB of memory in all)",
            file.name(),
            file.size() / 1e9
        ));
    }
    let resp = Response::new_with_opt_blob(Some(file)).map_err(|e| describe(&e))?;
    let (bytes, sha256) =
        read_stream(resp, Phase::File, Some(file.size() as u64), on_progress).await?;
    Ok(Loaded { bytes, sha256 })
}

async fn open_cache() -> Option<Cache> {
    open_named_cache(CACHE_NAME).await
}

/// The Cache Storage cache `name`; `None` where there is none (Cache Storage exists only in
/// secure contexts: https, localhost, 127.0.0.1).
pub async fn open_named_cache(name: &str) -> Option<Cache> {
    let caches = web_sys::window()?.caches().ok()?;
    JsFuture::from(caches.open(name))
        .await
        .ok()?
        .dyn_into()
        .ok()
}

async fn cache_match(cache: &Cache, url: &str) -> Option<Response> {
    let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    hit.dyn_into().ok()
}

/// Stores the verified bytes; a full quota only costs the next visit a download.
async fn store(cache: &Cache, url: &str, bytes: &Uint8Array) {
    let Ok(resp) = Response::new_with_opt_buffer_source(Some(bytes)) else {
        return;
    };
    if let Err(e) = JsFuture::from(cache.put_with_str(url, &resp)).await {
        web_sys::console::warn_1(
            &format!(
                "could not keep the model in Cache Storage: {}",
                describe(&e)
            )
            .into(),
        );
    }
}

/// Reads a built-in model's bytes and checks their sha256: a cached copy whole, hashed by the
/// browser's own SHA-256 off the page's thread where there is one (WebCrypto), a download as
/// it streams in.
async fn read_verified(
    model: &BuiltinModel,
    resp: Response,
    phase: Phase,
    on_progress: &dyn Fn(Progress),
) -> Result<Uint8Array, String> {
    let (bytes, sha) = match phase {
        Phase::Cache => read_whole(resp, on_progress).await?,
        _ => read_stream(resp, phase, Some(model.bytes), on_progress).await?,
    };
    if sha != model.sha256 {
        return Err(format!(
            "sha256 mismatch: got {sha} for {} bytes, expected {} ({})",
            bytes.length(),
            model.sha256,
            model.display_name
        ));
    }
    Ok(bytes)
}

/// Bytes copied or hashed between two turns of the event loop: a chunk from Cache Storage
/// may be the whole file, whose copy and hash in one go would hold the page for most of a
/// second.
const SLICE: usize = 4 << 20;

/// WebCrypto's digest API (only in secure contexts, as Cache Storage).
fn subtle() -> Option<web_sys::SubtleCrypto> {
    Some(web_sys::window()?.crypto().ok()?.subtle())
}

/// Reads a cached response whole, and has it hashed.
async fn read_whole(
    resp: Response,
    on_progress: &dyn Fn(Progress),
) -> Result<(Uint8Array, String), String> {
    let start = now_ms();
    let failed = |e: JsValue| format!("reading the cached model failed: {}", describe(&e));
    let buf = JsFuture::from(resp.array_buffer().map_err(failed)?)
        .await
        .map_err(failed)?;
    let bytes = Uint8Array::new(&buf);
    let sha = sha256(&bytes).await?;
    on_progress(Progress {
        phase: Phase::Cache,
        loaded: bytes.length() as u64,
        total: Some(bytes.length() as u64),
        elapsed_ms: now_ms() - start,
    });
    Ok((bytes, sha))
}

/// The sha256 of `bytes` (lowercase hex): by the browser's own SHA-256 off the page's thread
/// where there is one (WebCrypto, in secure contexts as Cache Storage), else here a slice at a
/// time between turns of the event loop.
async fn sha256(bytes: &Uint8Array) -> Result<String, String> {
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect();
    let failed = |e: JsValue| format!("hashing the model failed: {}", describe(&e));
    if let Some(subtle) = subtle() {
        let digest = subtle
            .digest_with_str_and_buffer_source("SHA-256", bytes)
            .map_err(failed)?;
        let digest = JsFuture::from(digest).await.map_err(failed)?;
        return Ok(hex(&Uint8Array::new(&digest).to_vec()));
    }
    let mut hasher = Sha256::new();
    let mut slice = vec![0u8; SLICE];
    for from in (0..bytes.length()).step_by(SLICE) {
        let to = (from + SLICE as u32).min(bytes.length());
        let part = &mut slice[..(to - from) as usize];
        bytes.subarray(from, to).copy_to(part);
        hasher.update(part);
        yield_now().await;
    }
    Ok(hex(&hasher.finalize()))
}

/// Streams a response body into a JavaScript array (sized by its announced length, grown if
/// it lies), hashing each chunk and reporting progress.
async fn read_stream(
    resp: Response,
    phase: Phase,
    expected: Option<u64>,
    on_progress: &dyn Fn(Progress),
) -> Result<(Uint8Array, String), String> {
    let total = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .or(expected);
    let body = resp.body().ok_or("the response has no body")?;
    let reader: ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| "the response body is not a byte stream")?;
    let start = now_ms();
    let mut bytes =
        Uint8Array::new_with_length(total.unwrap_or(0).min(MAX_FILE_BYTES as u64) as u32);
    let mut len = 0u32;
    let (mut hasher, mut scratch) = (Sha256::new(), Vec::new());
    let mut last_report = f64::NEG_INFINITY;
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("reading the model failed: {}", describe(&e)))?;
        let done = Reflect::get(&chunk, &"done".into()).map_or(true, |d| d.is_truthy());
        if done {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into())
            .unwrap_or(JsValue::UNDEFINED)
            .dyn_into()
            .map_err(|_| "the stream gave something other than bytes")?;
        let end = len
            .checked_add(value.length())
            .filter(|&e| e as f64 <= MAX_FILE_BYTES)
            .ok_or("the model is larger than the browser can hold")?;
        if end > bytes.length() {
            let grown = Uint8Array::new_with_length(end.max(bytes.length().saturating_mul(2)));
            grown.set(&bytes.subarray(0, len), 0);
            bytes = grown;
        }
        bytes.set(&value, len);
        len = end;
        for from in (0..value.length()).step_by(SLICE) {
            let to = (from + SLICE as u32).min(value.length());
            scratch.resize((to - from) as usize, 0);
            value.subarray(from, to).copy_to(&mut scratch);
            hasher.update(&scratch);
            if value.length() as usize > SLICE {
                yield_now().await;
            }
        }
        let now = now_ms();
        if now - last_report > 100.0 {
            last_report = now;
            on_progress(Progress {
                phase,
                loaded: len as u64,
                total,
                elapsed_ms: now - start,
            });
        }
    }
    on_progress(Progress {
        phase,
        loaded: len as u64,
        total: Some(len as u64),
        elapsed_ms: now_ms() - start,
    });
    let sha = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes.subarray(0, len), sha))
}
