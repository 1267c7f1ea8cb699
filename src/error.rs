//! Library error type: every variant names the file or argument at fault, in one line.
//! Must not carry multi-line messages: every message is folded into one line.

use std::path::{Path, PathBuf};

/// Errors from feedlens's library code. `Display` is a single line that names the
/// file or argument and the problem, so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory that is missing, malformed or inconsistent.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A bad argument or input value (hook name, token id, position, ...).
    #[error("{0}")]
    Input(String),
    /// A tensor operation failed (a bug or an inconsistent input that slipped through).
    #[error("tensor error: {}", one_line(&.0.to_string()))]
    Candle(#[from] candle_core::Error),
}

/// Library result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error about `path`.
    pub fn file(path: impl AsRef<Path>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            msg: one_line(&msg.to_string()),
        }
    }
    /// An error about an argument or input value.
    pub fn input(msg: impl std::fmt::Display) -> Self {
        Error::Input(one_line(&msg.to_string()))
    }
}

/// Fold a possibly multi-line message into one line.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Bail out with an [`Error::Input`].
#[macro_export]
macro_rules! input_err {
    ($($arg:tt)*) => { return Err($crate::Error::input(format!($($arg)*))) };
}
