//! The engine's one owner: a task that holds the loaded [`Session`] and runs the page's
//! [`Command`]s one after another, in the order they were sent, so that no two things ever
//! drive the engine at once. The views send commands through an [`EngineHandle`] (a context)
//! and see what comes of them in the page's state (`state/`), which the owner writes.
//!
//! Nothing reaches into a running command but two things it reads between its steps: the
//! stop flag ([`RunState::ask_stop`]: a generation, a comparison, a quality measurement), and the settings' G, method and KV cache type, which a generation
//! follows as it goes (the slider or the cache type changed mid-run rebuilds the cache there;
//! the [`Command::FollowSettings`] sent with it finds the engine there already).
//!
//! The tasks, one file each: loading a model ([`load`]), generating ([`generate`]),
//! regrouping and calibrating ([`regroup`]), a KV budget's G per layer ([`budget`]), measuring quality ([`quality`]) and generating
//! side by side ([`compare`]); [`session`] is what a loaded model is.

mod budget;
mod compare;
mod generate;
mod load;
mod quality;
mod regroup;
mod session;

use crate::engine::EngineError;
use crate::models::BuiltinModel;
use crate::ui::state::run::{Activity, RunState, Status};
use crate::ui::state::Page;
pub use budget::{
    HARDWARE_TOKENS as BUDGET_HARDWARE_TOKENS, SOFTWARE_TOKENS as BUDGET_SOFTWARE_TOKENS,
};
pub use compare::Plan;
use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::StreamExt;
use leptos::prelude::*;
use load::Source;
use session::Session;

/// What the page asks of the engine.
enum Command {
    /// Load the settings' built-in model, then generate if the settings say `autorun`.
    Boot,
    /// Load a model the person chose: a built-in one, or a file.
    Open(Source),
    /// Load the current model again on a fresh engine (a lost device, another backend).
    Reload,
    /// Generate from the settings' prompt.
    Generate,
    /// Bring the engine to the settings' G, method and KV cache type (a calibrated merge not
    /// fitted yet is fitted first).
    FollowSettings,
    /// Generate the prompt greedily for each column of `plan` (G and cache type), side by
    /// side.
    Compare {
        plan: compare::Plan,
        tokens: usize,
    },
    /// Score the built-in passage at every G with each method, with the cache type in use or
    /// (`every_type`) with each of them.
    MeasureQuality {
        every_type: bool,
    },
    /// The attention view opened, or its layer changed: show the weights of the last token a
    /// finished run fed.
    ShowAttention,
    /// Developer tools: destroy the GPU device; make the engine's worker panic (`memory`: run
    /// out of memory).
    LoseDevice,
    CrashWorker {
        memory: bool,
    },
}

impl Command {
    /// What the engine is doing while it runs this command.
    fn activity(&self) -> Activity {
        match self {
            Command::Boot | Command::Open(_) | Command::Reload => Activity::Loading,
            Command::Generate => Activity::Generating,
            Command::MeasureQuality { .. } => Activity::Measuring,
            _ => Activity::Working,
        }
    }
}

/// How the views drive the engine: a `Copy` handle that sends [`Command`]s to its owner.
#[derive(Clone, Copy)]
pub struct EngineHandle {
    commands: StoredValue<UnboundedSender<Command>, LocalStorage>,
    run: RunState,
}

impl EngineHandle {
    /// Starts the engine's owner, writing to `page`. Once, in the app.
    pub fn spawn(page: Page) -> Self {
        let (tx, rx) = unbounded();
        let owner = Owner {
            page,
            session: None,
            source: None,
        };
        wasm_bindgen_futures::spawn_local(owner.serve(rx));
        EngineHandle {
            commands: StoredValue::new_local(tx),
            run: page.run,
        }
    }

    fn send(&self, command: Command) {
        // The owner only ends with the page.
        self.commands
            .with_value(|tx| tx.unbounded_send(command).ok());
    }

    /// Sends work the page offers only while the engine is idle (its buttons are disabled
    /// otherwise): asked for meanwhile, as by a key, it is dropped, as a click on a disabled
    /// button would be.
    fn send_when_idle(&self, command: Command) {
        if self.run.activity.get_untracked() == Activity::Idle {
            self.send(command);
        }
    }

