//! The `feedlens` command line: a thin clap layer over the library (`src/cli/`). Every failure,
//! a bad flag included, is one `error:` line on stderr and a non-zero exit.
//! Must not hold logic beyond parsing, dispatch and error printing.

use clap::Parser;

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Rust starts with SIGPIPE ignored, so `feedlens inspect DIR | head` would panic in
    // println! once head exits; restore the default (end quietly, as other Unix tools do).
    // Every file output is written to a temp path and renamed into place, so being ended
    // mid-run leaves earlier outputs whole.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Keep freed memory mapped: candle allocates a fresh output per op, and mimalloc's default
    // returns freed pages to the OS after a delay, so the next large output faults in and
    // zeroes new pages (a fifth of a sampling run). Read by mimalloc when it first purges,
    // which is after this point; a value the user set is kept.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        std::env::set_var("MIMALLOC_PURGE_DELAY", "-1");
    }
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => usage_error(e),
    };
    cli::set_thread_env(&args);
    // Every output is written to a temp file or folder and renamed into place, so an interrupted
    // run leaves earlier outputs whole; say so instead of dying silently.
    let _ = ctrlc::set_handler(|| {
        eprintln!(
            "error: interrupted; nothing partial was written (outputs are moved into place only when complete, earlier ones are whole)"
        );
        std::process::exit(130);
    });
    // The command runs on a rayon worker (feedlens::pool), so its kernels start there instead
    // of being handed over from the main thread.
    let threads = feedlens::pool::default_threads();
    let res =
        feedlens::pool::run_on(threads, || cli::dispatch(args)).unwrap_or_else(|e| Err(e.into()));
    if let Err(e) = res {
        eprintln!("error: {}", one_line(&format!("{e:#}")));
        std::process::exit(1);
    }
}

/// `--help` and `--version` print as clap writes them; a usage error becomes one line (clap's
/// message, its usage line in brackets) and exit status 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let mut msg = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if !line.starts_with("For more information") {
            msg.push(line.strip_prefix("error: ").unwrap_or(line).to_string());
        }
    }
    let usage = usage.map(|u| format!(" (usage: {u})")).unwrap_or_default();
    eprintln!("error: {}{usage}", msg.join(" "));
    std::process::exit(2);
}

fn one_line(s: &str) -> String {
    s.replace('\n', "; ")
}
