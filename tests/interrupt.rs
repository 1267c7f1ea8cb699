//! Ctrl-C (SIGINT) during training: a clear one-line message, exit status 130, nothing written.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn sigint_during_training_says_so_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("ck");
    let child = common::bin()
        .args(["train", "pretrain", "--steps", "1000000", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let res = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(130), "{err}");
    assert!(err.trim_end().ends_with("error: interrupted; nothing partial was written (outputs are moved into place only when complete, earlier ones are whole)"), "{err}");
    assert!(!err.contains("panicked at"));
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert!(left.is_empty(), "temp output left behind: {left:?}");
}