    /// Loads the settings' built-in model (and generates, if the settings say `autorun`).
    pub fn boot(&self) {
        self.send(Command::Boot);
    }

    /// Loads a model file the person dropped or picked, after what the engine is doing (a
    /// running generation is stopped first).
    pub fn open_file(&self, file: web_sys::File) {
        self.stop_generation();
        self.send(Command::Open(Source::File(file)));
    }

    /// Loads a built-in model the person chose, after what the engine is doing (a running
    /// generation is stopped first).
    pub fn open_builtin(&self, model: &'static BuiltinModel) {
        self.stop_generation();
        self.send(Command::Open(Source::Builtin(model)));
    }

    /// Loads the model the model menu shows again on a fresh engine, as the settings ask for
    /// it now (a running generation is stopped first).
    pub fn reload(&self) {
        self.stop_generation();
        self.send(Command::Reload);
    }

    fn stop_generation(&self) {
        if self.run.activity.get_untracked() == Activity::Generating {
            self.run.ask_stop();
        }
    }

    /// Generates from the settings, when the engine is idle.
    pub fn generate(&self) {
        self.send_when_idle(Command::Generate);
    }

    /// Asks a running generation, comparison or quality measurement to stop after its current
    /// step (a token, a chunk of a prefill, a G scored).
    pub fn stop(&self) {
        self.run.ask_stop();
    }

    /// Brings the engine to the settings' G, method and KV cache type: between two steps of a
    /// running generation (which then prefills its text so far again and goes on), else when
    /// the engine is next free.
    pub fn follow_settings(&self) {
        self.send(Command::FollowSettings);
    }

    /// Generates the prompt greedily for each column of `plan` side by side, when the engine
    /// is idle.
    pub fn compare(&self, plan: Plan, tokens: usize) {
        self.send_when_idle(Command::Compare { plan, tokens });
    }

    /// Shows the attention view's weights for the last token a finished run fed (after what
    /// the engine is doing; a running generation shows them at its next token anyway).
    pub fn show_attention(&self) {
        if self.run.activity.get_untracked() != Activity::Generating {
            self.send(Command::ShowAttention);
        }
    }

    /// Measures "What each G buys" on the built-in passage, when the engine is idle.
    /// `every_type`: with each KV cache type, else with the one in use.
    pub fn measure_quality(&self, every_type: bool) {
        self.send_when_idle(Command::MeasureQuality { every_type });
    }

    /// Developer tool: destroys the GPU device, as a driver reset would.
    pub fn lose_device(&self) {
        self.send_when_idle(Command::LoseDevice);
    }

    /// Developer tool: makes the engine's worker panic (`memory`: run out of memory), as a bug
    /// or a too-large model would.
    pub fn crash_worker(&self, memory: bool) {
        self.send_when_idle(Command::CrashWorker { memory });
    }
}

/// The task that owns the engine.
struct Owner {
    page: Page,
    session: Option<Session>,
    /// Where the loaded model came from, to load it again.
    source: Option<Source>,
}

impl Owner {
    /// Runs the commands in order, for as long as the page lives.
    async fn serve(mut self, mut commands: UnboundedReceiver<Command>) {
        while let Some(command) = commands.next().await {
            self.page.run.activity.set(command.activity());
            self.execute(command).await;
            self.page.run.activity.set(Activity::Idle);
        }
    }

