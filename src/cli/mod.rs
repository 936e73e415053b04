//! Command-line interface: argument parsing, model loading and output. Each subcommand lives
//! in its own module and drives the library's engines; results go to stdout (JSON with
//! `--json`), errors to stderr with a non-zero exit code.

mod bench;
mod budget;
mod commands;
mod memory;
mod regroup;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::Engine;
use gqa_lab::gguf::{check_header, Gguf, HEADER_BYTES};
use gqa_lab::model::KvType;
use gqa_lab::models::BuiltinModel;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gqa-lab",
    version,
    about = "Run a grouped-query-attention model and change its KV groups G"
)]
struct Cli {
    /// The model: a built-in model's name or a GGUF file's path.
    #[arg(
        long,
        global = true,
        value_name = "NAME|PATH",
        default_value = gqa_lab::models::DEFAULT.name,
        long_help = model_help()
    )]
    model: PathBuf,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hyper-parameters, tensor types and the valid G values of the model.
    Info,
    /// Token ids of a text (no BOS added).
    Tokenize {
        #[arg(long)]
        text: String,
        /// Parse special-token texts such as <|im_start|> into their ids.
        #[arg(long)]
        special: bool,
    },
    /// Generate text from a prompt.
    Generate(commands::GenerateArgs),
    /// Top logits at the last position of a prompt.
    Logits {
        /// Comma-separated token ids.
        #[arg(long, value_parser = parse_ids)]
        prompt_ids: Ids,
        #[command(flatten)]
        run: RunArgs,
        /// How many of the largest logits to print.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Perplexity of a text or token-id file.
    Perplexity {
        #[arg(
            long,
            conflicts_with = "ids_file",
            required_unless_present = "ids_file"
        )]
        text_file: Option<PathBuf>,
        /// A file of token ids (JSON array, or separated by commas/whitespace).
        #[arg(long)]
        ids_file: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Prefill and decode speed and KV-cache bytes per G and context.
    Bench(bench::BenchArgs),
    /// Fit (and cache) the calibrated merge for G below the model's own, printing each
    /// layer's fit error.
    Calibrate(regroup::CalibrateArgs),
}

/// Options shared by the commands that run the model.
#[derive(Args, Clone)]
pub struct RunArgs {
    /// KV groups G, 1 to the query-head count; default: the model's own.
    #[arg(long)]
    groups: Option<usize>,
    /// How a G below the model's own is made: fitted maps (cached after the first fit) or the
    /// GQA paper's mean-pooling.
    #[arg(long, value_enum, default_value_t = regroup::RegroupMethod::Calibrated)]
    regroup: regroup::RegroupMethod,
    /// Tokens of the built-in text a calibrated merge is fitted on.
    #[arg(long, default_value_t = gqa_lab::regroup::DEFAULT_TOKENS)]
    calibration_tokens: usize,
    #[command(flatten)]
    fit: regroup::FitArgs,
    #[command(flatten)]
    budget: budget::BudgetArgs,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// How the KV cache keeps K and V; default: f32 on the `cpu` oracle, f16 on `cpu-q8` and
    /// `gpu` (llama.cpp's default cache type).
    #[arg(long, value_enum)]
    kv_type: Option<KvTypeArg>,
}

impl RunArgs {
    /// The cache type asked for, or the backend's default.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
            .map_or_else(|| self.backend.default_kv_type(), KvType::from)
    }
}

/// `--kv-type`: the names of `model::KvType` (llama.cpp's `--cache-type-k` names).
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum KvTypeArg {
    /// 4 bytes a value.
    F32,
    /// IEEE half precision, 2 bytes a value.
    F16,
    /// GGML's Q8_0: 32 values as i8 and one f16 scale, 34 bytes a block.
    #[value(name = "q8_0")]
    Q8_0,
}

impl From<KvTypeArg> for KvType {
    fn from(t: KvTypeArg) -> KvType {
        match t {
            KvTypeArg::F32 => KvType::F32,
            KvTypeArg::F16 => KvType::F16,
            KvTypeArg::Q8_0 => KvType::Q8_0,
        }
    }
}

