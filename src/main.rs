//! The `feedlens` command line: a thin clap layer over the library.

use clap::Parser;

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::Cli::parse();
    // Every output is written to a temp file or folder and renamed into place, so an interrupted
    // run leaves earlier outputs whole; say so instead of dying silently.
    let _ = ctrlc::set_handler(|| {
        eprintln!(
            "error: interrupted; nothing partial was written (outputs are moved into place only when complete, earlier ones are whole)"
        );
        std::process::exit(130);
    });
    if let Err(e) = cli::dispatch(args) {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', "; ")
}
