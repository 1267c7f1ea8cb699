//! `report`: every analysis of the pairs file's pairs into one self-contained HTML report, with
//! a progress bar per stage and the stage timings.
//! Must not hold a domain rule (what the report runs is `report`'s).

use super::{print_plan, UnitArgs};
use anyhow::Result;
use feedlens::report::prompts::{self, PromptPairs};
use feedlens::report::{self, Pairs, Settings};
use feedlens::view::html;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(super) struct ReportArgs {
    /// Pairs file; checkpoint names are directories beside it.
    #[arg(long, default_value = "checkpoints/pairs.toml")]
    pairs: PathBuf,
    /// Only these seeds of the pairs file's (`0,1`, `0..2`); default: all of them.
    #[arg(long)]
    seeds: Option<String>,
    /// Report only these pairs (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output folder (default: reports/zoo, or reports/NAME with --only NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing report folder.
    #[arg(long)]
    force: bool,
    /// Prompts per behaviour row; probes use N/4, cross-checkpoint patching and the lens N/8,
    /// within-checkpoint patching N/16 prompt pairs (rounded up to a multiple of 8).
    #[arg(long, default_value_t = feedlens::report::DEFAULT_N)]
    n: usize,
    /// Seed of every prompt set.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Analyses run at once (default: the number of cores), each on one thread.
    #[arg(long)]
    jobs: Option<usize>,
    #[command(flatten)]
    units: UnitArgs,
    /// Work units folder of --unit/--shard/--stage and --merge (default: OUT-units beside the
    /// report folder).
    #[arg(long, value_name = "DIR")]
    units_dir: Option<PathBuf>,
    /// Assemble the report from the finished work units in the units folder (the same bytes as
    /// a single-process run); refuses, naming them, while any unit is missing.
    #[arg(long, conflicts_with_all = ["unit", "shard", "stage"])]
    merge: bool,
}

/// indicatif bars, one per stage of the report, and each stage's wall time.
#[derive(Default)]
struct Stages {
    multi: indicatif::MultiProgress,
    current: std::sync::Mutex<Option<(indicatif::ProgressBar, std::time::Instant)>>,
    times: std::sync::Mutex<Vec<(String, f64)>>,
}

impl ReportArgs {
    /// Analyses run at once.
    pub(super) fn jobs(&self) -> usize {
        self.jobs.unwrap_or_else(feedlens::pool::cores)
    }
}

impl report::Progress for Stages {
    fn stage(&self, name: &str, total: usize) {
        let pb = self.multi.add(super::bar(total as u64, name));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((pb, std::time::Instant::now()));
    }
    fn step(&self, _: &str, item: &str) {
        if let Some((pb, _)) = &*self.current.lock().unwrap_or_else(|e| e.into_inner()) {
            pb.set_message(item.to_string());
            pb.inc(1);
        }
    }
    fn done(&self, name: &str) {
        if let Some((pb, t)) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            pb.finish_with_message("");
            let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
            times.push((name.to_string(), t.elapsed().as_secs_f64()));
        }
    }
}

impl ReportArgs {
    /// The report folder.
    fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| match self.only.as_slice() {
                [] => PathBuf::from("reports/zoo"),
                names => PathBuf::from("reports").join(html::slug(&names.join("+"))),
            })
    }
    /// The units folder: --units-dir, else OUT-units beside the report folder.
    fn units_dir(&self, out: &Path) -> PathBuf {
        self.units_dir.clone().unwrap_or_else(|| {
            let name = out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "report".into());
            out.with_file_name(format!("{name}-units"))
        })
    }
    /// The settings the flags ask for.
    fn settings(&self) -> Result<Settings> {
        if self.n == 0 {
            anyhow::bail!("--n: must be at least 1");
        }
        let mut settings = Settings {
            seed: self.seed,
            ..Settings::with_n(self.n)
        };
        settings.jobs = self.jobs.unwrap_or(settings.jobs).max(1);
        Ok(settings)
    }
    /// The seeds of --seeds (empty: all of the pairs file's).
    fn seed_list(&self) -> Result<Vec<u64>> {
        Ok(match &self.seeds {
            Some(l) => feedlens::lab::zoo::parse_seeds(l, "--seeds")?,
            None => Vec::new(),
        })
    }
    /// The pairs of a checkpoint pairs file (not a prompt file), with --only and --seeds.
    fn checkpoint_pairs(&self, text: &str) -> Result<Pairs> {
        let seeds = self.seed_list()?;
        if PromptPairs::is_prompt_file(text) {
            anyhow::bail!(
                "{}: a pairs file of your own prompts has no work units (--unit, --shard, --stage, --merge and plan are for checkpoint pairs files)",
                self.pairs.display()
            );
        }
        let pairs = Pairs::parse(text, &self.pairs)?
            .only(&self.only)?
            .only_seeds(&seeds)?;
        pairs.check()?;
        Ok(pairs)
    }
}

