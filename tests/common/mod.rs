//! Shared test helpers: fixture paths, reference tensors, comparisons, running the CLI.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// All tensors of a safetensors file.
pub fn load_st(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).expect("reference safetensors")
}

/// Max |a − b| over all elements (shapes must match).
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// i64 tensor → rows of u32 ids.
pub fn ids_rows(t: &Tensor) -> Vec<Vec<u32>> {
    let t = if t.rank() == 1 {
        t.unsqueeze(0).unwrap()
    } else {
        t.clone()
    };
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect()
}

/// The feedlens binary, ready for arguments (spawn it, or use the helpers below).
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_feedlens"))
}

/// Run the feedlens binary.
pub fn feedlens<S: AsRef<OsStr>>(args: &[S]) -> Output {
    bin().args(args).output().expect("run feedlens")
}

/// Run the feedlens binary and require success (its stderr goes into the panic message).
pub fn feedlens_ok<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let out = feedlens(args);
    assert!(
        out.status.success(),
        "feedlens {:?}: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run the feedlens binary: (succeeded, stdout, stderr).
pub fn feedlens_text<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = feedlens(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Assert a CLI run failed cleanly: non-zero exit, a single `error:` line on stderr that
/// contains `needle`, and no panic.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked at"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "error line {:?} should mention {needle:?}",
        lines[0]
    );
}

/// Copy the tiny fixture checkpoint (config + weights only) into a fresh temp dir.
pub fn tiny_copy() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let ck = d.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gpt2-tiny").join(f), ck.join(f)).unwrap();
    }
    (d, ck)
}

/// Start the feedlens binary on `args` (one thread, output discarded) and SIGKILL it after
/// `after`.
pub fn kill_after<S: AsRef<OsStr>>(args: &[S], after: std::time::Duration) {
    let mut child = bin()
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

/// Run the feedlens binary with `RAYON_NUM_THREADS` set.
pub fn feedlens_threads<S: AsRef<OsStr>>(args: &[S], threads: &str) -> Output {
    bin()
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .expect("run feedlens")
}

/// Run the feedlens binary on one rayon thread (what most CLI tests want: no contention).
pub fn feedlens_1thread<S: AsRef<OsStr>>(args: &[S]) -> Output {
    feedlens_threads(args, "1")
}

/// A failed run (one thread): non-zero exit, no panic, and stderr is exactly one non-empty line,
/// starting `error: ` and containing `want` (stricter than [`assert_clean_error`]: nothing else
/// may be printed).
pub fn fails_with(args: &[&str], want: &str) {
    let out = feedlens_1thread(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked at"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {err}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    assert!(
        lines[0].contains(want),
        "{args:?}: expected '{want}' in: {err}"
    );
}
