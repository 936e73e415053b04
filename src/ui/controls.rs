//! The controls: prompt, chat toggle, sampling settings, Generate/Stop ([`PromptControls`]),
//! the G slider ([`GroupSlider`]), which steps through every G from 1 to H, the regrouping
//! method ([`MethodSwitch`]) and the KV cache's element type ([`KvTypeSwitch`]). Each writes
//! the settings; the engine's owner follows them.

use super::format;
use super::owner::EngineHandle;
use super::state::model::LoadedModel;
use super::state::run::RunState;
use super::state::{CacheType, Groups};
use super::url_state::Settings;
use crate::model::KvType;
use crate::regroup::Grouping;
use crate::regroup::Method;
use leptos::ev;
use leptos::prelude::*;

/// What a number field says of the text it was given, where the setting did not take it as it
/// is: `typed` did not parse (or is out of range) and `used` is the value the runs use.
fn rejected(typed: &str, used: &str) -> String {
    match typed.is_empty() {
        true => format!("not a number: {used} is used"),
        false => format!("{typed} is not valid here: {used} is used"),
    }
}

/// A labelled number input bound to one field of the settings. Text that does not parse, or a
/// value the setting clamps, leaves the field showing the value in use, and the hint says
/// what was refused and what is used instead (until the next valid entry).
#[component]
fn NumberField<T, G, S>(
    /// Visible label.
    label: &'static str,
    /// `name`/`id` of the input, also its test hook.
    name: &'static str,
    /// Reads the field.
    get: G,
    /// Writes the field.
    set: S,
    /// The input's `step` attribute.
    #[prop(default = "1")]
    step: &'static str,
    /// The input's `min` attribute.
    #[prop(default = "0")]
    min: &'static str,
    /// Short help under the label.
    hint: &'static str,
) -> impl IntoView
where
    T: std::str::FromStr + ToString + PartialEq + 'static,
    G: Fn(&Settings) -> T + Copy + Send + Sync + 'static,
    S: Fn(&mut Settings, T) + Copy + Send + Sync + 'static,
{
    let settings = expect_context::<RwSignal<Settings>>();
    let refused = RwSignal::new(None::<String>);
    let on_change = move |e: ev::Event| {
        let typed = event_target_value(&e).trim().to_string();
        let taken = match typed.parse::<T>() {
            Ok(v) => {
                let mut taken = false;
                settings.update(|s| {
                    set(s, v);
                    taken = typed.parse::<T>().is_ok_and(|v| v == get(s));
                });
                taken
            }
            Err(_) => false,
        };
        let used = settings.with_untracked(|s| get(s).to_string());
        refused.set((!taken).then(|| rejected(&typed, &used)));
        if !taken {
            // The setting may not have changed (then nothing redraws the field): show it.
            let input: web_sys::HtmlInputElement = event_target(&e);
            input.set_value(&used);
        }
    };
    view! {
        <label class="field">
            <span class="field-label">{label}</span>
            <input
                type="number"
                id=name
                name=name
                data-testid=name
                step=step
                min=min
                aria-invalid=move || refused.with(Option::is_some).then_some("true")
                prop:value=move || settings.with(|s| get(s).to_string())
                on:change=on_change
            />
            <span class="field-hint" class:refused=move || refused.with(Option::is_some) data-testid=format!("{name}-hint")>
                {move || refused.get().unwrap_or_else(|| hint.to_string())}
            </span>
        </label>
    }
}