impl Backend {
    /// The cache type a run gets when none is asked: f32 for the oracle, f16 otherwise.
    pub fn default_kv_type(self) -> KvType {
        match self {
            Backend::Cpu => KvType::F32,
            Backend::CpuQ8 | Backend::Gpu => KvType::F16,
        }
    }
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The f32 oracle.
    Cpu,
    /// The same forward with the weights in their GGUF blocks and int8 activations: faster,
    /// approximate.
    #[value(name = "cpu-q8")]
    CpuQ8,
    /// WGSL kernels through wgpu (Vulkan natively).
    Gpu,
}

/// A parsed list of token ids.
#[derive(Clone, Debug)]
pub struct Ids(pub Vec<u32>);

fn parse_ids(s: &str) -> Result<Ids, String> {
    let ids = s
        .split(|c: char| c == ',' || c.is_whitespace() || c == '[' || c == ']')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| format!("{t:?} is not a token id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err("no token ids given".into());
    }
    Ok(Ids(ids))
}

/// `--model`'s long help: the built-in names from the library's table.
fn model_help() -> String {
    let names: Vec<String> = gqa_lab::models::BUILTIN
        .iter()
        .map(|m| {
            format!(
                "  {}: {} ({}), {}",
                m.name, m.display_name, m.licence, m.path
            )
        })
        .collect();
    format!(
        "The model: a built-in model's name or a GGUF file's path. The built-in models \
         (fetched by scripts/setup.sh model; their paths are relative to the repository root, \
         where gqa-lab is run from):\n{}",
        names.join("\n")
    )
}

/// The file `--model` names: a built-in model's path for its name, else the argument as a
/// path. A built-in path is relative like any other (to the working directory: the
/// repository root, where the set-up puts the models), as the default always was.
pub fn model_path(arg: &Path) -> (PathBuf, Option<&'static BuiltinModel>) {
    match arg.to_str().and_then(gqa_lab::models::by_name) {
        Some(m) => (PathBuf::from(m.path), Some(m)),
        None => (arg.to_path_buf(), None),
    }
}

/// The largest model file read (far past any model this tool can hold in memory as f32).
const MAX_MODEL_BYTES: u64 = 64 << 30;

/// Refuses a path that is not a regular file (a FIFO, a device, a directory), saying `what`
/// the file should be, before anything opens it.
pub fn regular_file(path: &Path, what: &str) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file: {what}", path.display());
    }
    Ok(meta)
}

