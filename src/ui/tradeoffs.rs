//! What each G buys: KV bytes per token against what happens to quality and speed. For the
//! default model it shows the perplexities the reference implementation measured (see the
//! fixtures), including that mean-pooled MQA without uptraining breaks this small model; the
//! speed is measured here, on the user's GPU, as they generate at each G.

use super::format;
use super::state::Ui;
use crate::model::{kv_cache_bytes, Grouping};
use leptos::prelude::*;

/// Perplexity by G measured by the fixtures' f32 reference (`fixtures/perplexity.json`:
/// Austen, *Pride and Prejudice* ch. 1 opening, 463 predictions) for the default model.
const REFERENCE_PPL: [(usize, f64); 3] = [(1, 9314.49), (3, 16.302), (9, 16.302)];

/// A table of every valid G: cache per token, share of MHA's, measured perplexity, decode
/// speed measured on this page; and the plain explanation of why G below the native value
/// hurts without uptraining.
#[component]
pub fn Tradeoffs(
    /// Page state.
    ui: Ui,
) -> impl IntoView {
    let rows = move || {
        let info = ui.info.get()?;
        let c = info.cfg.clone();
        let mha = kv_cache_bytes(&c, c.n_heads, 1, 4) as f64;
        let cur = ui.groups.get();
        let speeds = ui.decode_by_groups.get();
        Some(
            c.valid_groups()
                .into_iter()
                .map(|g| {
                    let gr = Grouping::new(c.n_heads, g).ok();
                    let per_tok = kv_cache_bytes(&c, g, 1, 4);
                    let ppl = REFERENCE_PPL
                        .iter()
                        .find(|(rg, _)| *rg == g && info.is_reference);
                    let quality = match (ppl, g.cmp(&c.n_kv_heads)) {
                        (Some((_, p)), _) => format!(
                            "perplexity {}",
                            if *p > 100.0 {
                                format!("≈{}", format::int(p.round() as u64))
                            } else {
                                format!("{p:.1}")
                            }
                        ),
                        (None, std::cmp::Ordering::Equal) => "as trained".into(),
                        (None, std::cmp::Ordering::Greater) => "same outputs (heads copied)".into(),
                        (None, std::cmp::Ordering::Less) => "pooled heads: expect damage".into(),
                    };
                    let speed = speeds.get(&g).map_or("–".to_string(), |m| {
                        format!("{:.1} tok/s", m.tokens_per_s())
                    });
                    view! {
                        <tr class:current=g == cur>
                            <td>{gr.map(|gr| gr.label())}</td>
                            <td class="num">{g}</td>
                            <td class="num">{format::bytes(per_tok)}</td>
                            <td class="num">{format!("{:.0}%", per_tok as f64 * 100.0 / mha)}</td>
                            <td>{quality}</td>
                            <td class="num" data-testid=format!("speed-g{g}")>{speed}</td>
                        </tr>
                    }
                })
                .collect_view(),
        )
    };
    let native = move || ui.info.with(|i| i.as_ref().map_or(0, |i| i.cfg.n_kv_heads));
    let heads = move || ui.info.with(|i| i.as_ref().map_or(0, |i| i.cfg.n_heads));
    let is_reference = move || ui.info.with(|i| i.as_ref().is_some_and(|i| i.is_reference));
    let loaded = move || ui.info.with(Option::is_some);
    view! {
        <Show when=loaded fallback=|| view! { <p class="muted">"Once a model is loaded: the KV cache each G needs, and what it costs in quality and speed."</p> }>
        <table class="tradeoffs">
            <thead><tr><th>"Grouping"</th><th class="num">"G"</th><th class="num">"KV / token"</th><th class="num">"vs MHA"</th><th>"Quality"</th><th class="num">"Decode here"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <p class="explain">
            "The model was trained with G = "{native}" KV heads for its "{heads}" query heads. "
            "A larger G gives each query head its own copy of the KV head it already read: the outputs stay the same "
            "and the cache grows. A smaller G mean-pools KV heads that were trained apart (GQA paper §2.1). "
            "The paper recovers quality by uptraining about 5% of the original compute; this page does not uptrain, "
            "so pooling below the native G shows what the cut costs before any training."
        </p>
        <p class="explain">
            "Decode here is measured on this GPU as you generate: tokens per second at each G over this page's runs "
            "(– until you generate at that G). Each decoded token reads every weight once and the whole KV cache so far; "
            "G shrinks the second part, so the gap between the Gs grows with the length of the text."
        </p>
        <Show when=is_reference>
            <p class="explain warn">
                <strong>"MQA breaks this small model. "</strong>
                "Measured by the f32 reference implementation on the opening of "<em>"Pride and Prejudice"</em>
                " (463 predictions): perplexity ≈16.3 at G = 3 and G = 9, ≈9,300 at G = 1, where greedy output "
                "collapses into runs of “-”. That is the expected result of pooling without uptraining, not a bug."
            </p>
        </Show>
        </Show>
    }
}