/// Prompt, chat toggle, sampling settings and the Generate/Stop buttons.
#[component]
pub fn PromptControls() -> impl IntoView {
    let settings = expect_context::<RwSignal<Settings>>();
    let model = expect_context::<LoadedModel>();
    let run = expect_context::<RunState>();
    let engine = expect_context::<EngineHandle>();
    let can_stop = move || run.can_stop();
    let can_generate = move || model.is_loaded() && run.is_idle();
    let has_chat = move || model.info.with(|i| i.as_ref().is_none_or(|i| i.has_chat));
    let on_key = move |e: ev::KeyboardEvent| {
        if e.key() == "Enter" && (e.ctrl_key() || e.meta_key()) {
            e.prevent_default();
            engine.generate();
        }
    };
    view! {
        <div class="prompt-box">
            <label class="field-label" for="prompt">"Prompt"</label>
            <textarea
                id="prompt"
                data-testid="prompt-input"
                rows="4"
                placeholder="Write a prompt…"
                prop:value=move || settings.with(|s| s.prompt.clone())
                on:input=move |e| { let v = event_target_value(&e); settings.update(|s| s.prompt = v); }
                on:keydown=on_key
            ></textarea>
        </div>
        <div class="row toggles">
            <label class="toggle" title=move || match has_chat() {
                true => "Wrap the prompt as one user turn of the model's ChatML template",
                false => "This model has no chat template: the prompt goes in as it is",
            }>
                <input
                    type="checkbox"
                    data-testid="chat-toggle"
                    prop:checked=move || settings.with(|s| s.chat) && has_chat()
                    prop:disabled=move || !has_chat()
                    on:change=move |e| { let on = event_target_checked(&e); settings.update(|s| s.chat = on); }
                />
                {move || match has_chat() {
                    true => " Chat (ChatML)",
                    false => " Chat (this model has no chat template)",
                }}
            </label>
            <label class="toggle" title="Keep generating after the end-of-sequence token">
                <input
                    type="checkbox"
                    data-testid="ignore-eos"
                    prop:checked=move || settings.with(|s| s.ignore_eos)
                    on:change=move |e| { let on = event_target_checked(&e); settings.update(|s| s.ignore_eos = on); }
                />
                " Ignore end of sequence"
            </label>
        </div>
        <details class="sampling" open>
            <summary>"Sampling"</summary>
            <div class="fields">
                <NumberField label="Temperature" name="temperature" step="0.1" hint="0 = greedy"
                    get=|s: &Settings| s.temperature set=|s: &mut Settings, v: f32| s.temperature = v.max(0.0) />
                <NumberField label="Top-k" name="top_k" hint="0 = all tokens"
                    get=|s: &Settings| s.top_k set=|s: &mut Settings, v| s.top_k = v />
                <NumberField label="Top-p" name="top_p" step="0.05" hint="1 = no cut"
                    get=|s: &Settings| s.top_p set=|s: &mut Settings, v: f32| s.top_p = v.clamp(0.01, 1.0) />
                <NumberField label="Seed" name="seed" hint="same seed, same text"
                    get=|s: &Settings| s.seed set=|s: &mut Settings, v| s.seed = v />
                <NumberField label="Max tokens" name="max_tokens" min="1" hint="new tokens"
                    get=|s: &Settings| s.max_tokens set=|s: &mut Settings, v: usize| s.max_tokens = v.max(1) />
            </div>
        </details>
        <div class="row buttons">
            <button
                class="primary"
                data-testid="generate-button"
                prop:disabled=move || !can_generate()
                on:click=move |_| engine.generate()
                title="Ctrl+Enter in the prompt"
            >"Generate"</button>
            <button
                data-testid="stop-button"
                prop:disabled=move || !can_stop()
                title="Ends a generation after its current token, a quality measurement after its current G"
                on:click=move |_| engine.stop()
            >"Stop"</button>
        </div>
    }
}

/// The next G for a slider value `v` coming from `cur`: a valid `v` as it is; one step (the
/// arrow keys) moves to the neighbouring valid G in that direction; a jump snaps to the nearest.
fn snap(valid: &[usize], cur: usize, v: usize) -> usize {
    if valid.contains(&v) {
        return v;
    }
    if v == cur + 1 {
        return valid.iter().copied().find(|&g| g > cur).unwrap_or(cur);
    }
    if v + 1 == cur {
        return valid
            .iter()
            .rev()
            .copied()
            .find(|&g| g < cur)
            .unwrap_or(cur);
    }
    valid
        .iter()
        .copied()
        .min_by_key(|&g| (g.abs_diff(v), usize::MAX - g))
        .unwrap_or(cur)
}

/// What choosing G = `g` does: if the loaded model has it and it is not the G in use, the
/// settings change and the engine follows them.
fn groups_chooser() -> impl Fn(usize) + Copy + Send + Sync + 'static {
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let settings = expect_context::<RwSignal<Settings>>();
    let engine = expect_context::<EngineHandle>();
    move |g| {
        let valid = model.info.with_untracked(|i| {
            i.as_ref()
                .is_some_and(|i| i.cfg.valid_groups().contains(&g))
        });
        if valid && g != groups.get_untracked() {
            settings.update(|s| s.groups = Some(g));
            engine.follow_settings();
        }
    }
}

/// The G slider: an `input[type=range]` whose value is G, with a labelled stop (MQA, GQA-G,
/// MHA) at each G from 1 to H. Keyboard: arrow keys step between them.
#[component]
pub fn GroupSlider() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let choose = groups_chooser();
    let heads = move || model.cfg_or(1, |c| c.n_heads);
    let valid = move || model.cfg_or(Vec::new(), |c| c.valid_groups());
    let grouping = move |g: usize| model.cfg_or(None, |c| Grouping::of(c, g).ok());
    let label = move |g: usize| grouping(g).map(|gr| gr.label()).unwrap_or_default();
    let per_kv = move |g: usize| {
        let Some(gr) = grouping(g) else {
            return String::new();
        };
        match gr.is_even() {
            true => format!("{} query heads per KV head", gr.max_rep()),
            false => format!("up to {} query heads per KV head", gr.max_rep()),
        }
    };
    let on_change = move |e: ev::Event| {
        let v = event_target_value(&e).parse().unwrap_or(0);
        let g = snap(&valid(), groups.get_untracked(), v);
        choose(g);
        let input: web_sys::HtmlInputElement = event_target(&e);
        input.set_value(&groups.get_untracked().to_string());
    };
    let pos = move |g: usize| {
        let p = if heads() > 1 {
            (g - 1) as f64 * 100.0 / (heads() - 1) as f64
        } else {
            0.0
        };
        format!("calc({p:.2}% + {:.2}px)", 9.0 - p * 0.18)
    };
    view! {
        <div class="slider">
            <label for="groups" class="field-label">
                {move || match model.is_loaded() {
                    true => view! {
                        "KV groups "<b>"G = "{groups.get()}</b>
                        " · "{label(groups.get())}
                        " · "{per_kv(groups.get())}
                    }.into_any(),
                    false => view! { "KV groups G (available once a model is loaded)" }.into_any(),
                }}
            </label>
            <input
                type="range"
                id="groups"
                data-testid="groups-slider"
                min="1"
                max=move || heads().to_string()
                step="1"
                // Set again when `max` changes: a value above the old max was clamped to it
                // (G is set before a new model's head count reaches the slider).
                prop:value=move || {
                    heads();
                    groups.get().to_string()
                }
                prop:disabled=move || !model.is_loaded()
                aria-valuetext=move || format!("G = {} ({})", groups.get(), label(groups.get()))
                on:change=on_change
            />
            <div class="ticks">
                {move || valid().into_iter().map(|g| view! {
                    <button
                        class="tick"
                        class:active=move || groups.get() == g
                        style:left=pos(g)
                        tabindex="-1"
                        on:click=move |_| choose(g)
                    >
                        <span class="tick-g">{g}</span>
                        <span class="tick-label">{label(g)}</span>
                    </button>
                }).collect_view()}
            </div>
        </div>
    }
}