/// Bytes a text or ids file given to a command may have.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// A text file of at most [`MAX_TEXT_BYTES`], refused before it is read if it is not a regular
/// file or is larger (`--text-file /dev/zero` would never end).
pub fn read_text(path: &Path) -> Result<String> {
    let shown = path.display();
    let meta = regular_file(path, "give a text file")?;
    if meta.len() > MAX_TEXT_BYTES {
        bail!(
            "{shown} has {} bytes, past the {MAX_TEXT_BYTES} a text file may have here",
            meta.len()
        );
    }
    let mut text = String::new();
    File::open(path)
        .with_context(|| format!("opening {shown}"))?
        .take(MAX_TEXT_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {shown}"))?;
    if text.len() as u64 > MAX_TEXT_BYTES {
        bail!("{shown} grew past {MAX_TEXT_BYTES} bytes while it was read");
    }
    Ok(text)
}

/// The model file's bytes, with a message that says how to get it when it is missing. What
/// is not a regular file of a plausible size, or does not start with a GGUF header, is
/// refused before the rest is read (`--model /dev/zero` would never end).
pub fn read_model(path: &Path, builtin: Option<&BuiltinModel>) -> Result<Vec<u8>> {
    if !path.exists() {
        let names = gqa_lab::models::names();
        if let Some(m) = builtin {
            bail!(
                "model file not found: {} (the built-in model {}, {})\n  fetch the built-in models with `scripts/setup.sh model` (or `make serve` / `make test`) and run gqa-lab from the repository root, or pass --model PATH",
                path.display(),
                m.name,
                m.display_name
            );
        }
        if looks_like_a_name(path) {
            bail!(
                "no built-in model named {:?} and no file of that name\n  --model takes one of the built-in models ({names}) or a GGUF file's path",
                path.display().to_string()
            );
        }
        bail!(
            "model file not found: {}\n  fetch the built-in models ({names}) with `scripts/setup.sh model` (or `make serve` / `make test`), or pass --model PATH",
            path.display()
        );
    }
    let shown = path.display();
    // Looked at before it is opened: opening a FIFO would wait for a writer forever.
    regular_file(path, "a model is a GGUF file")?;
    let file = File::open(path).with_context(|| format!("opening {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {shown}"))?;
    if !meta.is_file() {
        bail!("{shown} is not a regular file: a model is a GGUF file");
    }
    let len = meta.len();
    if len > MAX_MODEL_BYTES {
        bail!("{shown} has {len} bytes, past the {MAX_MODEL_BYTES} a model file may have here");
    }
    let mut bytes = Vec::new();
    let mut file = file.take(len);
    (&mut file)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {shown}"))?;
    check_header(&bytes, len).with_context(|| format!("reading {shown}"))?;
    let rest = usize::try_from(len)?.saturating_sub(bytes.len());
    bytes
        .try_reserve_exact(rest)
        .with_context(|| format!("{shown}: no memory for its {len} bytes"))?;
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {shown}"))?;
    if bytes.len() as u64 != len {
        bail!("{shown} changed size while it was read");
    }
    Ok(bytes)
}

/// A bare word such as `gemma` (no directory, no extension) was meant as a model's name.
fn looks_like_a_name(path: &Path) -> bool {
    path.components().count() == 1 && path.extension().is_none()
}

/// `n` and the noun, plural unless `n` is 1: `1 token`, `30 layers` (the page's is
/// `ui::format::count`, which the native binary does not build).
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A loaded engine for `run`, with a KV cache of `capacity` positions.
pub fn load_engine(gguf: &Gguf<'_>, run: &RunArgs, capacity: usize) -> Result<Box<dyn Engine>> {
    let mut engine: Box<dyn Engine> = match run.backend {
        Backend::Cpu => Box::new(CpuEngine::load(gguf, capacity)?),
        Backend::CpuQ8 => Box::new(CpuEngine::load_quantized(gguf, capacity)?),
        Backend::Gpu => Box::new(pollster::block_on(gqa_lab::gpu::GpuEngine::load(
            gguf, capacity,
        ))?),
    };
    engine.set_kv_type(run.kv_type())?;
    if let Some(r) = budget::regrouping(gguf, run)? {
        engine.regroup_with(r)?;
    } else if let Some(g) = run.groups {
        let how = regroup::Calibration {
            tokens: run.calibration_tokens,
            settings: run.fit.settings(),
        };
        let r = regroup::regrouping_for(gguf, engine.config(), g, run.regroup, how)?;
        engine.regroup_with(r)?;
    }
    Ok(engine)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let (path, builtin) = model_path(&cli.model);
    let bytes = read_model(&path, builtin)?;
    let gguf = Gguf::parse(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let json = cli.json;
    match cli.command {
        Command::Info => commands::info(&gguf, &path, builtin, bytes.len(), json),
        Command::Tokenize { text, special } => commands::tokenize(&gguf, &text, special, json),
        Command::Generate(args) => commands::generate(&gguf, &args, json),
        Command::Logits {
            prompt_ids,
            run,
            top,
        } => commands::logits(&gguf, &prompt_ids.0, &run, top, json),
        Command::Perplexity {
            text_file,
            ids_file,
            run,
        } => commands::perplexity(&gguf, text_file, ids_file, &run, json),
        Command::Bench(args) => bench::bench(&gguf, &args, json),
        Command::Calibrate(args) => regroup::calibrate(&gguf, &args, json),
    }
}

/// Prints `value` as JSON on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
