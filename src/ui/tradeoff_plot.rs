//! Quality against memory and against speed, as the GQA paper plots time against quality
//! (its Figure 3 and Table 1): for every G, each regrouping method and each KV cache type
//! measured, the perplexity of the built-in passage measured here ("What each G buys")
//! against the KV bytes per token in that type, and against the decode milliseconds per token
//! measured on this page at that G and type; the types of one (G, method) joined by a line.
//! The regrouping maps each point holds are memory too: a bar from its mark to the right adds
//! their bytes spread over the page's KV capacity (`maps_cost.rs`), a part of its own.
//! The paper's own T5-XXL figures sit beside it, for scale.

use super::diagram::group_colour;
use super::format;
use super::maps_cost::maps_bytes;
use super::state::measurements::{quality_key, Measurements};
use super::state::model::{LoadedModel, ModelInfo};
use super::state::CacheType;
use crate::model::{kv_cache_bytes, KvType};
use crate::regroup::Method;
use leptos::prelude::*;

const W: f64 = 300.0;
const H: f64 = 210.0;
const L: f64 = 46.0;
const B: f64 = 34.0;
const T: f64 = 12.0;
const R: f64 = 10.0;

/// One measured point.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    groups: usize,
    method: Method,
    kv: KvType,
    /// Whether its label is drawn: the cache type in use, or the first type measured where
    /// that one is not.
    labelled: bool,
    ppl: f64,
    bytes: u64,
    /// Bytes of the maps at this (G, method), whatever the length.
    maps: u64,
    /// The maps' bytes per token of the page's KV capacity.
    maps_per_token: f64,
    /// Decode ms per token at this G, if measured.
    ms: Option<f64>,
}

/// Every (G, method, cache type) with a perplexity measured (G at or above the native one are
/// the native model, scored once per type), the type in use first within each (G, method).
fn points(model: LoadedModel, measured: Measurements, live: KvType) -> (Vec<Point>, usize) {
    let Some(info) = model.info.get() else {
        return (Vec::new(), 0);
    };
    let (cfg, g0) = (&info.cfg, info.cfg.n_kv_heads);
    let cap = info.facts.capacity.max(1);
    let quality = measured.quality.get();
    let backend = info.backend();
    let types = std::iter::once(live).chain(KvType::ALL.into_iter().filter(|&t| t != live));
    let types: Vec<KvType> = types.collect();
    let mut out = Vec::new();
    for g in cfg.valid_groups() {
        let methods: &[Method] = if g >= g0 {
            &[Method::Mean]
        } else {
            &[Method::Mean, Method::Calibrated]
        };
        for &method in methods {
            let mut labelled = true;
            for &kv in &types {
                let Some(&ppl) = quality.get(&quality_key(g, g0, method, kv)) else {
                    continue;
                };
                let speed = measured.speeds_on(|b| b == backend, kv);
                let maps = maps_bytes(cfg, g, method);
                out.push(Point {
                    groups: g,
                    method,
                    kv,
                    labelled,
                    ppl,
                    bytes: kv_cache_bytes(cfg, g, 1, kv.element()),
                    maps,
                    maps_per_token: maps as f64 / cap as f64,
                    ms: speed.get(&g).map(|m| 1e3 / m.tokens_per_s()),
                });
                labelled = false;
            }
        }
    }
    (out, cfg.n_heads)
}

/// A mark's size for its cache type: f32 the largest, q8_0 the smallest.
fn mark_scale(t: KvType) -> f64 {
    match t {
        KvType::F32 => 1.0,
        KvType::F16 => 0.75,
        KvType::Q8_0 => 0.55,
    }
}

/// A log scale from [lo, hi] onto [a, b].
fn log_scale(v: f64, lo: f64, hi: f64, a: f64, b: f64) -> f64 {
    let t = (v.ln() - lo.ln()) / (hi.ln() - lo.ln()).max(1e-9);
    a + t.clamp(0.0, 1.0) * (b - a)
}

fn linear(v: f64, lo: f64, hi: f64, a: f64, b: f64) -> f64 {
    let t = (v - lo) / (hi - lo).max(1e-9);
    a + t.clamp(0.0, 1.0) * (b - a)
}

