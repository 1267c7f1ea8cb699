//! The command line: clap definitions and dispatch, one file per command group. Each command
//! parses its flags, calls the library, and prints or writes what it returns (terminal tables
//! from `view::tables`, figures from `view::figures`, files through `io::fsio`). No domain rule
//! lives here: what a command computes is decided by the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use feedlens::io::{checkpoint, fsio};
use feedlens::view::plot::{self, AnyFigure};
use std::path::{Path, PathBuf};

mod causal;
mod dictionary;
mod lab;
mod model;
mod patch;
mod probe;
mod readout;
mod report;

#[derive(Parser)]
#[command(
    name = "feedlens",
    version,
    about = "Trace what feedback training does inside a transformer"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process; boxing the large argument structs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Show a checkpoint's config, parameter count, tensors and manifest.
    Inspect(model::InspectArgs),
    /// Run a forward pass; write logits and chosen hook values as JSON.
    Run(model::RunArgs),
    /// Weight diff: relative Frobenius norm ‖B−A‖/‖A‖ per layer and component (a component's
    /// weight and bias together).
    Diff(readout::DiffArgs),
    /// Logit lens: final LayerNorm + unembedding applied to the residual after every layer.
    Lens(readout::LensArgs),
    /// Build the paired zoo (15 checkpoints per seed; docs/DESIGN.md §4). Each
    /// checkpoint is written atomically when its training ends: an interrupted run (Ctrl-C,
    /// kill) leaves every existing checkpoint whole.
    Zoo(lab::ZooArgs),
    /// Train one recipe: pretrain, rlhf, dt, sft, distill. The checkpoint is written atomically
    /// at the end: an interrupted run (Ctrl-C, kill) leaves an existing one whole.
    Train(lab::TrainArgs),
    /// Behaviour table of checkpoints in the toy world (split by [x] and <trig>).
    Eval(lab::EvalArgs),
    /// Activation patching sweep (resid_pre / attn_out / mlp_out × layer × position, per head).
    Patch(patch::PatchArgs),
    /// Cross-checkpoint patching: run B with A's activation at each layer.
    PatchModels(patch::PatchModelsArgs),
    /// Ablate components (heads, attention or MLP outputs, the residual) while the model
    /// samples over a contrast's prompts: mean ablation, resample ablation from the other side
    /// (necessity) and the clean values in corrupted runs (sufficiency), paired changes of the
    /// behaviour with 95 % intervals.
    Ablate(causal::AblateArgs),
    /// Steer along a contrast's difference-of-means direction at each layer while the model
    /// samples: the dose–response over α on corrupted prompts, and the direction projected out
    /// of clean prompts.
    Steer(causal::SteerArgs),
    /// Run a probe spec (`feedlens probe probes/NAME.toml`), or fit one logistic probe on your
    /// own activations (`feedlens probe fit --data FILE.safetensors --train-rows 0..K`).
    Probe(probe::ProbeArgs),
    /// Run every analysis of the standard pairs (behaviour, weight diff, patching both ways,
    /// cross-checkpoint patching, probes, logit lens) and write a self-contained HTML report
    /// with its figures and data.json (default: every pair of checkpoints/pairs.toml into
    /// reports/zoo).
    Report(report::ReportArgs),
    /// Sparse autoencoders: `feedlens sae train CHECKPOINT --out DIR` (SAELens layout).
    Sae(dictionary::SaeArgs),
    /// Crosscoders for model diffing: `feedlens crosscoder train A B --out DIR`.
    Crosscoder(dictionary::CrosscoderArgs),
    /// Look at a dictionary's latents: top contexts, histograms, promoted tokens (HTML).
    Latents(dictionary::LatentsArgs),
    /// Re-run every probe spec in a folder and compare with the stored results; non-zero exit on
    /// any drift or stale checkpoint hash.
    Check(probe::CheckArgs),
    /// List the work units of `zoo` or `report` (same arguments), for job arrays: one line per
    /// unit, `K<TAB>stage<TAB>name<TAB>needs` (only those --stage, --unit or --shard select);
    /// run one with `--unit K`, a share with `--shard I/N`, then `report --merge`.
    Plan(PlanArgs),
}

/// `feedlens plan zoo|report ...`.
#[derive(clap::Args)]
struct PlanArgs {
    /// Print only the number of units (of --stage S when given).
    #[arg(long, global = true)]
    count: bool,
    #[command(subcommand)]
    of: PlanOf,
}

// Parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum PlanOf {
    /// The zoo's units: one checkpoint of one seed each.
    Zoo(lab::ZooArgs),
    /// The report's units: one checkpoint's analyses, one difference lens, one pair or floor
    /// run of one seed each.
    Report(report::ReportArgs),
}

/// `--unit K`, `--shard I/N`, `--stage S`: the share of a command's work units this process
/// runs (`feedlens plan` lists them).
#[derive(clap::Args, Clone, Default)]
struct UnitArgs {
    /// Run only unit K (0-based, as `feedlens plan` lists them; counted within --stage S when
    /// given). Finished units are skipped; a unit whose inputs are not finished fails naming
    /// them.
    #[arg(long, value_name = "K", conflicts_with = "shard")]
    unit: Option<usize>,
    /// Run only shard I of N (0-based): the units K with K mod N = I.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Only the units of stage S (a unit needs only units of earlier stages).
    #[arg(long, value_name = "S")]
    stage: Option<usize>,
}

impl UnitArgs {
    /// The share to run.
    fn pick(&self) -> Result<feedlens::units::Pick> {
        use feedlens::units::{parse_shard, Pick, Which};
        let which = match (&self.unit, &self.shard) {
            (Some(k), _) => Which::Unit(*k),
            (None, Some(s)) => parse_shard(s)?,
            (None, None) => Which::All,
        };
        Ok(Pick {
            stage: self.stage,
            which,
        })
    }
}

/// Print a plan's units that `a` selects (or their number).
fn print_plan(units: &[feedlens::units::Unit], a: &UnitArgs, count: bool) -> Result<()> {
    let pick = a.pick()?;
    if count {
        println!(
            "{}",
            feedlens::units::select(units, &pick, "feedlens plan")?.len()
        );
    } else {
        print!(
            "{}",
            feedlens::units::listing(units, &pick, "feedlens plan")?
        );
    }
    Ok(())
}

/// `--json FILE` and `--force`, shared by the commands that can also write their result.
#[derive(clap::Args)]
struct JsonOut {
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
}

/// `--png STEM`, shared by the commands that draw their result.
#[derive(clap::Args)]
struct PlotOut {
    /// Draw the result to STEM.png and STEM.svg.
    #[arg(long, value_name = "STEM")]
    png: Option<PathBuf>,
}

impl JsonOut {
    /// The outputs of a command that may write `--json`, to be checked before any work.
    fn plan(&self) -> Outputs {
        Outputs::new(self.force).json_at(&self.json)
    }
    /// [`JsonOut::plan`] with the two files of `--png`.
    fn plan_plot(&self, plot: &PlotOut) -> Outputs {
        self.plan().plot_at(plot.png.as_ref())
    }
}

/// Everything a command writes. Planned first — every path checked before any work
/// (`fsio::check_outputs`: no clobber without `--force`, no output over an input, no two
/// outputs at one path, the folder writable) — then gathered in memory and written together
/// at the end (`fsio::write_files`), so a figure that cannot be drawn or a full disk leaves no
/// partial output and every old file whole.
struct Outputs {
    force: bool,
    planned: Vec<PathBuf>,
    inputs: Vec<PathBuf>,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Outputs {
    fn new(force: bool) -> Self {
        Outputs {
            force,
            planned: Vec::new(),
            inputs: Vec::new(),
            files: Vec::new(),
        }
    }
    /// An input the outputs must not be, or contain.
    fn input(mut self, p: &Path) -> Self {
        self.inputs.push(p.to_path_buf());
        self
    }
    fn inputs<'a>(mut self, ps: impl IntoIterator<Item = &'a PathBuf>) -> Self {
        self.inputs.extend(ps.into_iter().cloned());
        self
    }
    /// A file that will be written.
    fn file_at(mut self, p: PathBuf) -> Self {
        self.planned.push(p);
        self
    }
    fn json_at(self, j: &Option<PathBuf>) -> Self {
        match j {
            Some(j) => self.file_at(j.clone()),
            None => self,
        }
    }
    /// The two files of a plot stem.
    fn plot_at(self, stem: Option<&PathBuf>) -> Self {
        match stem {
            Some(s) => {
                let (p, v) = plot::paths(s);
                self.file_at(p).file_at(v)
            }
            None => self,
        }
    }
    /// Check every planned output against the inputs, before any work.
    fn check(self) -> Result<Self> {
        fsio::check_outputs(&self.planned, &self.inputs, self.force)?;
        Ok(self)
    }
    fn file(&mut self, p: &Path, bytes: Vec<u8>) {
        self.files.push((p.to_path_buf(), bytes));
    }
    /// `v` as pretty JSON to `path`, if given.
    fn json(&mut self, path: &Option<PathBuf>, v: &serde_json::Value) -> Result<()> {
        if let Some(p) = path {
            self.file(p, checkpoint::pretty(v)?);
        }
        Ok(())
    }
    /// `fig` drawn to `{stem}.png` and `{stem}.svg`.
    fn plot(&mut self, fig: &AnyFigure, stem: &Path) -> Result<()> {
        let r = fig.render()?;
        let (p, s) = plot::paths(stem);
        self.file(&p, r.png);
        self.file(&s, r.svg.into_bytes());
        Ok(())
    }
    /// Write everything gathered, as one result.
    fn finish(self) -> Result<()> {
        let refs: Vec<(&Path, &[u8])> = self
            .files
            .iter()
            .map(|(p, b)| (p.as_path(), b.as_slice()))
            .collect();
        fsio::write_files(&refs, self.force)?;
        for (p, _) in &self.files {
            eprintln!("wrote {}", p.display());
        }
        Ok(())
    }
}

