//! The grouping diagram (SVG): the query heads and KV heads of one layer, each query head
//! joined to the KV head it reads (`Grouping::kv_head`), coloured by group; in KV budget mode,
//! each layer's G instead ([`LayerStrip`]).

use super::format;
use super::state::model::LoadedModel;
use super::state::Groups;
use super::url_state::Settings;
use crate::regroup::Grouping;
use leptos::prelude::*;

const W: f64 = 560.0;
const H: f64 = 200.0;
const PAD: f64 = 48.0;
const Q_Y: f64 = 44.0;
const KV_Y: f64 = 150.0;

/// Colour of KV group `g` of `groups`.
pub fn group_colour(g: usize, groups: usize) -> String {
    let hue = 210.0 + 300.0 * g as f64 / groups.max(1) as f64;
    format!("hsl({:.0} 70% 52%)", hue % 360.0)
}

/// x of item `i` of `n` spread across the width.
fn x_of(i: usize, n: usize) -> f64 {
    if n <= 1 {
        return W / 2.0;
    }
    PAD + i as f64 * (W - 2.0 * PAD) / (n - 1) as f64
}

/// One layer's attention heads at the current G.
#[component]
pub fn GroupingDiagram() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let grouping = move || {
        let g = groups.get();
        model.cfg_or(None, |c| Grouping::of(c, g).ok())
    };
    let body = move || {
        let Some(gr) = grouping() else {
            return view! { <text x=W / 2.0 y=H / 2.0 text-anchor="middle" class="muted">"load a model to see its heads"</text> }.into_any();
        };
        let (nh, ng) = (gr.n_heads(), gr.groups());
        let r = (((W - 2.0 * PAD) / nh as f64) / 2.6).clamp(3.0, 15.0);
        let kv_x = |g: usize| {
            let m = gr.members(g);
            (x_of(m.start, nh) + x_of(m.end - 1, nh)) / 2.0
        };
        let lines = (0..nh).map(|h| {
            let g = gr.kv_head(h);
            view! { <line class="edge" data-q=h data-kv=g x1=x_of(h, nh) y1=Q_Y + r x2=kv_x(g) y2=KV_Y - r stroke=group_colour(g, ng) /> }
        }).collect_view();
        let queries = (0..nh).map(|h| {
            let g = gr.kv_head(h);
            view! {
                <g class="q-head" data-kv=g>
                    <title>{format!("query head {h} reads KV head {g}")}</title>
                    <circle cx=x_of(h, nh) cy=Q_Y r=r fill=group_colour(g, ng) />
                    <text x=x_of(h, nh) y=Q_Y - r - 6.0 text-anchor="middle" class="head-label">{format!("Q{h}")}</text>
                </g>
            }
        }).collect_view();
        let kvs = (0..ng).map(|g| {
            let m = gr.members(g);
            let w = (x_of(m.end - 1, nh) - x_of(m.start, nh) + 2.0 * r).max(2.0 * r);
            view! {
                <g class="kv-head" data-kv=g>
                    <title>{format!("KV head {g}: serves query heads {}–{}", m.start, m.end - 1)}</title>
                    <rect x=kv_x(g) - w / 2.0 y=KV_Y - r width=w height=2.0 * r rx=r.min(6.0) fill=group_colour(g, ng) />
                    <text x=kv_x(g) y=KV_Y + r + 16.0 text-anchor="middle" class="head-label">{format!("KV{g}")}</text>
                </g>
            }
        }).collect_view();
        view! {
            <text x=6.0 y=Q_Y + 4.0 class="row-label">"Q"</text>
            <text x=6.0 y=KV_Y + 4.0 class="row-label">"K/V"</text>
            {lines}{queries}{kvs}
        }
        .into_any()
    };
    let caption = move || grouping().map(|gr| caption(&gr));
    let settings = expect_context::<RwSignal<Settings>>();
    let per_layer = move || settings.with(|s| s.budget.is_some());
    view! {
        <Show when=per_layer fallback=move || view! {
        <figure class="diagram">
            <svg
                data-testid="grouping-diagram"
                data-groups=move || groups.get()
                viewBox=format!("0 0 {W} {H}")
                role="img"
                aria-label=move || caption().unwrap_or_default()
            >
                {body}
            </svg>
            <figcaption>{caption}</figcaption>
        </figure>
        }>
            <LayerStrip />
        </Show>
    }
}

/// What the diagram shows, in words: with equal groups query head h reads KV head
/// ⌊h / n_rep⌋; with unequal ones (G not dividing H, or merging/splitting native groups
/// unevenly) which runs of query heads share each KV head.
fn caption(gr: &Grouping) -> String {
    let (h, g) = (gr.n_heads(), gr.groups());
    let plural = if g == 1 { "" } else { "s" };
    let head = format!("{h} query heads share {g} KV head{plural} ({})", gr.label());
    if gr.is_even() {
        return format!("{head}: query head h reads KV head ⌊h / {}⌋.", gr.max_rep());
    }
    let runs: Vec<String> = (0..g)
        .map(|k| {
            let m = gr.members(k);
            match m.len() {
                1 => format!("Q{} → KV{k}", m.start),
                _ => format!("Q{}–Q{} → KV{k}", m.start, m.end - 1),
            }
        })
        .collect();
    format!("{head}, in groups of unequal size: {}.", runs.join(", "))
}

/// Each layer's G as the engine runs it: a strip of one cell per layer.
#[component]
pub fn LayerStrip() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let groups = move || model.layer_groups.get();
    let heads = move || model.cfg_or(1, |c| c.n_heads);
    let native = move || model.cfg_or(1, |c| c.n_kv_heads);
    let cells = move || {
        let h = heads();
        groups()
            .into_iter()
            .enumerate()
            .map(|(l, g)| {
                view! {
                    <div
                        class="layer-cell"
                        data-testid="layer-g"
                        data-layer=l
                        data-g=g
                        title=format!("layer {l}: G = {g}")
                        style=format!(
                            "display:inline-block;width:1.6em;margin:1px;text-align:center;color:white;border-radius:3px;font-size:0.8em;background:{}",
                            group_colour(g.saturating_sub(1), h)
                        )
                    >
                        {g}
                    </div>
                }
            })
            .collect_view()
    };
    let total = move || groups().iter().sum::<usize>();
    let caption = move || {
        let gs = groups();
        let total: usize = gs.iter().sum();
        format!(
            "Each layer's G under the budget: {total} KV heads over {} ({:.2} per layer); the model's own is G = {} in every layer.",
            format::count(gs.len(), "layer"),
            total as f64 / gs.len().max(1) as f64,
            native()
        )
    };
    view! {
        <figure class="diagram">
            <div
                data-testid="layer-groups"
                data-total=total
                role="img"
                aria-label=caption
            >
                {cells}
            </div>
            <figcaption>{caption}</figcaption>
        </figure>
    }
}
