//! The generated text as it streams in, its token ids, and the speed.

use super::format;
use super::state::run::RunState;
use leptos::prelude::*;

/// Output text, ids, tokens/s and prefill time.
#[component]
pub fn Output() -> impl IntoView {
    let run = expect_context::<RunState>();
    let ids = move || {
        run.ids
            .with(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
    };
    let caret = move || run.is_generating();
    view! {
        <div class="output" aria-live="polite">
            <div class="output-text" data-testid="output-text">
                {move || run.output.get()}
                <Show when=caret><span class="caret" aria-hidden="true"></span></Show>
            </div>
            <div
                class="stats"
                data-testid="run-stats"
                data-prompt-tokens=move || run.prompt_tokens.get()
                data-prefill-ms=move || run.prefill_ms.get().map(|t| format!("{t:.1}")).unwrap_or_default()
                data-decode-tps=move || run.tokens_per_s.get().map(|t| format!("{t:.3}")).unwrap_or_default()
            >
                <span>
                    <span class="stat-num" data-testid="tokens-per-second">
                        {move || run.tokens_per_s.get().map_or("–".to_string(), |t| format!("{t:.1}"))}
                    </span>" tokens/s"
                </span>
                <span>
                    "prefill "<span class="stat-num">{move || run.prefill_ms.get().map_or("–".to_string(), |t| format!("{t:.0}"))}</span>" ms"
                </span>
                <span data-testid="token-count">
                    <span class="stat-num">{move || run.ids.with(Vec::len)}</span>" "{move || format::plural(run.ids.with(Vec::len), "token")}
                </span>
            </div>
            <details class="ids">
                <summary>"Token ids"</summary>
                <code data-testid="output-ids">{ids}</code>
            </details>
        </div>
    }
}
