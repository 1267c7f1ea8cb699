//! `report`: every analysis of the pairs file's pairs into one self-contained HTML report, with
//! a progress bar per stage and the stage timings.
//! Must not hold a domain rule (what the report runs is `report`'s).

use anyhow::Result;
use feedlens::report::prompts::{self, PromptPairs};
use feedlens::report::{self, Pairs, Settings};
use feedlens::view::html;
use std::path::PathBuf;

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

pub(super) fn report(a: ReportArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| match a.only.as_slice() {
        [] => PathBuf::from("reports/zoo"),
        names => PathBuf::from("reports").join(html::slug(&names.join("+"))),
    });
    if a.n == 0 {
        anyhow::bail!("--n: must be at least 1");
    }
    let seeds = match &a.seeds {
        Some(l) => feedlens::lab::zoo::parse_seeds(l, "--seeds")?,
        None => Vec::new(),
    };
    // A pairs file of your own checkpoints and prompts (any family): its own lean report.
    let text = Pairs::read_text(&a.pairs)?;
    if PromptPairs::is_prompt_file(&text) {
        let mut pp = PromptPairs::parse(&text, &a.pairs)?;
        if let Some(bad) = a
            .only
            .iter()
            .find(|n| !pp.pairs.iter().any(|p| &p.name == *n))
        {
            anyhow::bail!("--only: no pair '{bad}' in {}", a.pairs.display());
        }
        pp.pairs
            .retain(|p| a.only.is_empty() || a.only.contains(&p.name));
        report::check_output(&out, &pp.inputs(), a.force)?;
        let t0 = std::time::Instant::now();
        let files = prompts::run(&pp)?;
        report::write(&out, &files, a.force)?;
        println!(
            "wrote {} ({} pairs of your own prompts, {} files) in {:.1} s",
            out.join("index.html").display(),
            pp.pairs.len(),
            files.len(),
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let pairs = Pairs::parse(&text, &a.pairs)?
        .only(&a.only)?
        .only_seeds(&seeds)?;
    pairs.check()?;
    report::check_output(&out, &pairs.inputs(), a.force)?;
    let mut settings = Settings {
        seed: a.seed,
        ..Settings::with_n(a.n)
    };
    settings.jobs = a.jobs.unwrap_or(settings.jobs).max(1);
    let t0 = std::time::Instant::now();
    let stages = Stages::default();
    let data = report::analyse(&pairs, &settings, &stages)?;
    let files = report::render(&data, &stages)?;
    report::write(&out, &files, a.force)?;
    let times = stages.times.lock().unwrap_or_else(|e| e.into_inner());
    let times: Vec<String> = times.iter().map(|(n, t)| format!("{n} {t:.1}")).collect();
    println!(
        "wrote {} ({} pairs, {} files) in {:.1} s (stages, s: {})",
        out.join("index.html").display(),
        data.pairs.len(),
        files.len(),
        t0.elapsed().as_secs_f64(),
        times.join(", ")
    );
    Ok(())
}
