//! The `feedlens` command line: a thin clap layer over the library.

use clap::Parser;

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::Cli::parse();
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
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', "; ")
}