    async fn execute(&mut self, command: Command) {
        // Only a generation leaves a sequence the attention view may read again.
        if !matches!(command, Command::Generate | Command::ShowAttention) {
            if let Some(s) = self.session.as_mut() {
                s.fed.clear();
            }
        }
        match command {
            Command::Boot => {
                let (model, autorun) = self.page.settings.with_untracked(|s| (s.model, s.autorun));
                if self.load(Source::Builtin(model)).await && autorun {
                    self.page.run.activity.set(Activity::Generating);
                    self.generate().await;
                }
            }
            Command::Open(source) => {
                self.load(source).await;
            }
            Command::Reload => {
                // The engine is dropped first: its device or worker may be lost.
                self.session = None;
                let source = self.menu_source();
                self.load(source).await;
            }
            Command::Generate => self.generate().await,
            Command::FollowSettings => self.follow_settings().await,
            Command::Compare { plan, tokens } => self.compare(plan, tokens).await,
            Command::MeasureQuality { every_type } => {
                let page = self.page;
                let measure = async |s: &mut Session| {
                    let result = quality::measure(page, s, every_type).await;
                    result.map(|m| Some(m.describe()))
                };
                self.with_session(measure).await;
            }
            Command::ShowAttention => {
                let page = self.page;
                let show = async |s: &mut Session| {
                    generate::attention_after_run(page, s).await.map(|()| None)
                };
                self.with_session(show).await;
            }
            Command::LoseDevice => {
                let lose = async |s: &mut Session| s.engine.lose_device().await.map(|()| None);
                self.with_session(lose).await;
            }
            Command::CrashWorker { memory } => {
                let crash =
                    async |s: &mut Session| s.engine.crash_worker(memory).await.map(|()| None);
                self.with_session(crash).await;
            }
        }
    }

    /// The model the model menu shows: the file loaded, while the menu is on it, else the
    /// settings' built-in model (a built-in one that failed to load is still there, to be
    /// loaded again on another engine).
    fn menu_source(&self) -> Source {
        let on_file = self.page.model.file.with_untracked(Option::is_some);
        match &self.source {
            Some(Source::File(f)) if on_file => Source::File(f.clone()),
            _ => Source::Builtin(self.page.settings.with_untracked(|s| s.model)),
        }
    }

    async fn load(&mut self, source: Source) -> bool {
        load::load(self.page, source, &mut self.session, &mut self.source).await
    }

    async fn generate(&mut self) {
        let page = self.page;
        let Some(s) = self.session.as_mut() else {
            page.run
                .status
                .set(Status::Error("no model is loaded".into()));
            return;
        };
        match page.settings.with_untracked(|st| generate::Job::new(st, s)) {
            Ok(job) => {
                let outcome = generate::run(page, s, job).await;
                self.report(outcome.map(|o| Some(o.describe().into())));
            }
            Err(e) => page.run.status.set(Status::Error(e)),
        }
    }

    async fn follow_settings(&mut self) {
        let page = self.page;
        self.with_session(async |s: &mut Session| {
            let rebuilt = regroup::follow_settings(page, s).await?;
            if rebuilt {
                page.run.status.set(Status::Ready);
            }
            Ok(None)
        })
        .await;
    }

    async fn compare(&mut self, plan: Plan, tokens: usize) {
        let page = self.page;
        page.run.clear_stop();
        self.with_session(async |s: &mut Session| {
            let prompt = page.settings.with_untracked(|st| st.prompt_ids(&s.tok));
            let prompt = match prompt {
                Ok(p) => p,
                Err(e) => {
                    page.run.status.set(Status::Error(e));
                    return Ok(None);
                }
            };
            let result = compare::run(page, s, prompt, plan, tokens).await;
            result.map(|()| Some("compared".into()))
        })
        .await;
    }

    /// Runs `task` on the session, if a model is loaded, and reports how it went.
    async fn with_session(
        &mut self,
        task: impl AsyncFnOnce(&mut Session) -> Result<Option<String>, EngineError>,
    ) {
        if let Some(s) = self.session.as_mut() {
            let result = task(s).await;
            self.report(result);
        }
    }

    /// Puts how a command ended in the status line: done (and how, if it says), or the error;
    /// an error of the GPU or of the worker offers to load the engine again.
    fn report(&self, result: Result<Option<String>, EngineError>) {
        let (run, model) = (self.page.run, self.page.model);
        match result {
            Ok(Some(how)) => run.status.set(Status::Done(how)),
            Ok(None) => {}
            Err(e) => {
                model.failed.set(matches!(
                    e,
                    EngineError::Gpu(_) | EngineError::DeviceLost(_) | EngineError::WorkerLost(_)
                ));
                run.status.set(Status::Error(e.to_string()));
            }
        }
    }
}