/// `feedlens plan report`: the report's work units.
pub(super) fn plan(a: ReportArgs, count: bool) -> Result<()> {
    let settings = a.settings()?;
    let pairs = a.checkpoint_pairs(&Pairs::read_text(&a.pairs)?)?;
    let units = report::Plan::new(&pairs, &settings)?.units();
    print_plan(&units, &a.units, count)
}

/// `report --unit K | --shard I/N | --stage S`: the selected units into the units folder.
fn report_units(a: &ReportArgs, pairs: &Pairs, settings: &Settings, dir: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{}: exists and is not a directory", dir.display());
    }
    let plan = report::Plan::new(pairs, settings)?;
    let sel = report::Selection {
        dir,
        pick: a.units.pick()?,
        force: a.force,
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    plan.run_units(&sel, &report::Silent, &|u, how| {
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match how {
            report::UnitRun::Done(t) => println!("unit {}: done in {t:.1} s", u.name),
            report::UnitRun::Finished => println!("unit {}: already finished", u.name),
        }
    })?;
    println!(
        "{} unit(s) in {} in {:.1} s",
        done.into_inner(),
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(super) fn report(a: ReportArgs) -> Result<()> {
    let out = a.out_dir();
    let settings = a.settings()?;
    a.seed_list()?;
    let partial = a.units.pick()?.is_partial();
    let text = Pairs::read_text(&a.pairs)?;
    if PromptPairs::is_prompt_file(&text) && !partial && !a.merge {
        return prompt_report(&a, &text, &out);
    }
    let pairs = a.checkpoint_pairs(&text)?;
    let dir = a.units_dir(&out);
    if partial {
        return report_units(&a, &pairs, &settings, &dir);
    }
    report::check_output(&out, &pairs.inputs(), a.force)?;
    let t0 = std::time::Instant::now();
    let stages = Stages::default();
    let data = if a.merge {
        report::Plan::new(&pairs, &settings)?.merge_units(&dir)?
    } else {
        report::analyse(&pairs, &settings, &stages)?
    };
    let files = report::render(&data, &stages)?;
    report::write(&out, &files, a.force)?;
    let times = stages.times.lock().unwrap_or_else(|e| e.into_inner());
    let times: Vec<String> = times.iter().map(|(n, t)| format!("{n} {t:.1}")).collect();
    let from = if a.merge {
        format!(" from the units in {}", dir.display())
    } else {
        String::new()
    };
    println!(
        "wrote {} ({} pairs, {} files){from} in {:.1} s (stages, s: {})",
        out.join("index.html").display(),
        data.pairs.len(),
        files.len(),
        t0.elapsed().as_secs_f64(),
        times.join(", ")
    );
    Ok(())
}

/// A pairs file of your own checkpoints and prompts (any family): its own lean report.
fn prompt_report(a: &ReportArgs, text: &str, out: &Path) -> Result<()> {
    let mut pp = PromptPairs::parse(text, &a.pairs)?;
    if let Some(bad) = a
        .only
        .iter()
        .find(|n| !pp.pairs.iter().any(|p| &p.name == *n))
    {
        anyhow::bail!("--only: no pair '{bad}' in {}", a.pairs.display());
    }
    pp.pairs
        .retain(|p| a.only.is_empty() || a.only.contains(&p.name));
    report::check_output(out, &pp.inputs(), a.force)?;
    let t0 = std::time::Instant::now();
    let files = prompts::run(&pp)?;
    report::write(out, &files, a.force)?;
    println!(
        "wrote {} ({} pairs of your own prompts, {} files) in {:.1} s",
        out.join("index.html").display(),
        pp.pairs.len(),
        files.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
