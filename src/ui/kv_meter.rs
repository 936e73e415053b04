//! The KV-cache meter: live bytes of the current sequence at the current G and cache type, the
//! formula with its numbers filled in from the model's metadata and the type's bytes per value
//! (q8_0: 34 bytes per block of 32), and a chart of cache bytes against context length for
//! every valid G with the current position marked. All of it is `model::kv_cache_bytes`, the
//! arithmetic the engines allocate with; beside it the regrouping maps the engine holds
//! (`maps_cost.rs`), in the sum and in the chart's lines, and where a merge starts to pay off.

use super::diagram::group_colour;
use super::format;
use super::maps_cost::{maps_bytes, MapsLine};
use super::state::model::{local_layers, LoadedModel};
use super::state::run::RunState;
use super::state::{CacheType, Groups};
use super::url_state::Settings;
use crate::model::{kv_cache_bytes, kv_cache_bytes_layers, ElementType, ModelConfig};
use crate::model::{layer_cache_rows, WINDOW_SLACK};
use crate::regroup::Grouping;
use leptos::prelude::*;

const W: f64 = 560.0;
const H: f64 = 190.0;
const L: f64 = 64.0; // left margin (axis labels)
const B: f64 = 28.0; // bottom margin
const T: f64 = 24.0; // top margin

/// Live KV-cache bytes, the formula, and the bytes-vs-context chart.
#[component]
pub fn KvMeter() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let run = expect_context::<RunState>();
    let cache = expect_context::<CacheType>();
    let settings = expect_context::<RwSignal<Settings>>();
    // In KV budget mode, each layer's G as the engine runs it (`None`: the uniform G).
    let per_layer = move || {
        let gs = model.layer_groups.get();
        let budget = settings.with(|s| s.budget.is_some());
        (budget && model.cfg_or(false, |c| c.n_layers == gs.len())).then_some(gs)
    };
    let bytes = move || {
        let (g, n, t) = (groups.get(), run.seq_tokens(), cache.get().element());
        let layers = per_layer();
        model.cfg_or(None, |c| match &layers {
            Some(gs) => Some(kv_cache_bytes_layers(c, gs, n, t)),
            None => Some(kv_cache_bytes(c, g, n, t)),
        })
    };
    let formula = move || {
        let (g, n, t) = (groups.get(), run.seq_tokens(), cache.get().element());
        let layers = per_layer();
        model.info.with(|i| {
            i.as_ref().map(|i| {
                let c = &i.cfg;
                let (rows, g) = match &layers {
                    // Each layer's rows times its own G, summed (as the engines allocate).
                    Some(gs) => (
                        format::count(n, "token"),
                        format!("Σ over layers of G_l = {}", gs.iter().sum::<usize>()),
                    ),
                    None => (positions(c, n), format!("G = {g}")),
                };
                format!(
                    "2 (K and V) · {rows} · {g} · {} head_dim · {}",
                    c.head_dim,
                    value_factor(t),
                )
            })
        })
    };
    let kind = move || {
        let t = cache.get();
        let e = t.element();
        let per_row = model.cfg_or(0, |c| e.row_bytes(c.head_dim as u64));
        let row = model.cfg_or(0, |c| c.head_dim);
        format!(
            "{}: {} ({} bytes per value; a row of {row} values {per_row} bytes)",
            t.name(),
            format::value_bytes(e),
            format::per_value(e),
        )
    };
    let what = move || match run.positions.get() {
        Some(n) => format!(
            "{} in the KV cache (prompt + generated)",
            format::plural(n, "position")
        ),
        None => format!(
            "{} (not run yet)",
            format::plural(run.prompt_tokens.get(), "prompt token")
        ),
    };
    // Sliding-window layers keep only a ring of their last positions.
    let window = move || {
        model.cfg_or(None, |c| {
            let local = local_layers(c);
            (local > 0).then(|| {
                let w = c.arch.sliding_window;
                format!(
                    "{local} of this model's {} layers attend only to the last {w} positions (a sliding window); the other {} attend to the whole text. \
                     The engine keeps a ring of {} positions for each windowed layer (the window and one prefill chunk of {WINDOW_SLACK}), \
                     so past that the cache grows only with the other {}: the bytes above count it.",
                    c.n_layers,
                    c.n_layers - local,
                    w + WINDOW_SLACK,
                    format::count(c.n_layers - local, "layer"),
                )
            })
        })
    };
    let loaded = move || model.is_loaded();
    view! {
        <Show when=loaded fallback=|| view! { <p class="muted">"The KV-cache meter appears once a model is loaded."</p> }>
        <div class="kv-meter">
            <div class="kv-big">
                <span class="kv-num" data-testid="kv-cache-bytes">{move || bytes().unwrap_or(0)}</span>
                <span class="kv-unit">" bytes"</span>
                <span class="kv-human">{move || bytes().map(format::bytes)}</span>
            </div>
            <MapsLine cache_bytes=Signal::derive(bytes) />
            <p class="formula">
                <code data-testid="kv-formula">{formula}</code>
                <br/>
                <span class="muted" data-testid="kv-type-bytes" data-kv=move || cache.get().name()
                    data-bytes-per-value=move || format::per_value(cache.get().element())>{kind}</span>
                <br/>
                <span class="muted">
                    <span data-testid="kv-tokens">{move || run.seq_tokens()}</span>" "{what}
                </span>
            </p>
            {move || window().map(|w| view! { <p class="muted small" data-testid="kv-window">{w}</p> })}
            <KvChart />
        </div>
        </Show>
    }
}

