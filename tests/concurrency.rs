//! No-overwrite holds under concurrency: of two runs racing to write one new output without
//! `--force`, exactly one succeeds and the other says "already exists" (the publish is an
//! exclusive link, not a check followed by a rename).

use std::process::Command;

#[test]
fn two_runs_racing_for_one_new_json_give_one_winner() {
    let d = tempfile::tempdir().unwrap();
    let ck = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny");
    for round in 0..20 {
        let out = d.path().join(format!("same{round}.json"));
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_feedlens"))
                .args(["run", ck.to_str().unwrap(), "--ids", "1,2,3", "--json"])
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let ok = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(ok, 1, "round {round}: both or neither won");
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        let err = String::from_utf8_lossy(&loser.stderr);
        assert!(err.contains("already exists"), "round {round}: {err}");
        assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&out).unwrap()).is_ok());
    }
    // Nothing left behind but the outputs.
    let left: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
