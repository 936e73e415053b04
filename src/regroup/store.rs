//! Fitted maps kept for later: their file format (the CLI's cache files, the page's Cache
//! Storage entries, the worker's messages) and [`MapsKey`], the one cache key both stores use.
//! A key names everything the maps depend on — the model's bytes, G, the calibration tokens,
//! the fit settings, the calibration text and this format's version — so a changed fit never
//! serves stale maps. A cache entry keeps the values in f16 (half the bytes: 3.0 MB for
//! SmolLM2's calibrated G = 1; perplexity within 0.03% of the f32 maps, benches/README.md), or
//! in f32 where a value is beyond f16's range; the worker's messages keep f32, losslessly. The
//! engines hold the values they are given in f32 (`regroup::cost`).

use super::{texts, FitSettings, Grouping, LayerMaps, Method, Regrouping, VMap, SEQUENCE};
use crate::model::{ModelConfig, ModelError};
use sha2::{Digest, Sha256};

/// Version of the format below and of the fit that fills it: change it when either changes.
pub const FORMAT_VERSION: u32 = 4;

/// Where fitted maps are cached: `file_name()` in the CLI's cache directory, `/maps/` +
/// `file_name()` in the page's Cache Storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapsKey {
    /// The model's sha256, first 16 hex digits.
    model: String,
    /// Hash of the calibration: text, tokens, sequence length, fit settings, format version.
    setting: String,
    groups: usize,
}

impl MapsKey {
    /// The key of maps for the model whose sha256 is `model_sha256` (hex), fitted to `groups`
    /// on `tokens` tokens of the built-in calibration text with `settings`.
    pub fn new(model_sha256: &str, groups: usize, tokens: usize, settings: FitSettings) -> Self {
        Self::of(
            model_sha256,
            groups,
            tokens,
            settings,
            texts::TEXT,
            FORMAT_VERSION,
        )
    }

    /// The key of maps fitted on `text` and stored in format `version`.
    fn of(
        model_sha256: &str,
        groups: usize,
        tokens: usize,
        settings: FitSettings,
        text: &str,
        version: u32,
    ) -> Self {
        let mut setting = Sha256::new();
        setting.update(text);
        let fit = settings.label();
        // "even": the tokens cut into sequences of near-equal length, every one used
        // (`calibration_sequences`; before, a remainder shorter than a sequence was dropped).
        setting.update(format!("{tokens}/{SEQUENCE}/even/{fit}/v{version}"));
        let model: String = model_sha256.chars().take(16).collect();
        MapsKey {
            model: model.to_ascii_lowercase(),
            setting: hex(&setting.finalize()[..4]),
            groups,
        }
    }

    /// The key for a model given as its bytes.
    pub fn for_model(bytes: &[u8], groups: usize, tokens: usize, settings: FitSettings) -> Self {
        Self::new(&hex(&Sha256::digest(bytes)), groups, tokens, settings)
    }

