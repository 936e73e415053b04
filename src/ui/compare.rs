//! Side by side: one prompt generated greedily at several G, one after another on the engine
//! (regrouped with the page's method, a calibrated merge fitted first where needed), in
//! columns. The first token where a column departs from the model's own G is marked, with the
//! five most likely next tokens there under that G and under the native one: the two saw the
//! same text up to that point, so the difference is the grouping's alone.

use super::regrouping;
use super::session::Session;
use super::state::{Activity, Status, Ui};
use crate::engine::EngineError;
use crate::regroup::{Grouping, Method};
use crate::sampling::{argmax, top_probabilities};
use leptos::prelude::*;
use std::collections::BTreeSet;

/// Tokens per column unless the person asks for another number.
pub const DEFAULT_TOKENS: usize = 16;
/// Most likely tokens shown where a column departs.
const TOP: usize = 5;

/// One G's greedy continuation and, at every step, its five most likely tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub groups: usize,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    pub top: Vec<Vec<(u32, f32)>>,
}

/// The columns so far, the native G among them, and the method of the merges.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub native: usize,
    pub method: Method,
    pub columns: Vec<Column>,
}

impl Comparison {
    fn native_column(&self) -> Option<&Column> {
        self.columns.iter().find(|c| c.groups == self.native)
    }

    /// Where `c` first differs from the native column (`None`: nowhere, or no native yet).
    pub fn departs(&self, c: &Column) -> Option<usize> {
        let n = self.native_column()?;
        let same = c.ids.iter().zip(&n.ids).take_while(|(a, b)| a == b).count();
        (same < c.ids.len().max(n.ids.len())).then_some(same)
    }
}

/// The G to compare: those picked (every G when none is), and the native G first.
pub fn plan(picked: &BTreeSet<usize>, valid: &[usize], native: usize) -> Vec<usize> {
    let rest = valid
        .iter()
        .copied()
        .filter(|g| *g != native && (picked.is_empty() || picked.contains(g)));
    std::iter::once(native).chain(rest).collect()
}

/// Generates `tokens` greedy tokens from `prompt` at each G of `gs` into `ui.comparison`,
/// then puts the engine back at the person's G and method.
pub async fn run(
    ui: Ui,
    s: &mut Session,
    prompt: Vec<u32>,
    gs: Vec<usize>,
    tokens: usize,
) -> Result<(), EngineError> {
    s.engine.set_attention_probe(None).await?;
    let method = ui.method.get_untracked();
    let native = s.engine.config().n_kv_heads;
    let mut result = Comparison {
        native,
        method,
        columns: Vec::new(),
    };
    ui.comparison.set(Some(result.clone()));
    let back = ui.groups.get_untracked();
    let mut outcome = Ok(());
    for (i, &g) in gs.iter().enumerate() {
        if ui.stop.get_untracked() {
            break;
        }
        let of = gs.len();
        ui.status.set(Status::Comparing { done: i, of });
        outcome = regrouping::apply(ui, s, g, method).await;
        ui.status.set(Status::Comparing { done: i, of });
        if outcome.is_ok() {
            outcome = column(ui, s, &prompt, tokens, g).await.map(|c| {
                result.columns.push(c);
                ui.comparison.set(Some(result.clone()));
            });
        }
        if outcome.is_err() {
            break;
        }
    }
    let restored = regrouping::apply(ui, s, back, method).await;
    outcome.and(restored)
}

/// The greedy continuation at the engine's current G (argmax of the logits read back, the
/// same rule as argmax.wgsl and the CLI).
async fn column(
    ui: Ui,
    s: &mut Session,
    prompt: &[u32],
    tokens: usize,
    groups: usize,
) -> Result<Column, EngineError> {
    s.engine.reset().await?;
    let mut c = Column {
        groups,
        ids: Vec::new(),
        pieces: Vec::new(),
        top: Vec::new(),
    };
    let mut feed = prompt.to_vec();
    while c.ids.len() < tokens && !ui.stop.get_untracked() {
        let logits = s.engine.forward(&feed, false).await?;
        let id = argmax(&logits);
        c.top.push(top_probabilities(&logits, TOP));
        c.ids.push(id);
        c.pieces
            .push(String::from_utf8_lossy(&s.tok.token_bytes(id, true)).into_owned());
        if Some(id) == s.tok.eos_id {
            break;
        }
        feed = vec![id];
        super::js::yield_now().await;
    }
    s.engine.reset().await?;
    Ok(c)
}

