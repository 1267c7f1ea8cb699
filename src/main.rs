//! The `feedlens` command line: a thin clap layer over the library.

use clap::Parser;

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::dispatch(args) {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', "; ")
}