    /// `maps-{model}-{setting}-G{groups}.bin`.
    pub fn file_name(&self) -> String {
        format!("maps-{}-{}-G{}.bin", self.model, self.setting, self.groups)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// File format of fitted maps: `GQAMAPS1`, a little-endian u32 header length, a JSON header
/// (the grouping, the method, per layer the kind and length of each map, the sha256 of the
/// values and, in a cache, the [`MapsKey`] the maps were fitted for), then every map's values
/// as the header's `value_type` says (f32, or f16 in a cache entry), little-endian, in the
/// header's order.
const MAGIC: &[u8; 8] = b"GQAMAPS1";

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    n_heads: usize,
    native_groups: usize,
    groups: usize,
    head_dim: usize,
    method: String,
    /// Per layer: [k, v, q, o] lengths in f32 values; v negative for pooling weights.
    layers: Vec<[i64; 4]>,
    /// Per layer: the native pair each K slot carries (`[G][hd/2]`), or empty where slot f
    /// carries pair f.
    #[serde(default)]
    slots: Vec<Vec<u32>>,
    /// How each value is kept: `f32` (also where a header does not say: format 3) or `f16`.
    #[serde(default = "f32_name")]
    value_type: String,
    /// The sha256 of the values that follow (hex): damage anywhere in them is seen.
    values_sha256: String,
    /// In a cache: the key the maps were fitted for ([`MapsKey::file_name`]).
    key: Option<String>,
    /// Each layer's G, for a per-layer grouping (absent: every layer at `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer_groups: Option<Vec<usize>>,
}

fn f32_name() -> String {
    "f32".into()
}

impl Header {
    fn of(r: &Regrouping, values: &[u8], half: bool, key: Option<&MapsKey>) -> Self {
        let layers = r
            .layers
            .iter()
            .map(|m| {
                let v = match &m.v {
                    VMap::Pool(w) => -(w.len() as i64),
                    VMap::Dense(w) => w.len() as i64,
                };
                let q = m.q.as_ref().map_or(0, |q| 2 * q.len() as i64);
                [
                    2 * m.k.len() as i64,
                    v,
                    q,
                    m.o.as_ref().map_or(0, |o| o.len() as i64),
                ]
            })
            .collect();
        Header {
            n_heads: r.grouping.n_heads(),
            native_groups: r.grouping.native_groups(),
            groups: r.groups(),
            head_dim: r.head_dim,
            method: r.method.name().into(),
            layers,
            slots: r
                .layers
                .iter()
                .map(|m| m.slots.clone().unwrap_or_default())
                .collect(),
            value_type: if half { "f16" } else { "f32" }.into(),
            values_sha256: hex(&Sha256::digest(values)),
            key: key.map(MapsKey::file_name),
            layer_groups: (!r.is_uniform()).then(|| r.layer_groups()),
        }
    }
}

/// `r` as bytes ([`MAGIC`] format), as the page's engine worker receives and returns maps.
pub fn to_bytes(r: &Regrouping) -> Vec<u8> {
    encode(r, None)
}

/// `r` as a cache entry for `key`, its values in f16 where they all fit f16's range:
/// [`from_cache_bytes`] gives back [`stored`]`(r)`, and only for that key.
pub fn to_cache_bytes(r: &Regrouping, key: &MapsKey) -> Vec<u8> {
    encode(r, Some(key))
}

/// `r` as a cache entry gives it back: each value rounded to the nearest f16, unless one of
/// them is beyond f16's range (then all are kept).
pub fn stored(r: &Regrouping) -> Regrouping {
    let mut r = r.clone();
    if fits_f16(&r) {
        for m in &mut r.layers {
            each_value(m).for_each(|x| *x = half::f16::from_f32(*x).to_f32());
        }
    }
    r
}

/// Every value of `m`, in the file's order.
fn each_value(m: &mut LayerMaps) -> impl Iterator<Item = &mut f32> {
    let v = match &mut m.v {
        VMap::Pool(w) | VMap::Dense(w) => w,
    };
    let k = m.k.iter_mut().flatten().chain(v);
    k.chain(m.q.iter_mut().flatten().flatten())
        .chain(m.o.iter_mut().flatten())
}

/// Whether every value of `r` is a finite f16 once rounded.
fn fits_f16(r: &Regrouping) -> bool {
    let mut r = r.clone();
    r.layers
        .iter_mut()
        .all(|m| each_value(m).all(|x| half::f16::from_f32(*x).is_finite()))
}

fn encode(r: &Regrouping, key: Option<&MapsKey>) -> Vec<u8> {
    let half = key.is_some() && fits_f16(r);
    let values = values(r, half);
    let header = serde_json::to_vec(&Header::of(r, &values, half, key)).unwrap_or_default();
    let mut out = MAGIC.to_vec();
    out.extend((header.len() as u32).to_le_bytes());
    out.extend(header);
    out.extend(values);
    out
}

/// Every map's values as f32 or f16, little-endian, in the header's order.
fn values(r: &Regrouping, half: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for m in &mut r.layers.clone() {
        for x in each_value(m) {
            match half {
                true => out.extend(half::f16::from_f32(*x).to_le_bytes()),
                false => out.extend(x.to_le_bytes()),
            }
        }
    }
    out
}

/// Maps read back from bytes of [`to_bytes`], checked against the model of `cfg`; any
/// damage is an error (a cache file is outside data).
pub fn from_bytes(bytes: &[u8], cfg: &ModelConfig) -> Result<Regrouping, ModelError> {
    decode(bytes, cfg).map(|(r, _)| r)
}

/// A cache entry read back, if it is what `key` names: written for that key, the calibrated
/// merge to its G, undamaged and fit for the model of `cfg`. Anything else is an error that
/// says what it is, and the caller fits again.
pub fn from_cache_bytes(
    bytes: &[u8],
    cfg: &ModelConfig,
    key: &MapsKey,
) -> Result<Regrouping, ModelError> {
    let bad = |why: String| ModelError::BadConfig(format!("cached maps: {why}"));
    let (r, written_for) = decode(bytes, cfg)?;
    let wanted = key.file_name();
    if written_for.as_deref() != Some(wanted.as_str()) {
        let found = written_for.unwrap_or_else(|| "no key".into());
        return Err(bad(format!("written for {found}, not {wanted}")));
    }
    if r.groups() != key.groups || r.method != Method::Calibrated {
        let (g, m) = (r.groups(), r.method.name());
        return Err(bad(format!(
            "the maps are {m} at G = {g}, not calibrated at G = {}",
            key.groups
        )));
    }
    Ok(r)
}

/// The maps of `bytes` and the key they were written for, if any.
fn decode(bytes: &[u8], cfg: &ModelConfig) -> Result<(Regrouping, Option<String>), ModelError> {
    let bad = |why: &str| ModelError::BadConfig(format!("cached maps: {why}"));
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("not a maps file"))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("truncated"))?;
    let len = u32::from_le_bytes(*len) as usize;
    let (head, mut data) = (rest.get(..len), rest.get(len..).unwrap_or_default());
    let h: Header = head
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| bad("unreadable header"))?;
    if hex(&Sha256::digest(data)) != h.values_sha256 {
        return Err(bad("damaged: its values do not match their sha256"));
    }
    let grouping = Grouping::new(h.n_heads, h.native_groups, h.groups)?;
    let method = Method::parse(&h.method).ok_or_else(|| bad("unknown method"))?;
    let size = match h.value_type.as_str() {
        "f32" => 4,
        "f16" => 2,
        _ => return Err(bad("unknown value type")),
    };
    let mut take = |n: i64| -> Result<Vec<f32>, ModelError> {
        let n = usize::try_from(n.unsigned_abs()).map_err(|_| bad("bad length"))?;
        let bytes = data.get(..n.checked_mul(size).ok_or_else(|| bad("bad length"))?);
        let bytes = bytes.ok_or_else(|| bad("truncated"))?;
        data = &data[n * size..];
        Ok(match size {
            4 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    };
    let pairs = |v: Vec<f32>| v.chunks_exact(2).map(|c| [c[0], c[1]]).collect::<Vec<_>>();
    let mut layers = Vec::with_capacity(h.layers.len().min(1024));
    let mut slots = h.slots.into_iter();
    for [k, v, q, o] in h.layers {
        let k = pairs(take(k)?);
        let v = match v < 0 {
            true => VMap::Pool(take(v)?),
            false => VMap::Dense(take(v)?),
        };
        let q = (q > 0).then(|| take(q).map(pairs)).transpose()?;
        let o = (o > 0).then(|| take(o)).transpose()?;
        let slots = slots.next().filter(|s| !s.is_empty());
        layers.push(LayerMaps { k, v, q, o, slots });
    }
    if !data.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let per_layer = match h.layer_groups {
        Some(gs) => Some(
            gs.iter()
                .map(|&g| Grouping::new(h.n_heads, h.native_groups, g))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let r = Regrouping {
        grouping,
        method,
        head_dim: h.head_dim,
        layers,
        per_layer,
    };
    r.check(cfg)?;
    Ok((r, h.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    fn key(groups: usize, tokens: usize, ridge: Option<f64>, text: &str, v: u32) -> String {
        let settings = FitSettings {
            o_ridge: ridge,
            ..FitSettings::default()
        };
        MapsKey::of(SHA, groups, tokens, settings, text, v).file_name()
    }

    /// Every input of a fit is in its key: a change of any one gives another key.
    #[test]
    fn the_key_names_everything_the_maps_depend_on() {
        let base = key(1, 512, Some(1.0), "text", 2);
        assert_eq!(base, key(1, 512, Some(1.0), "text", 2));
        let changed = [
            ("groups", key(2, 512, Some(1.0), "text", 2)),
            ("tokens", key(1, 2048, Some(1.0), "text", 2)),
            ("ridge", key(1, 512, Some(0.1), "text", 2)),
            ("no refit", key(1, 512, None, "text", 2)),
            ("calibration text", key(1, 512, Some(1.0), "other text", 2)),
            ("format version", key(1, 512, Some(1.0), "text", 3)),
        ];
        for (what, k) in changed {
            assert_ne!(k, base, "a change of {what} kept the key {base}");
        }
        let other_model = MapsKey::of(
            &SHA.replace('b', "c"),
            1,
            512,
            FitSettings {
                o_ridge: Some(1.0),
                ..FitSettings::default()
            },
            "text",
            2,
        );
        assert_ne!(other_model.file_name(), base);
        assert!(base.starts_with("maps-b179c9523d0e6a0f-") && base.ends_with("-G1.bin"));
    }

    /// The page (hex sha256 from WebCrypto) and the CLI (the model's bytes) get the same key.
    #[test]
    fn the_page_and_the_cli_compute_one_key() {
        let bytes = b"not really a model";
        let s = FitSettings::default();
        let from_hex = MapsKey::new(&hex(&Sha256::digest(bytes)).to_uppercase(), 3, 64, s);
        assert_eq!(MapsKey::for_model(bytes, 3, 64, s), from_hex);
    }

    /// A cache entry keeps its values in f16 (about half the bytes) and gives back the maps
    /// rounded to them; a value beyond f16's range keeps the entry in f32; messages stay f32.
    #[test]
    fn cache_entries_keep_f16_values() {
        let cfg = crate::model::ModelConfig {
            arch: crate::model::Arch::llama(),
            n_layers: 2,
            dim: 64,
            ffn_dim: 128,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            vocab_size: 32,
            context_length: 512,
            rope_base: 1e4,
            rms_eps: 1e-5,
        };
        let grouping = Grouping::of(&cfg, 1).unwrap();
        let mut next = crate::regroup::test_rng(7);
        let mut layer = LayerMaps::expanded(grouping, 16);
        each_value(&mut layer).for_each(|x| *x += next() * 0.1);
        let mut r = Regrouping {
            grouping,
            method: Method::Calibrated,
            head_dim: 16,
            layers: vec![layer; 2],
            per_layer: None,
        };
        let key = MapsKey::new(SHA, 1, 64, FitSettings::default());
        let entry = to_cache_bytes(&r, &key);
        let back = from_cache_bytes(&entry, &cfg, &key).unwrap();
        assert_eq!(back, stored(&r));
        assert_ne!(back, r, "rounded");
        assert_eq!(stored(&back), back, "f16 values are kept exactly");
        assert!(
            entry.len() < to_bytes(&r).len() * 6 / 10,
            "about half the bytes"
        );
        assert_eq!(
            from_bytes(&to_bytes(&r), &cfg).unwrap(),
            r,
            "messages keep f32"
        );
        r.layers[1].k[0][0] = 1e6; // past f16's 65504
        assert_eq!(stored(&r), r);
        assert_eq!(
            from_cache_bytes(&to_cache_bytes(&r, &key), &cfg, &key).unwrap(),
            r
        );
    }
}
