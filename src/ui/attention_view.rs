//! The attention view: for one layer and the token just fed, the attention weights of every
//! query head over the context, a heatmap row per head, the rows of the query heads that share
//! a KV head together and in that KV head's colour (as in the grouping diagram). Under GQA the
//! heads of a group read the same keys, yet each has its own query, so each row differs: what
//! grouping shares is the cache, not the attention pattern.
//!
//! The weights come from the engine's probe (`gpu/engine/probe.rs`), which a generation turns
//! on only while the view is open (the attention watch, `state/attention.rs`): closed,
//! decoding reads back nothing more. Opened (or another layer chosen) after a run, the view
//! asks for the last token's weights of that run: one probe of the cached state.

use super::diagram::group_colour;
use super::owner::EngineHandle;
use super::state::attention::{AttentionShown, AttentionWatch};
use super::state::model::LoadedModel;
use leptos::prelude::*;

/// Positions drawn at most; a longer context shows its first [`HEAD`] and its last ones.
const SHOWN: usize = 64;
const HEAD: usize = 4;
/// Row height, and the narrowest and widest cell (cells share about [`WIDTH`] pixels).
const ROW: f64 = 18.0;
const MIN_CELL: f64 = 18.0;
const MAX_CELL: f64 = 44.0;
const WIDTH: f64 = 900.0;

/// The width of a cell when `n` columns are drawn.
fn cell_width(n: usize) -> f64 {
    (WIDTH / n.max(1) as f64).clamp(MIN_CELL, MAX_CELL)
}

/// The positions drawn for a context of `n`: every one, or the first few, a gap (`None`) and
/// the last ones.
fn columns(n: usize) -> Vec<Option<usize>> {
    if n <= SHOWN {
        return (0..n).map(Some).collect();
    }
    let tail = n - (SHOWN - HEAD - 1);
    (0..HEAD)
        .map(Some)
        .chain([None])
        .chain((tail..n).map(Some))
        .collect()
}

/// A token's text as a short label (whitespace made visible).
fn label(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| match c {
            ' ' => '·',
            '\n' => '↵',
            c => c,
        })
        .take(8)
        .collect();
    if t.is_empty() {
        "∅".into()
    } else {
        t
    }
}

/// One query head's row: a cell per drawn position, its opacity the weight's square root (so
/// that small weights still show), in the colour of the head's KV group.
fn head_row(shown: &AttentionShown, h: usize, cols: &[Option<usize>], cell: f64) -> impl IntoView {
    let w = shown.weights.row(h);
    let gr = shown.grouping;
    let g = gr.kv_head(h);
    let colour = group_colour(g, gr.groups());
    let fill = colour.clone();
    let cells = cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|p| (i, p, w[p])))
        .map(|(i, p, a)| {
            let title = format!("Q{h} → position {p}: {a:.4}");
            view! {
                <rect x=i as f64 * cell y=0.0 width=cell - 1.0 height=ROW - 1.0 fill=fill.clone() fill-opacity=format!("{:.3}", a.max(0.0).sqrt())>
                    <title>{title}</title>
                </rect>
            }
        })
        .collect_view();
    let weights: Vec<String> = w.iter().map(|a| format!("{a:.6}")).collect();
    let width = cols.len() as f64 * cell;
    view! {
        <div class="attn-row" data-testid="attention-head" data-head=h data-kv-head=g data-weights=weights.join(",")>
            <span class="attn-label" style:color=colour>{format!("Q{h}")}</span>
            <svg width=width height=ROW viewBox=format!("0 0 {width} {ROW}")>{cells}</svg>
        </div>
    }
}

