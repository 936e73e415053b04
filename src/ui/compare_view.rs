//! Side by side, the view: columns per G (which G to run) or per KV cache type at the G in
//! use, how many tokens, the run button, and the columns of the last comparison (the task is
//! `owner/compare.rs`). The first token where a column departs from the reference — the
//! model's own G, or f32 — is marked, with the five most likely next tokens there under both:
//! the two saw the same text up to that point, so the difference is the grouping's (or the
//! cache's rounding's) alone.

use super::owner::{EngineHandle, Plan};
use super::state::measurements::{Across, Column, Comparison, Measurements};
use super::state::model::LoadedModel;
use super::state::run::{RunState, Status};
use super::state::{CacheType, Groups};
use super::url_state::Settings;
use crate::engine::Backend;
use crate::model::KvType;
use crate::regroup::Grouping;
use leptos::prelude::*;
use std::collections::BTreeSet;

/// Tokens per column unless the person asks for another number.
const DEFAULT_TOKENS: usize = 16;

/// The G to compare: those picked (every G when none is), and the native G first.
fn plan(picked: &BTreeSet<usize>, valid: &[usize], native: usize) -> Vec<usize> {
    let rest = valid
        .iter()
        .copied()
        .filter(|g| *g != native && (picked.is_empty() || picked.contains(g)));
    std::iter::once(native).chain(rest).collect()
}

/// Which engine computed the columns (kept with them: they stay when the engine is reloaded on
/// the other backend), and which of the CLI's runs to hold them against: the GPU engine
/// computes in f32 as the CLI's default does; the page's CPU engine is `cpu-q8` (int8
/// activations), whose greedy ids may part from the f32 ones where two tokens are nearly tied.
fn engine_note(backend: Backend) -> impl IntoView {
    let text = match backend {
        Backend::Gpu => "Computed on the GPU engine, in f32 as gqa-lab generate computes by default.",
        Backend::Cpu => "Computed on the f32 CPU engine, as gqa-lab generate computes by default.",
        Backend::CpuQ8 => "Computed on the CPU engine (cpu-q8: int8 activations), as gqa-lab generate --backend cpu-q8 computes: where two tokens are nearly tied, its greedy ids may part from the f32 ones of the GPU engine and of the CLI's default.",
    };
    view! { <p class="muted small" data-testid="compare-engine" data-backend=backend.name()>{text}</p> }
}

/// The five most likely tokens at one step, as a small table.
fn top_table(model: LoadedModel, title: String, top: &[(u32, f32)]) -> impl IntoView {
    let rows = top
        .iter()
        .map(|&(id, p)| {
            let text = model.token_text(id);
            view! { <tr><td><code>{format!("{text:?}")}</code></td><td class="num">{format!("{:.1}%", p * 100.0)}</td></tr> }
        })
        .collect_view();
    view! {
        <table class="top5" data-testid="compare-top">
            <caption>{title}</caption>
            <tbody>{rows}</tbody>
        </table>
    }
}

/// A column's name: its G, or its cache type (at the G of them all).
fn column_name(across: Across, c: &Column) -> String {
    match across {
        Across::Groups => format!("G = {}", c.groups),
        Across::Types => c.kv.name().to_string(),
    }
}

/// One column: its tokens, the first that departs from the reference marked, and there the
/// top five of this column and of the reference.
fn column_view(model: LoadedModel, cmp: &Comparison, c: &Column) -> impl IntoView {
    let departs = cmp.departs(c);
    let native = cmp.is_reference(c);
    let label = match cmp.across {
        Across::Groups => model.info.with_untracked(|i| {
            i.as_ref()
                .and_then(|i| Grouping::of(&i.cfg, c.groups).ok())
                .map(|g| g.label())
        }),
        Across::Types => Some(format!(
            "at G = {}, {}",
            c.groups,
            super::format::value_bytes(c.kv.element())
        )),
    };
    let name = column_name(cmp.across, c);
    let reference = cmp
        .reference_column()
        .map(|r| column_name(cmp.across, r))
        .unwrap_or_default();
    let pieces = c
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| view! { <span class:departs=Some(i) == departs>{p.clone()}</span> })
        .collect_view();
    let ids: Vec<String> = c.ids.iter().map(u32::to_string).collect();
    let tops = departs.filter(|_| !native).map(|d| {
        let here = c.top.get(d).cloned().unwrap_or_default();
        let there = cmp
            .reference_column()
            .and_then(|n| n.top.get(d).cloned())
            .unwrap_or_default();
        let at = format!("{name} at token {}", d + 1);
        let ref_there = match cmp.across {
            Across::Groups => format!("{reference} (native) there"),
            Across::Types => format!("{reference} (the reference) there"),
        };
        view! {
            <div class="top5s">
                {top_table(model, at, &here)}
                {top_table(model, ref_there, &there)}
            </div>
        }
    });
    let note = match (native, departs, cmp.across) {
        (true, _, Across::Groups) => "the model as trained".to_string(),
        (true, _, Across::Types) => "the reference: K and V as computed".to_string(),
        (false, None, Across::Groups) => "same tokens as the native G".to_string(),
        (false, None, Across::Types) => "same tokens as f32".to_string(),
        (false, Some(d), _) => format!("departs at token {}", d + 1),
    };
    view! {
        <div class="compare-column" class:native=native data-testid="compare-column" data-groups=c.groups data-kv=c.kv.name() data-ids=ids.join(",") data-departs=departs.map(|d| d.to_string()).unwrap_or_default()>
            <h3>{name.clone()} <span class="muted small">{label.map(|l| format!(" {l}"))}</span></h3>
            <p class="muted small">{note}</p>
            <p class="compare-text">{pieces}</p>
            {tops}
        </div>
    }
}