/// The formula's last factor: `4 bytes`, or for a block type `34/32 bytes` (whole blocks).
fn value_factor(t: ElementType) -> String {
    match t.block_len {
        1 => format!(
            "{} {}",
            t.block_bytes,
            format::plural(t.block_bytes as usize, "byte")
        ),
        n => format!("{}/{n} bytes", t.block_bytes),
    }
}

/// The positions held summed over layers, as the formula writes them: `L layers · n tokens`,
/// or with sliding windows `(3 layers · n + 15 layers · min(n, ring))`.
fn positions(c: &ModelConfig, n: usize) -> String {
    let local = local_layers(c);
    let all = format::count(c.n_layers, "layer");
    if local == 0 {
        return format!("{all} · {}", format::count(n, "token"));
    }
    let ring = (0..c.n_layers)
        .filter(|&l| c.is_local(l))
        .map(|l| layer_cache_rows(c, l, n))
        .next()
        .unwrap_or(0);
    format!(
        "({} · {n} + {} windowed · {ring}) positions",
        format::count(c.n_layers - local, "layer"),
        local
    )
}

/// Where a model's bytes-per-token line bends between 0 and `cap` tokens: where its
/// windowed layers' rings fill.
fn knees(c: &ModelConfig, cap: usize) -> Vec<usize> {
    let ring = c.arch.sliding_window + WINDOW_SLACK;
    match local_layers(c) > 0 && ring < cap {
        true => vec![0, ring, cap],
        false => vec![0, cap],
    }
}

/// Cache and maps bytes vs context length, one line per valid G (its maps under the method in
/// use where it merges), up to the session's KV capacity.
#[component]
fn KvChart() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let run = expect_context::<RunState>();
    let cache = expect_context::<CacheType>();
    let settings = expect_context::<RwSignal<Settings>>();
    let chart = move || {
        let t = cache.get().element();
        let method = settings.with(|s| s.regroup);
        let info = model.info.get()?;
        let cfg = &info.cfg;
        let cap = info.facts.capacity.max(1);
        let valid = cfg.valid_groups();
        // Cache and maps of G at n tokens.
        let held = |g: usize, n: usize| kv_cache_bytes(cfg, g, n, t) + maps_bytes(cfg, g, method);
        let ymax = valid
            .iter()
            .map(|&g| held(g, cap))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let x = move |n: usize| L + (W - L - 8.0) * n as f64 / cap as f64;
        let y = move |b: u64| H - B - (H - B - T) * b as f64 / ymax;
        let cur_g = groups.get();
        let n = run.seq_tokens().min(cap);
        let lines = valid
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                let end = held(g, cap);
                let label = Grouping::of(cfg, g)
                    .map(|gr| gr.label())
                    .unwrap_or_default();
                // Straight, or bent where the windowed layers' rings are full.
                let points = knees(cfg, cap)
                    .into_iter()
                    .map(|n| format!("{},{}", x(n), y(held(g, n))))
                    .collect::<Vec<_>>()
                    .join(" ");
                view! {
                    <g class="series" class:current=g == cur_g>
                        <polyline points=points fill="none" stroke=group_colour(i, valid.len()) />
                        <text x=x(cap) - 4.0 y=y(end) - 6.0 text-anchor="end" class="series-label">
                            {format!("{label} · {}", format::bytes(end))}
                        </text>
                    </g>
                }
            })
            .collect_view();
        let here = held(cur_g, n);
        Some(view! {
            <line class="axis" x1=L y1=H - B x2=W - 8.0 y2=H - B />
            <line class="axis" x1=L y1=T x2=L y2=H - B />
            <text x=L - 6.0 y=T + 8.0 text-anchor="end" class="tick-text">{format::bytes(ymax as u64)}</text>
            <text x=L - 6.0 y=H - B text-anchor="end" class="tick-text">"0"</text>
            <text x=L y=H - 8.0 class="tick-text">"0"</text>
            <text x=W - 8.0 y=H - 8.0 text-anchor="end" class="tick-text">{format!("{} (this page's KV capacity)", format::count(cap, "token"))}</text>
            {lines}
            <line class="marker" x1=x(n) y1=T x2=x(n) y2=H - B />
            <circle class="marker-dot" cx=x(n) cy=y(here) r=5.0 />
            <text x=x(n) + 8.0 y=T + 10.0 class="tick-text">{format!("now: {}", format::count(n, "token"))}</text>
        })
    };
    let full = move || {
        let t = cache.get().element();
        model.info.with(|i| {
            i.as_ref().map(|i| {
                let c = &i.cfg;
                c.valid_groups()
                    .into_iter()
                    .map(|g| {
                        let label = Grouping::of(c, g).map(|gr| gr.label()).unwrap_or_default();
                        format!(
                            "{label} {}",
                            format::bytes(kv_cache_bytes(c, g, c.context_length, t))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" · ")
            })
        })
    };
    let ctx = move || model.cfg_or(0, |c| c.context_length);
    view! {
        <svg class="kv-chart" viewBox=format!("0 0 {W} {H}") role="img" aria-label="KV-cache and maps bytes against context length for each G">
            {chart}
        </svg>
        <p class="muted small">
            "Each line is a G's cache and, where it starts above zero, the regrouping maps it holds from the first token "
            "("{move || settings.with(|s| s.regroup.name())}" below the native G): a merged line crosses the native one where the merge starts to pay off."
        </p>
        <p class="muted small">
            "At the model's full context ("{move || format::count(ctx(), "token")}") in "{move || cache.get().name()}": "{full}
        </p>
    }
}