/// One panel: perplexity (log) against `x` of each point.
fn panel(
    testid: &'static str,
    title: &'static str,
    pts: &[Point],
    heads: usize,
    x: fn(&Point) -> Option<f64>,
    x_text: fn(f64) -> String,
    extra: fn(&Point) -> f64,
) -> impl IntoView {
    let ends = pts.iter().filter_map(|p| x(p).map(|v| v + extra(p)));
    let xs: Vec<f64> = pts.iter().filter_map(x).chain(ends).collect();
    let (xlo, xhi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (xlo, xhi) = if xs.is_empty() {
        (0.0, 1.0)
    } else {
        (xlo * 0.9, xhi * 1.05)
    };
    let (ylo, yhi) = match pts.is_empty() {
        true => (10.0, 100.0),
        false => pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
            (a.min(p.ppl), b.max(p.ppl))
        }),
    };
    let (ylo, yhi) = (ylo.max(1.0) * 0.8, yhi.max(ylo + 1.0) * 1.25);
    let px = move |v: f64| linear(v, xlo, xhi, L, W - R);
    let py = move |v: f64| log_scale(v, ylo, yhi, H - B, T);
    let placed: Vec<(&Point, f64, f64)> = pts
        .iter()
        .filter_map(|p| x(p).map(|xv| (p, px(xv), py(p.ppl))))
        .collect();
    // The maps' part of each point: a bar from its mark to its cache and maps together.
    let bars = pts
        .iter()
        .filter(|p| extra(p) > 0.0)
        .filter_map(|p| {
            let xv = x(p)?;
            let (x1, x2, cy) = (px(xv), px(xv + extra(p)), py(p.ppl));
            let colour = group_colour(p.groups.saturating_sub(1), heads);
            Some(view! {
                <g data-testid="plot-maps" data-groups=p.groups data-method=p.method.name() data-kv=p.kv.name()>
                    <line x1=x1 y1=cy x2=x2 y2=cy stroke=colour.clone() stroke-width=3.0 stroke-opacity=0.35 />
                    <line x1=x2 y1=cy - 3.0 x2=x2 y2=cy + 3.0 stroke=colour stroke-width=1.5 />
                </g>
            })
        })
        .collect_view();
    // One line through the cache types of each (G, method), in the order of their bytes.
    let mut joins = Vec::new();
    for (i, &(p, ..)) in placed.iter().enumerate() {
        let same = |q: &Point| (q.groups, q.method) == (p.groups, p.method);
        if placed[..i].iter().any(|(q, ..)| same(q)) {
            continue;
        }
        let mut line: Vec<(u64, f64, f64)> = placed
            .iter()
            .filter(|(q, ..)| same(q))
            .map(|&(q, cx, cy)| (q.bytes, cx, cy))
            .collect();
        if line.len() > 1 {
            line.sort_by_key(|&(b, ..)| b);
            let points: Vec<String> = line.iter().map(|(_, x, y)| format!("{x},{y}")).collect();
            let colour = group_colour(p.groups.saturating_sub(1), heads);
            joins.push(view! { <polyline class="type-join" points=points.join(" ") fill="none" stroke=colour stroke-width=1.0 stroke-dasharray="2 2" /> });
        }
    }
    let dots = placed
        .into_iter()
        .map(|(p, cx, cy)| {
            let colour = group_colour(p.groups.saturating_sub(1), heads);
            let title = format!(
                "G = {}, {}, cache {}: perplexity {:.2}; {} of cache a token, and {} of maps",
                p.groups,
                p.method.name(),
                p.kv.name(),
                p.ppl,
                format::bytes(p.bytes),
                format::bytes(p.maps)
            );
            let k = mark_scale(p.kv);
            let shape = match p.method {
                Method::Calibrated => view! { <circle cx=cx cy=cy r={5.0 * k} fill=colour /> }.into_any(),
                Method::Mean => view! { <rect x={cx - 4.5 * k} y={cy - 4.5 * k} width={9.0 * k} height={9.0 * k} fill="none" stroke=colour stroke-width=2.0 /> }.into_any(),
            };
            let label = p.labelled.then(|| view! { <text x=cx + 7.0 y=cy - 6.0 class="tick-text">{format!("G{}", p.groups)}</text> });
            view! {
                <g data-testid="plot-point" data-groups=p.groups data-method=p.method.name() data-kv=p.kv.name() data-ppl=format!("{:.4}", p.ppl)
                   data-bytes=p.bytes.to_string() data-maps-bytes=p.maps.to_string() data-ms=p.ms.map(|m| format!("{m:.3}")).unwrap_or_default()>
                    <title>{title}</title>
                    {shape}
                    {label}
                </g>
            }
        })
        .collect_view();
    let yticks = [ylo, (ylo * yhi).sqrt(), yhi]
        .map(|v| view! { <text x=L - 4.0 y=py(v) + 4.0 text-anchor="end" class="tick-text">{format!("{v:.0}")}</text> });
    let xticks = (!xs.is_empty()).then(|| {
        [(xlo, "start"), ((xlo + xhi) / 2.0, "middle"), (xhi, "end")].map(|(v, anchor)| view! { <text x=px(v) y=H - B + 16.0 text-anchor=anchor class="tick-text">{x_text(v)}</text> })
    });
    let empty = xs.is_empty().then(|| view! { <text x=(L + W - R) / 2.0 y=H / 2.0 text-anchor="middle" class="tick-text">"not measured yet"</text> });
    view! {
        <figure class="plot" data-testid=testid>
            <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=title>
                <line x1=L y1=T x2=L y2=H - B class="axis" />
                <line x1=L y1=H - B x2=W - R y2=H - B class="axis" />
                {yticks}{xticks}{bars}{joins}{dots}{empty}
                <text x=(L + W - R) / 2.0 y=H - 4.0 text-anchor="middle" class="tick-text">{title}</text>
                <text x=10.0 y=T + 4.0 class="tick-text" transform=format!("rotate(-90 10 {})", T + 4.0) text-anchor="end">"perplexity (log)"</text>
            </svg>
        </figure>
    }
}

