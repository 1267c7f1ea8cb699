//! Issue 7.1: every command that takes a checkpoint, probe spec, pairs file, activation file or
//! token ids is driven over the malformed-input corpus (`tests/bad_inputs/corpus.rs`). Each run
//! must exit non-zero with exactly one `error:` line that names the file (or argument) and the
//! problem, never panic, and write no output.

mod common;

#[path = "bad_inputs/corpus.rs"]
mod corpus;

use corpus::{Case, Kind};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Run feedlens with `args` and check the error line; returns a failure description, if any.
fn expect_error(args: &[String], names: &str, problem: &str) -> Option<String> {
    let out = common::feedlens_threads(args, "1");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    let ok = !out.status.success()
        && !err.contains("panicked at")
        && lines.len() == 1
        && lines[0].contains(names)
        && lines[0].contains(problem);
    (!ok).then(|| {
        format!(
            "feedlens {}\n  expected one error line naming {names:?} and {problem:?}; exit {:?}, stderr:\n  {}",
            args.join(" "),
            out.status.code(),
            err.trim_end().replace('\n', "\n  ")
        )
    })
}

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Every command that loads a checkpoint, with `ck` in the checkpoint's place. Returns
/// (argv, the path the error must name in place of `ck`).
fn checkpoint_commands(
    ck: &Path,
    good: &Path,
    stored: &[u8],
    tmp: &Path,
    i: usize,
) -> Vec<(Vec<String>, PathBuf)> {
    let out = |what: &str| s(&tmp.join(format!("out-{i}-{what}")));
    let (c, g) = (s(ck), s(good));
    let mut v: Vec<(Vec<String>, PathBuf)> = [
        argv(&["inspect", &c, "--json", &out("inspect.json")]),
        argv(&["run", &c, "--ids", "1,2,3", "--json", &out("run.json")]),
        argv(&["eval", &c, "--n", "4", "--json", &out("eval.json")]),
        argv(&[
            "train",
            "rlhf",
            "--parent",
            &c,
            "--steps",
            "1",
            "--out",
            &out("train"),
        ]),
        argv(&[
            "patch",
            &c,
            "--clean-ids",
            "1,2,3",
            "--corrupt-ids",
            "1,2,4",
            "--json",
            &out("patch.json"),
        ]),
        argv(&[
            "patch-models",
            &c,
            &g,
            "--prompt-ids",
            "1,2,3",
            "--metric",
            "logit-diff:1,2",
            "--json",
            &out("pm.json"),
        ]),
        argv(&[
            "patch-models",
            &g,
            &c,
            "--prompt-ids",
            "1,2,3",
            "--metric",
            "logit-diff:1,2",
        ]),
        argv(&["diff", &c, &g, "--json", &out("diff.json")]),
        argv(&["diff", &g, &c]),
        argv(&["lens", &c, "--ids", "1,2,3", "--json", &out("lens.json")]),
    ]
    .into_iter()
    .map(|a| (a, ck.to_path_buf()))
    .collect();
    // zoo: a --only entry whose parent `base` (loaded from --out) is this checkpoint.
    let zoo = tmp.join(format!("zoo-{i}"));
    std::fs::create_dir_all(&zoo).unwrap();
    std::os::unix::fs::symlink(ck, zoo.join("base")).unwrap();
    v.push((
        argv(&[
            "zoo",
            "--quick",
            "--seed",
            "0",
            "--out",
            &s(&zoo),
            "--only",
            "rlhf",
            "--jobs",
            "1",
        ]),
        zoo.join("base"),
    ));
    // probe / check: a spec naming this checkpoint.
    let spec_dir = tmp.join(format!("spec-{i}"));
    std::fs::create_dir_all(&spec_dir).unwrap();
    let spec = spec_dir.join("s.toml");
    std::fs::write(
        &spec,
        format!("checkpoints = [{c:?}]\nlabel = \"optout\"\nn = 40\nfolds = 2\n"),
    )
    .unwrap();
    v.push((argv(&["probe", &s(&spec), "--force"]), ck.to_path_buf()));
    // `check` reads the stored result first: give it a valid one, so it gets to the checkpoint.
    std::fs::write(spec_dir.join("s.result.json"), stored).unwrap();
    v.push((argv(&["check", &s(&spec_dir)]), ck.to_path_buf()));
    v
}

