//! `probe`, `probe fit` and `check`: running a probe spec into its stored result (and its
//! figure), fitting one probe on a user's activations, and re-checking every stored result.
//! Must not hold a domain rule.

use super::{check_plots, write_json, write_plot, JsonOut};
use anyhow::Result;
use feedlens::analysis::probes;
use feedlens::io::fsio;
use feedlens::view::figures::{self, ProbeLines, TransferLine};
use feedlens::view::plot::AnyFigure;
use feedlens::view::tables;
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
    if let Some(o) = &out {
        fsio::check_clobber(o, force)?;
    }
    let rep = probes::fit_file(&data, &rows, c)?;
    println!(
        "test accuracy {:.4}  test AUROC {:.4}  ({} test rows, {} Newton steps, |grad| {:.1e})",
        rep.test_accuracy,
        rep.test_auroc,
        rep.test_proba.len(),
        rep.iterations,
        rep.grad_norm
    );
    if let Some(o) = out {
        write_json(&o, &serde_json::to_value(&rep)?, force)?;
    }
    Ok(())
}

fn probe_spec(
    spec: PathBuf,
    out: Option<PathBuf>,
    acts: Option<PathBuf>,
    png: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    check_plots(&png, force)?;
    let (json_path, st_path) = probes::result_paths(&spec);
    for p in [Some(&json_path), Some(&st_path), out.as_ref()]
        .into_iter()
        .flatten()
    {
        fsio::check_clobber(p, force)?;
    }
    let run = probes::run_spec(&spec)?;
    let r = &run.result;
    print!("{}", tables::probe_spec(r));
    let (j, s) = probes::write_run(&spec, &run, force)?;
    eprintln!("wrote {} and {}", j.display(), s.display());
    if let Some(o) = out {
        write_json(&o, &serde_json::to_value(r)?, force)?;
    }
    if let Some(dir) = acts {
        for (name, set) in &run.sets {
            let p = dir.join(format!("{name}.safetensors"));
            fsio::write_file(&p, &set.safetensors_bytes()?, force)?;
            eprintln!("wrote {}", p.display());
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
            Some(fig) => write_plot(&AnyFigure::Probe(fig), &stem, force)?,
            None => eprintln!("no figure: no probe was fitted or a score is not finite"),
        }
    }
    Ok(())
}

pub(super) fn check(a: CheckArgs) -> Result<()> {
    a.out.check()?;
    let outcomes = probes::check_dir(&a.dir)?;
    print!("{}", tables::check(&outcomes));
    a.out.write(&serde_json::to_value(&outcomes)?)?;
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