/// Called before any thread starts: `zoo` and `report` run several jobs at once, one core each,
/// so unless `RAYON_NUM_THREADS` is set they set it to 1 (candle reads it for its gemm; at this
/// model size a 2-thread gemm gains little and parallel jobs ~2×; results are identical).
pub fn set_thread_env(cli: &Cli) {
    let jobs = match &cli.cmd {
        Cmd::Zoo(a) => a.jobs(),
        Cmd::Report(a) => a.jobs(),
        Cmd::Crosscoder(a) => a.jobs(),
        _ => 1,
    };
    if jobs > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect(a) => model::inspect(a),
        Cmd::Run(a) => model::run(a),
        Cmd::Diff(a) => readout::diff(a),
        Cmd::Lens(a) => readout::lens(a),
        Cmd::Zoo(a) => lab::zoo(a),
        Cmd::Train(a) => lab::train(a),
        Cmd::Eval(a) => lab::eval(a),
        Cmd::Patch(a) => patch::patch(a),
        Cmd::PatchModels(a) => patch::patch_models(a),
        Cmd::Ablate(a) => causal::ablate(a),
        Cmd::Steer(a) => causal::steer(a),
        Cmd::Probe(a) => probe::probe(a),
        Cmd::Check(a) => probe::check(a),
        Cmd::Report(a) => report::report(a),
        Cmd::Sae(a) => dictionary::sae(a),
        Cmd::Crosscoder(a) => dictionary::crosscoder(a),
        Cmd::Latents(a) => dictionary::latents(a),
        Cmd::Plan(a) => match a.of {
            PlanOf::Zoo(z) => lab::plan(z, a.count),
            PlanOf::Report(r) => report::plan(r, a.count),
        },
    }
}

/// Load a checkpoint and print its warnings to stderr.
fn load(dir: &Path) -> Result<checkpoint::Checkpoint> {
    let ck = checkpoint::load(dir)?;
    for w in &ck.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ck)
}

/// An indicatif bar for `total` steps of `name`.
fn bar(total: u64, name: &str) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>26} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    indicatif::ProgressBar::new(total)
        .with_style(style)
        .with_prefix(name.to_string())
}

/// Token rows from `--ids` (comma-separated ids, `ids_arg`) or `--text` (tokenized with the
/// checkpoint's tokenizer, `text_arg`), checked against the model; the error names the
/// argument.
fn prompts(
    ck: &checkpoint::Checkpoint,
    ids: &[String],
    text: &[String],
    (ids_arg, text_arg): (&str, &str),
) -> Result<Vec<Vec<u32>>> {
    let (rows, arg): (Vec<Vec<u32>>, &str) = if text.is_empty() {
        let rows = ids
            .iter()
            .map(|s| feedlens::io::tokens::parse_ids(s, ids_arg))
            .collect::<feedlens::Result<_>>()?;
        (rows, ids_arg)
    } else {
        let rows = text
            .iter()
            .map(|t| ck.encode(t, text_arg))
            .collect::<feedlens::Result<_>>()?;
        (rows, text_arg)
    };
    ck.model
        .check_ids(&rows)
        .map_err(|e| anyhow::anyhow!("{arg}: {e}"))?;
    Ok(rows)
}