/// The five most likely tokens at one step, as a small table.
fn top_table(ui: Ui, title: String, top: &[(u32, f32)]) -> impl IntoView {
    let tok = ui.tokenizer.get_value();
    let rows = top
        .iter()
        .map(|&(id, p)| {
            let text = tok
                .as_ref()
                .map(|t| String::from_utf8_lossy(&t.token_bytes(id, true)).into_owned())
                .unwrap_or_default();
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

/// One column: its tokens, the first that departs from the native G marked, and there the
/// top five of this G and of the native G.
fn column_view(ui: Ui, cmp: &Comparison, c: &Column) -> impl IntoView {
    let departs = cmp.departs(c);
    let native = c.groups == cmp.native;
    let label = ui.info.with_untracked(|i| {
        i.as_ref()
            .and_then(|i| Grouping::of(&i.cfg, c.groups).ok())
            .map(|g| g.label())
    });
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
            .native_column()
            .and_then(|n| n.top.get(d).cloned())
            .unwrap_or_default();
        view! {
            <div class="top5s">
                {top_table(ui, format!("G = {} at token {}", c.groups, d + 1), &here)}
                {top_table(ui, format!("G = {} (native) there", cmp.native), &there)}
            </div>
        }
    });
    let note = match (native, departs) {
        (true, _) => "the model as trained".to_string(),
        (false, None) => "same tokens as the native G".to_string(),
        (false, Some(d)) => format!("departs at token {}", d + 1),
    };
    view! {
        <div class="compare-column" class:native=native data-testid="compare-column" data-groups=c.groups data-ids=ids.join(",") data-departs=departs.map(|d| d.to_string()).unwrap_or_default()>
            <h3>{format!("G = {}", c.groups)} <span class="muted small">{label.map(|l| format!(" {l}"))}</span></h3>
            <p class="muted small">{note}</p>
            <p class="compare-text">{pieces}</p>
            {tops}
        </div>
    }
}

/// The view: which G to run, how many tokens, the run button, and the columns.
#[component]
pub fn CompareView(
    /// Page state.
    ui: Ui,
) -> impl IntoView {
    let picked = RwSignal::new(BTreeSet::<usize>::new());
    let tokens = RwSignal::new(DEFAULT_TOKENS);
    let valid = move || {
        ui.info
            .with(|i| i.as_ref().map(|i| i.cfg.valid_groups()).unwrap_or_default())
    };
    let native = move || ui.info.with(|i| i.as_ref().map_or(0, |i| i.cfg.n_kv_heads));
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
    let idle = move || ui.activity.get() == Activity::Idle && ui.info.with(Option::is_some);
    let start = move |_| {
        let gs = plan(&picked.get_untracked(), &valid(), native());
        super::actions::compare(ui, gs, tokens.get_untracked());
    };
    let columns = move || {
        ui.comparison.get().map(|cmp| {
            cmp.columns
                .iter()
                .map(|c| column_view(ui, &cmp, c))
                .collect_view()
        })
    };
    let method = move || ui.method.get().name();
    let set_tokens = move |ev: leptos::ev::Event| {
        if let Ok(n) = event_target_value(&ev).trim().parse::<usize>() {
            tokens.set(n.clamp(1, 256))
        }
    };
    view! {
        <section class="card wide" data-testid="compare-view">
            <h2>"Side by side"</h2>
            <div class="compare-controls">
                {picks}
                <label>
                    " Tokens "
                    <input type="number" min="1" max="256" data-testid="compare-tokens" prop:value=move || tokens.get().to_string() on:change=set_tokens />
                </label>
                <button class="primary" data-testid="compare-run" prop:disabled=move || !idle() on:click=start>"Compare"</button>
                <button data-testid="compare-stop" prop:disabled=move || !matches!(ui.status.get(), Status::Comparing { .. }) on:click=move |_| super::actions::stop(ui)>"Stop"</button>
            </div>
            <div class="compare-columns">{columns}</div>
            <p class="explain">
                "The prompt above, greedily, at each G (merges below the native G made "{method}"), one after another on this engine. "
                "Above the native G each KV head is a copy of one the model was trained with, so the text is the same token for token. "
                "Below it, trained heads are merged: the first token where a column departs is marked, with what each G found most likely there. "
                "In the GQA paper the merged checkpoint is then uptrained (about 5% of the pre-training compute) and recovers; this page never trains."
            </p>
        </section>
    }
}