/// The rows, grouped by KV head, and the tokens as column labels.
fn heatmap(model: LoadedModel, shown: AttentionShown) -> impl IntoView {
    let cols = columns(shown.weights.positions);
    let cell = cell_width(cols.len());
    let gr = shown.grouping;
    let groups = (0..gr.groups())
        .map(|g| {
            let rows = gr
                .members(g)
                .map(|h| head_row(&shown, h, &cols, cell))
                .collect_view();
            let (border, colour) = (group_colour(g, gr.groups()), group_colour(g, gr.groups()));
            view! {
                <div class="attn-group" style:border-left-color=border>
                    <span class="attn-kv" style:color=colour>{format!("KV{g}")}</span>
                    {rows}
                </div>
            }
        })
        .collect_view();
    let labels = cols
        .iter()
        .map(|c| match c {
            Some(p) => {
                let text = shown.ids.get(*p).map(|&id| model.token_text(id)).unwrap_or_default();
                view! { <span class="attn-token" style:width=format!("{cell}px") title=format!("position {p}: {text:?}")>{label(&text)}</span> }.into_any()
            }
            None => view! { <span class="attn-token gap" style:width=format!("{cell}px")>"…"</span> }.into_any(),
        })
        .collect_view();
    let n = shown.weights.positions;
    let layer = shown.weights.layer;
    let window = model.info.with_untracked(|i| {
        let c = &i.as_ref()?.cfg;
        c.is_local(layer).then(|| {
            format!(
                "A sliding-window layer: it attends to the last {} positions only. ",
                c.arch.sliding_window
            )
        })
    });
    let note = (n > SHOWN).then(|| {
        format!(
            "Positions 0–{} and {}–{} of {n} are drawn; every weight is in the row's data.",
            HEAD - 1,
            n - (SHOWN - HEAD - 1),
            n - 1
        )
    });
    view! {
        <div class="attn-map">
            {groups}
            <div class="attn-tokens">{labels}</div>
        </div>
        <p class="muted small">
            {format!("Layer {layer}, the query at position {} (the last token fed) over the {n} positions so far. ", n - 1)}
            {window}
            {note}
        </p>
    }
}

/// The view: its toggle, layer selector, heatmap and explanation.
#[component]
pub fn AttentionView() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let watch = expect_context::<AttentionWatch>();
    let engine = expect_context::<EngineHandle>();
    // Each layer, a sliding-window one marked (Gemma 3's local layers).
    let layers = move || {
        model.cfg_or(Vec::new(), |c| {
            (0..c.n_layers)
                .map(|l| (l, c.is_local(l).then_some(c.arch.sliding_window)))
                .collect::<Vec<_>>()
        })
    };
    let options = move || {
        layers()
            .into_iter()
            .map(|(l, window)| {
                let label = match window {
                    Some(w) => format!("layer {l} (window {w})"),
                    None => format!("layer {l}"),
                };
                view! { <option value=l selected=move || watch.layer.get() == l>{label}</option> }
            })
            .collect_view()
    };
    let on_layer = move |ev: leptos::ev::Event| {
        if let Ok(l) = event_target_value(&ev).parse::<usize>() {
            if l != watch.layer.get_untracked() {
                watch.layer.set(l);
                watch.shown.set(None);
                if watch.open.get_untracked() {
                    engine.show_attention();
                }
            }
        }
    };
    let toggle = move |_| {
        watch.open.update(|o| *o = !*o);
        watch.shown.set(None);
        if watch.open.get_untracked() {
            engine.show_attention();
        }
    };
    let shown = move || watch.shown.get();
    view! {
        <section class="card wide" data-testid="attention-view" data-layer=move || watch.layer.get() data-open=move || watch.open.get().to_string() data-reads=move || watch.reads.get()>
            <div class="card-head">
                <h2>"Inside attention"</h2>
                <button data-testid="attention-toggle" aria-expanded=move || watch.open.get().to_string() on:click=toggle>
                    {move || if watch.open.get() { "Hide" } else { "Show the attention weights" }}
                </button>
                <label>
                    " Layer "
                    <select data-testid="attention-layer" on:change=on_layer prop:value=move || watch.layer.get().to_string()>{options}</select>
                </label>
            </div>
            <Show when=move || watch.open.get() fallback=|| view! {
                <p class="muted small">"Closed, the engine reads nothing back for this view: each decoded token is one submit and a 4-byte read, as without it. Open, each token adds one small kernel and a read of the layer's weights (and a hardware GPU stops running a step ahead), so the speed table leaves those tokens out."</p>
            }>
                {move || match shown() {
                    Some(s) => heatmap(model, s).into_any(),
                    None => view! { <p class="muted">"Generate (or keep generating) to see this layer's weights for each new token."</p> }.into_any(),
                }}
            </Show>
            <p class="explain">
                "Each row is one query head's softmax(q·k / √d) over the positions so far: where it looks while the next token is chosen. "
                "Rows in one coloured block share a KV head: they score the same keys and mix the same values, yet each has its own query, so their patterns differ. "
                "With G = 1 (multi-query attention) every row reads one cache; with G = H (multi-head) each has its own. "
                "Meta's reference code copies the shared K/V head once per query head ("<code>"repeat_kv"</code>"); "
                "this engine's kernels index the shared head instead, so a smaller G really reads and stores less. "
                <a href="https://arxiv.org/abs/2305.13245" target="_blank" rel="noopener">"GQA paper (arXiv:2305.13245)"</a>
            </p>
        </section>
    }
}
