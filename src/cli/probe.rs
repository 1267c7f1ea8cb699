//! `probe`, `probe fit` and `check`: running a probe spec into its stored result (and its
//! figure), fitting one probe on a user's activations, and re-checking every stored result.
//! Must not hold a domain rule.

use super::{JsonOut, Outputs};
use anyhow::Result;
use feedlens::analysis::probes;
use feedlens::view::figures::{self, ProbeLines, TransferLine};
use feedlens::view::plot::AnyFigure;
use feedlens::view::tables;
use std::path::Path;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct ProbeArgs {
    #[command(subcommand)]
    sub: Option<ProbeCmd>,
    /// Probe spec (probes/NAME.toml).
    #[arg(required = true)]
    spec: Option<PathBuf>,
    /// Also write the result JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write each checkpoint's activation set (X.{layer}, y, ids) as
    /// DIR/<checkpoint>.safetensors, for numpy users.
    #[arg(long, value_name = "DIR")]
    acts: Option<PathBuf>,
    /// Write probe curves (accuracy and AUROC per layer, per checkpoint; control task and
    /// best random direction dashed) to STEM.png and STEM.svg.
    #[arg(long, value_name = "STEM")]
    png: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Subcommand)]
enum ProbeCmd {
    /// Fit one L2 logistic probe on X [n, d] f32 and y [n] i64 from a safetensors file; rows
    /// outside --train-rows are the test set.
    Fit {
        /// safetensors file with `X` [n, d] f32 and `y` [n] i64.
        #[arg(long)]
        data: PathBuf,
        /// Training rows, `A..B` (end exclusive); the other rows are the test set.
        #[arg(long)]
        train_rows: String,
        /// Inverse L2 regularisation strength (scikit-learn's C).
        #[arg(long, default_value_t = 1.0)]
        c: f64,
        /// Write coef, intercept, test_proba, test_accuracy, test_auroc here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
pub(super) struct CheckArgs {
    /// Folder of probe specs.
    #[arg(default_value = "probes")]
    dir: PathBuf,
    #[command(flatten)]
    out: JsonOut,
}

pub(super) fn probe(a: ProbeArgs) -> Result<()> {
    match (a.sub, a.spec) {
        (
            Some(ProbeCmd::Fit {
                data,
                train_rows,
                c,
                json,
                force,
            }),
            _,
        ) => probe_fit(data, train_rows, c, json, force),
        (None, Some(spec)) => probe_spec(spec, a.json, a.acts, a.png, a.force),
        (None, None) => anyhow::bail!("probe: give a spec file or `fit`"),
    }
}

fn probe_fit(data: PathBuf, rows: String, c: f64, out: Option<PathBuf>, force: bool) -> Result<()> {
    let mut files = Outputs::new(force).json_at(&out).input(&data).check()?;
    let rep = probes::fit_file(&data, &rows, c)?;
    println!(
        "test accuracy {:.4}  test AUROC {:.4}  ({} test rows, {} Newton steps, |grad| {:.1e})",
        rep.test_accuracy,
        rep.test_auroc,
        rep.test_proba.len(),
        rep.iterations,
        rep.grad_norm
    );
    files.json(&out, &serde_json::to_value(&rep)?)?;
    files.finish()
}

fn probe_spec(
    spec: PathBuf,
    out: Option<PathBuf>,
    acts: Option<PathBuf>,
    png: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    // Every output is known from the spec before any work: the result pair, `--json`, the
    // plot, and one activation file per checkpoint (named by its folder).
    let parsed = probes::Spec::load(&spec)?;
    let base = spec.parent().unwrap_or(Path::new("."));
    let ck_dirs: Vec<PathBuf> = parsed.checkpoints.iter().map(|c| base.join(c)).collect();
    let act_path = |dir: &Path, name: &str| dir.join(format!("{name}.safetensors"));
    let (json_path, st_path) = probes::result_paths(&spec);
    let mut files = Outputs::new(force)
        .file_at(st_path)
        .file_at(json_path)
        .json_at(&out)
        .plot_at(png.as_ref());
    if let Some(dir) = &acts {
        for c in &ck_dirs {
            let name = c.file_name().map(|n| n.to_string_lossy().into_owned());
            files = files.file_at(act_path(dir, &name.unwrap_or_default()));
        }
    }
    let mut files = files.input(&spec).inputs(&ck_dirs).check()?;
    let run = probes::run_spec(&spec)?;
    let r = &run.result;
    print!("{}", tables::probe_spec(r));
    let [(st, weights), (json, result)] = probes::run_files(&spec, &run)?;
    files.file(&st, weights);
    files.json(&out, &serde_json::to_value(r)?)?;
    if let Some(dir) = &acts {
        for (name, set) in &run.sets {
            files.file(&act_path(dir, name), set.safetensors_bytes()?);
        }
    }
    if let Some(stem) = png {
        let lines: Vec<ProbeLines> = r
            .checkpoints
            .iter()
            .map(|c| ProbeLines::of(&c.name, &c.layers))
            .collect();
        let transfers: Vec<TransferLine> = r.transfer.iter().map(TransferLine::of).collect();
        let title = format!(
            "probe {} ({} at position {})",
            r.name, r.spec.label, r.spec.position
        );
        match figures::probe_curves(&title, &lines, &transfers) {
            Some(fig) => files.plot(&AnyFigure::Probe(fig), &stem)?,
            None => eprintln!("no figure: no probe was fitted or a score is not finite"),
        }
    }
    // The result JSON last: it marks the run complete.
    files.file(&json, result);
    files.finish()
}

pub(super) fn check(a: CheckArgs) -> Result<()> {
    // Nothing `check` reads (specs, stored results and weights) may be its `--json`.
    let mut read = Vec::new();
    for s in probes::specs_in(&a.dir)? {
        let (j, w) = probes::result_paths(&s);
        read.extend([s, j, w]);
    }
    let mut files = a.out.plan().inputs(&read).check()?;
    let outcomes = probes::check_dir(&a.dir)?;
    print!("{}", tables::check(&outcomes));
    files.json(&a.out.json, &serde_json::to_value(&outcomes)?)?;
    files.finish()?;
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    if failed > 0 {
        // The first failure's first problem goes on the error line itself, so the one line
        // names the file at fault and what is wrong with it.
        let first = outcomes.iter().find(|o| !o.pass);
        let why = first
            .and_then(|o| {
                o.problems
                    .first()
                    .map(|p| format!(" (first: {}: {p})", o.spec.display()))
            })
            .unwrap_or_default();
        anyhow::bail!(
            "{dir}: {failed} of {} probe specs drifted or failed{why}",
            outcomes.len(),
            dir = a.dir.display()
        );
    }
    println!("{} probe specs pass", outcomes.len());
    Ok(())
}