/// What the loaded model's figures mean beside the paper's: what a G below its own costs (or
/// that it has none), and how much of a token's bytes are weights.
fn about(i: &ModelInfo) -> String {
    let c = &i.cfg;
    let merge = match c.n_kv_heads {
        1 => format!(
            "Here {} was trained with a single KV head (multi-query attention): every G is the trained model, so its points differ in cache and speed, never in perplexity. ",
            i.name
        ),
        g0 => format!(
            "Here the small model pays far more at G = 1: {} has only {g0} KV heads of {} dimensions, and merging them without any uptraining removes trained capacity that T5-XXL's 64 heads relearn on 5% of their pre-training compute — the calibrated merge recovers much of it, not all. ",
            i.name, c.head_dim
        ),
    };
    format!(
        "{merge}And on a model of {:.0}M parameters the weights, not the cache, are most of the bytes a token reads, so the speed gained by a smaller G is small until the context is long. ",
        i.params as f64 / 1e6
    )
}

/// The plot (two panels), its legend, and the paper's figures.
#[component]
pub fn TradeoffPlot() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let measured = expect_context::<Measurements>();
    let cache = expect_context::<CacheType>();
    let here = move || model.info.with(|i| i.as_ref().map(about));
    let body = move || {
        let (pts, heads) = points(model, measured, cache.get());
        let n = pts.len();
        view! {
            <div class="plots" data-testid="tradeoff-plot" data-points=n>
                {panel("plot-bytes", "KV cache per token (+ maps / capacity)", &pts, heads, |p| Some(p.bytes as f64), |v| format::bytes(v as u64), |p| p.maps_per_token)}
                {panel("plot-ms", "decode ms per token, measured here", &pts, heads, |p| p.ms, |v| format!("{v:.1}"), |_| 0.0)}
            </div>
        }
    };
    view! {
        <section class="card wide" data-testid="plot-card">
            <h2>"Quality, memory, speed"</h2>
            {body}
            <p class="muted small">
                "■ mean-pooled, ● calibrated; lower is better. A KV cache type's marks are smaller the fewer bytes it keeps a value in (f32, f16, q8_0), "
                "and a dashed line joins the types of one G and method: it runs left as the cache shrinks, and up where the rounding costs quality. "
                "The pale bar to the right of a mark is its regrouping maps, their bytes shared over the page's KV capacity "
                "(a calibrated merge's megabytes are a part of every token's memory until the context is long). "
                "Points appear as "<b>"Measure quality"</b>" (the type in use) or "<b>"Measure every cache type"</b>" runs, and as you generate at each G and type."
            </p>
            <div class="paper">
                <table class="paper-table">
                    <caption>"GQA paper, Table 1 (T5-XXL, uptrained 5%)"</caption>
                    <thead><tr><th>"model"</th><th class="num">"time / sample"</th><th class="num">"average score"</th></tr></thead>
                    <tbody>
                        <tr><td>"MHA-XXL"</td><td class="num">"1.51 s"</td><td class="num">"47.2"</td></tr>
                        <tr><td>"GQA-8-XXL"</td><td class="num">"0.28 s"</td><td class="num">"47.1"</td></tr>
                        <tr><td>"MQA-XXL"</td><td class="num">"0.24 s"</td><td class="num">"46.6"</td></tr>
                    </tbody>
                </table>
                <p class="explain">
                    "The paper's score is an average over summarisation, translation and question answering (higher is better); here it is perplexity (lower is better). "
                    "There, GQA-8 keeps MHA's quality at MQA's speed. "
                    {here}
                    <a href="https://arxiv.org/abs/2305.13245" target="_blank" rel="noopener">"arXiv:2305.13245"</a>
                </p>
            </div>
        </section>
    }
}