/// The view: which G to run, how many tokens, the run button, and the columns.
#[component]
pub fn CompareView() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let run = expect_context::<RunState>();
    let settings = expect_context::<RwSignal<Settings>>();
    let comparison = expect_context::<Measurements>().comparison;
    let engine = expect_context::<EngineHandle>();
    let groups = expect_context::<Groups>();
    let cache = expect_context::<CacheType>();
    let across = RwSignal::new(Across::Groups);
    let by_types = move || across.get() == Across::Types;
    let picked = RwSignal::new(BTreeSet::<usize>::new());
    let tokens = RwSignal::new(DEFAULT_TOKENS);
    let valid = move || model.cfg_or(Vec::new(), |c| c.valid_groups());
    let native = move || model.cfg_or(0, |c| c.n_kv_heads);
    let picks = move || {
        valid()
            .into_iter()
            .map(|g| {
                let on = move || picked.with(|p| p.is_empty() || p.contains(&g)) || g == native();
                let flip = move |_| {
                    picked.update(|p| {
                        if p.is_empty() {
                            p.extend(valid());
                        }
                        if !p.remove(&g) {
                            p.insert(g);
                        }
                    })
                };
                view! {
                    <label class="chip">
                        <input type="checkbox" data-testid="compare-pick" data-groups=g prop:checked=on prop:disabled=move || g == native() on:change=flip />
                        {format!("G = {g}")}
                    </label>
                }
            })
            .collect_view()
    };
    let idle = move || run.is_idle() && model.is_loaded();
    let start = move |_| {
        let plan = match across.get_untracked() {
            Across::Groups => {
                let t = cache.get_untracked();
                let gs = plan(&picked.get_untracked(), &valid(), native());
                Plan {
                    across: Across::Groups,
                    columns: gs.into_iter().map(|g| (g, t)).collect(),
                }
            }
            // f32 (the first of ALL) is the reference.
            Across::Types => Plan {
                across: Across::Types,
                columns: KvType::ALL
                    .into_iter()
                    .map(|t| (groups.get_untracked(), t))
                    .collect(),
            },
        };
        engine.compare(plan, tokens.get_untracked());
    };
    let choose_across = move |ev: leptos::ev::Event| {
        let a = match event_target_value(&ev).as_str() {
            "types" => Across::Types,
            _ => Across::Groups,
        };
        across.set(a);
    };
    let columns = move || {
        comparison.get().map(|cmp| {
            cmp.columns
                .iter()
                .map(|c| column_view(model, &cmp, c))
                .collect_view()
        })
    };
    let engine_line = move || comparison.with(|c| c.as_ref().map(|c| engine_note(c.backend)));
    let comparing = move || matches!(run.status.get(), Status::Comparing { .. });
    let method = move || settings.with(|s| s.regroup.name());
    let set_tokens = move |ev: leptos::ev::Event| {
        if let Ok(n) = event_target_value(&ev).trim().parse::<usize>() {
            tokens.set(n.clamp(1, 256))
        }
    };
    view! {
        <section class="card wide" data-testid="compare-view">
            <h2>"Side by side"</h2>
            <div class="compare-controls">
                <label>
                    "Columns: "
                    <select data-testid="compare-across" on:change=choose_across>
                        <option value="groups" selected=move || !by_types()>{move || format!("each G (cache {})", cache.get().name())}</option>
                        <option value="types" selected=by_types>{move || format!("each KV cache type at G = {}", groups.get())}</option>
                    </select>
                </label>
                <Show when=move || !by_types()>{picks}</Show>
                <label>
                    " Tokens "
                    <input type="number" min="1" max="256" data-testid="compare-tokens" prop:value=move || tokens.get().to_string() on:change=set_tokens />
                </label>
                <button class="primary" data-testid="compare-run" prop:disabled=move || !idle() on:click=start>"Compare"</button>
                <button data-testid="compare-stop" prop:disabled=move || !comparing() on:click=move |_| engine.stop()>"Stop"</button>
            </div>
            {engine_line}
            <div class="compare-columns">{columns}</div>
            <Show when=by_types>
                <p class="explain" data-testid="compare-types-explain">
                    "The prompt above, greedily, at G = "{move || groups.get()}" with the KV cache kept in f32, f16 and q8_0, one after another on this engine. "
                    "f32 keeps each key and value as computed; f16 rounds each to a half-precision float, q8_0 to an 8-bit integer with one scale per 32 values. "
                    "The first token where a column departs from f32 is marked, with what each found most likely there: where the rounding tips a near-tie."
                </p>
            </Show>
            <Show when=move || !by_types()>
                <Show
                    when=move || native() == 1
                    fallback=move || view! {
                        <p class="explain">
                            "The prompt above, greedily, at each G (merges below the native G made "{method}"), one after another on this engine. "
                            "Above the native G each KV head is a copy of one the model was trained with, so the text is the same token for token. "
                            "Below it, trained heads are merged: the first token where a column departs is marked, with what each G found most likely there. "
                            "In the GQA paper the merged checkpoint is then uptrained (about 5% of the pre-training compute) and recovers; this page never trains."
                        </p>
                    }
                >
                    <p class="explain">
                        "The prompt above, greedily, at each G, one after another on this engine. "
                        "This model was trained with a single KV head (G = 1): every larger G splits it into copies, so each column is the trained model and should be the same token for token. "
                        "A column that departs anyway is marked at its first different token, with what each G found most likely there. "
                        "There is no G below the trained one to merge to."
                    </p>
                </Show>
            </Show>
        </section>
    }
}