/// How a G below the model's own is made: the calibrated merge (the default) or the GQA
/// paper's mean-pooling. A select, mirrored in the URL as `regroup=`; for a model with a single
/// KV head (multi-query attention) there is no G below its own, and the view says so instead.
#[component]
pub fn MethodSwitch() -> impl IntoView {
    let settings = expect_context::<RwSignal<Settings>>();
    let model = expect_context::<LoadedModel>();
    let engine = expect_context::<EngineHandle>();
    let on_change = move |e: ev::Event| {
        let Some(method) = Method::parse(&event_target_value(&e)) else {
            return;
        };
        if method != settings.with_untracked(|s| s.regroup) {
            settings.update(|s| s.regroup = method);
            engine.follow_settings();
        }
    };
    let native = move || model.cfg_or(0, |c| c.n_kv_heads);
    let heads = move || model.cfg_or(0, |c| c.n_heads);
    let single = move || native() == 1;
    view! {
        <Show
            when=single
            fallback=move || view! {
                <div class="method">
                    <label for="regroup" class="field-label">"Below G = "{native}": "</label>
                    <select
                        id="regroup"
                        data-testid="regroup-method"
                        prop:value=move || settings.with(|s| s.regroup.name())
                        on:change=on_change
                    >
                        <option value="calibrated">"calibrated merge (fitted, no training)"</option>
                        <option value="mean">"mean-pool (GQA paper, before uptraining)"</option>
                    </select>
                </div>
            }
        >
            <p class="method muted small" data-testid="regroup-none">
                "This model was trained with one KV head for its "{heads}" query heads (multi-query attention). "
                "Every G above 1 splits that head into copies: the same model exactly, with more cache. "
                "There is no G below it, so no KV heads to merge and no choice between mean-pooling and the calibrated merge."
            </p>
        </Show>
    }
}

/// The KV cache's element type, the second knob of its memory beside G: f32, f16 (the
/// default) or q8_0, each with its bytes. A select, mirrored in the URL as `kv=`; changed
/// mid-generation, the cache is rebuilt in the new type and the text so far prefilled again,
/// as a change of G does.
#[component]
pub fn KvTypeSwitch() -> impl IntoView {
    let settings = expect_context::<RwSignal<Settings>>();
    let model = expect_context::<LoadedModel>();
    let cache = expect_context::<CacheType>();
    let engine = expect_context::<EngineHandle>();
    let on_change = move |e: ev::Event| {
        let Some(t) = KvType::parse(&event_target_value(&e)) else {
            return;
        };
        if t != settings.with_untracked(|s| s.kv_type) {
            settings.update(|s| s.kv_type = t);
            engine.follow_settings();
        }
    };
    // q8_0 needs heads of whole 32-value blocks (every built-in model has them).
    let holds = move |t: KvType| model.cfg_or(true, |c| t.holds(c.head_dim));
    let options = KvType::ALL.map(|t| {
        let text = format!("{} · {}", t.name(), format::value_bytes(t.element()));
        view! {
            <option value=t.name() selected=move || cache.get() == t prop:disabled=move || !holds(t)>{text}</option>
        }
    });
    view! {
        <div class="method kv-type">
            <label for="kv-type" class="field-label">"KV cache type: "</label>
            <select
                id="kv-type"
                data-testid="kv-type"
                prop:value=move || cache.get().name()
                on:change=on_change
            >
                {options}
            </select>
            <p class="muted small">
                "The cache's second knob beside G: how each K and V value is kept. f16 rounds it to a half-precision float, "
                "as llama.cpp keeps its cache by default; q8_0 keeps 32 values as 8-bit integers and one f16 scale (GGML's Q8_0). "
                "Changed while it generates, the cache is rebuilt in the new type and the text so far is read again, as a change of G does."
            </p>
        </div>
    }
}