#[test]
fn every_command_refuses_every_bad_input_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("bad_inputs");
    std::fs::create_dir(&root).unwrap();
    let tmp = d.path().join("work");
    std::fs::create_dir(&tmp).unwrap();
    let cases: Vec<Case> = corpus::build(&root);
    assert!(cases.len() >= 30, "corpus has {} cases", cases.len());
    let good = root.join("good-checkpoint");
    // A stored probe result (on the good checkpoint) for `check` to compare against.
    let proto = d.path().join("proto");
    std::fs::create_dir(&proto).unwrap();
    let spec = proto.join("s.toml");
    std::fs::write(
        &spec,
        format!(
            "checkpoints = [{:?}]\nlabel = \"optout\"\nn = 40\nfolds = 2\nnull_directions = 0\n",
            s(&good)
        ),
    )
    .unwrap();
    common::feedlens_ok(&["probe", &s(&spec)]);
    let stored = std::fs::read(proto.join("s.result.json")).unwrap();
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, c) in cases.iter().enumerate() {
        let mut check = |args: Vec<String>, names: &Path| {
            runs += 1;
            // The path named in the error, relative to the case's input where it lies inside.
            failures.extend(expect_error(&args, &s(names), c.problem));
        };
        match c.kind {
            Kind::Checkpoint => {
                for (args, at) in checkpoint_commands(&c.input, &good, &stored, &tmp, i) {
                    let rest = c.names.strip_prefix(&c.input).unwrap_or(Path::new(""));
                    let names = if rest.as_os_str().is_empty() {
                        at
                    } else {
                        at.join(rest)
                    };
                    check(args, &names);
                }
            }
            Kind::ProbeSpec => {
                check(argv(&["probe", &s(&c.input)]), &c.names);
                // `check` reads the stored result first: give it one, so it gets to the spec.
                let dir = c.input.parent().unwrap();
                std::fs::write(dir.join("spec.result.json"), &stored).unwrap();
                check(argv(&["check", &s(dir)]), &c.names);
            }
            Kind::Pairs => {
                let out = s(&tmp.join(format!("out-{i}-report")));
                check(
                    argv(&["report", "--pairs", &s(&c.input), "--out", &out]),
                    &c.names,
                );
            }
            Kind::ProbeData => {
                check(
                    argv(&[
                        "probe",
                        "fit",
                        "--data",
                        &s(&c.input),
                        "--train-rows",
                        "0..4",
                    ]),
                    &c.names,
                );
            }
        }
    }
    // Argument cases (ids out of range, over-long, empty) for the commands that take ids
    // (`run` is covered by tests/cli_model.rs).
    let g = s(&good);
    let long: Vec<String> = (0..25).map(|i| (i % 50).to_string()).collect();
    let long = long.join(",");
    for (ids, problem) in [
        ("1,50", "out of range"),
        (long.as_str(), "n_positions"),
        ("", "no token"),
    ] {
        for (args, arg) in [
            (argv(&["lens", &g, "--ids", ids]), "--ids"),
            (
                argv(&["patch", &g, "--clean-ids", ids, "--corrupt-ids", ids]),
                "--clean-ids",
            ),
            (
                argv(&[
                    "patch-models",
                    &g,
                    &g,
                    "--prompt-ids",
                    ids,
                    "--metric",
                    "logit-diff:1,2",
                ]),
                "--prompt-ids",
            ),
        ] {
            runs += 1;
            failures.extend(expect_error(&args, arg, problem));
        }
    }
    // Bad `report` arguments on a good pairs file.
    let good_pairs = s(&root.join("good-pairs/pairs.toml"));
    let out = s(&tmp.join("out-report"));
    for (extra, arg, problem) in [
        (["--only", "nope"], "--only", "no pair 'nope'"),
        (["--n", "0"], "--n", "must be at least 1"),
    ] {
        let mut args = argv(&["report", "--pairs", &good_pairs, "--out", &out]);
        args.extend(argv(&extra));
        runs += 1;
        failures.extend(expect_error(&args, arg, problem));
    }
    // No command wrote anything for a bad input.
    let written: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out-") || n.starts_with('.') || n == "t.json")
        .collect();
    assert!(
        written.is_empty(),
        "outputs written for bad inputs: {written:?}"
    );
    eprintln!(
        "{} cases, {runs} runs, {} failures",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
