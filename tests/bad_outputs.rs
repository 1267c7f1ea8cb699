//! Issue 14, classes 2, 4, 5, 7, 8 and 9 through the binary: outputs checked before any work
//! (never over an input, never two at one path, names that fit, folders feedlens wrote, not
//! the working directory), memory budgets from the arguments, bounded inputs (header and file
//! caps, unknown tensors summarised and never loaded) and what `--text` accepts. Every refusal
//! is one `error:` line naming the argument or file, and nothing is written.

mod common;

use common::*;
use safetensors::tensor::Dtype;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `feedlens ARGS` (in `cwd` if given) fails with one error line containing `needle`.
fn refused(args: &[String], cwd: Option<&Path>, needle: &str) -> Option<String> {
    let mut c = bin();
    c.args(args).env("RAYON_NUM_THREADS", "1");
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    let ok = !out.status.success()
        && !err.contains("panicked")
        && lines.len() == 1
        && lines[0].contains(needle);
    (!ok).then(|| {
        format!(
            "feedlens {}: wanted one error with {needle:?}, got: {err}",
            args.join(" ")
        )
    })
}

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A copy of a committed zoo checkpoint (it has the world's tokenizer).
fn base_copy(to: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/seed-0/base");
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

#[test]
fn outputs_are_checked_against_inputs_and_each_other_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let ck = base_copy(&d.path().join("ck"));
    let c = s(&ck);
    let cfg = s(&ck.join("config.json"));
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let w = |n: &str| s(&work.join(n));
    let long = w(&format!("{}.json", "a".repeat(230)));
    let long_dir = w(&format!("{}/x.json", "d".repeat(300)));
    // A pairs file beside its checkpoint, and a spec beside it.
    let pairs_dir = d.path().join("zoo");
    base_copy(&pairs_dir.join("a"));
    base_copy(&pairs_dir.join("b"));
    std::fs::write(
        pairs_dir.join("pairs.toml"),
        "[[pair]]\nname = \"p\"\na = \"a\"\nb = \"b\"\nmetric = \"mode\"\n",
    )
    .unwrap();
    let pairs = s(&pairs_dir.join("pairs.toml"));
    let spec = pairs_dir.join("s.toml");
    std::fs::write(
        &spec,
        "checkpoints = [\"a\"]\nlabel = \"optout\"\nn = 40\nfolds = 2\nnull_directions = 0\n",
    )
    .unwrap();
    let sp = s(&spec);
    let not_a_dir = w("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let users = d.path().join("users-folder");
    std::fs::create_dir(&users).unwrap();
    std::fs::write(users.join("thesis.tex"), "mine").unwrap();
    let mut failures = Vec::new();
    let mut case = |args: Vec<String>, needle: &str| failures.extend(refused(&args, None, needle));
    // An output that is, or replaces a file of, an input (even with --force).
    for json in [&cfg, &c] {
        for cmd in [
            argv(&["inspect", &c, "--json", json, "--force"]),
            argv(&["run", &c, "--ids", "1,2", "--json", json, "--force"]),
            argv(&["eval", &c, "--n", "4", "--json", json, "--force"]),
            argv(&["diff", &c, &c, "--json", json, "--force"]),
            argv(&["lens", &c, "--ids", "1,2", "--json", json, "--force"]),
            argv(&[
                "patch", &c, "--pairs", "optout", "--n", "8", "--json", json, "--force",
            ]),
            argv(&[
                "ablate",
                &c,
                "--contrast",
                "optout",
                "--attn",
                "0",
                "--json",
                json,
                "--force",
            ]),
            argv(&[
                "probe",
                "fit",
                "--data",
                &cfg,
                "--train-rows",
                "0..4",
                "--json",
                json,
                "--force",
            ]),
        ] {
            case(cmd, "the input");
        }
    }
    case(
        argv(&["train", "sft", "--parent", &c, "--out", &c, "--force"]),
        "is the input",
    );
    // `report --out` over the pairs folder, over one of its checkpoints, over a user's folder.
    for (out, needle) in [
        (pairs_dir.clone(), "contains the input"),
        (pairs_dir.join("a"), "is the input"),
        (users.clone(), "not written by feedlens"),
    ] {
        let o = s(&out);
        case(
            argv(&["report", "--pairs", &pairs, "--out", &o, "--force"]),
            needle,
        );
    }
    case(
        argv(&["check", &s(&pairs_dir), "--json", &sp, "--force"]),
        "is the input",
    );
    // A folder feedlens did not write is never replaced.
    let zoo_dir = d.path().join("my-zoo");
    std::fs::create_dir_all(zoo_dir.join("base")).unwrap();
    std::fs::write(zoo_dir.join("base/notes.txt"), "mine").unwrap();
    case(
        argv(&[
            "zoo",
            "--quick",
            "--seed",
            "0",
            "--only",
            "base",
            "--out",
            &s(&zoo_dir),
            "--force",
        ]),
        "not written by feedlens",
    );
    case(
        argv(&[
            "train",
            "sft",
            "--parent",
            &c,
            "--out",
            &s(&users),
            "--force",
        ]),
        "not written by feedlens",
    );
    // Two outputs at one path, names too long, a file where a folder must be.
    case(
        argv(&["diff", &c, &c, "--json", &w("d.png"), "--png", &w("d")]),
        "another output",
    );
    case(
        argv(&["probe", &sp, "--json", &s(&pairs_dir.join("s.result.json"))]),
        "another output",
    );
    case(
        argv(&["probe", &sp, "--acts", &not_a_dir]),
        "not a directory",
    );
    case(
        argv(&["run", &c, "--ids", "1,2", "--json", &long]),
        "longer than",
    );
    case(
        argv(&["run", &c, "--ids", "1,2", "--json", &long_dir]),
        "longer than 255 bytes",
    );
    case(
        argv(&[
            "eval",
            &c,
            "--n",
            "4",
            "--json",
            &format!("{not_a_dir}/x.json"),
        ]),
        "not a directory",
    );
    // The working directory is never replaced (EBUSY would leave a whole temp report behind).
    failures.extend(refused(
        &argv(&["report", "--pairs", &pairs, "--out", ".", "--force"]),
        Some(&work),
        "working directory",
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was written: no outputs, no temp files, the user's folder untouched.
    let left: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "file")
        .collect();
    assert!(left.is_empty(), "written: {left:?}");
    assert_eq!(
        std::fs::read_to_string(users.join("thesis.tex")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&users).unwrap().count(), 1);
}

#[test]
fn arguments_that_would_not_fit_in_memory_are_refused_with_the_figure() {
    let d = tempfile::tempdir().unwrap();
    let ck = base_copy(&d.path().join("ck"));
    let c = s(&ck);
    let out = s(&d.path().join("out"));
    let mut failures = Vec::new();
    for args in [
        argv(&["eval", &c, "--n", "1000000000"]),
        argv(&["report", "--n", "1000000000", "--out", &out]),
        argv(&["patch", &c, "--pairs", "optout", "--n", "1000000000"]),
        argv(&["train", "pretrain", "--n-layer", "100000", "--out", &out]),
        argv(&[
            "train", "pretrain", "--n-embd", "1000000", "--n-head", "1", "--out", &out,
        ]),
        argv(&[
            "train",
            "sft",
            "--parent",
            &c,
            "--batch",
            "100000000",
            "--out",
            &out,
        ]),
    ] {
        failures.extend(refused(&args, None, "needs about"));
    }
    // The limit can be set: a small one refuses the default report.
    let mut cmd = bin();
    cmd.args(["eval", &c, "--n", "100000"])
        .env("FEEDLENS_MEMORY", "1M");
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("more than the 1.0 MiB available"),
        "{err}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!Path::new(&out).exists());
}

/// Write a safetensors file of `tensors` (name, dtype, shape, bytes) with the fixture's own.
fn with_extra_tensors(dir: &Path, extra: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) {
    use safetensors::tensor::TensorView;
    let raw = std::fs::read(fixture("gpt2-tiny").join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    let mut all: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    all.extend(extra);
    let views: Vec<(String, TensorView)> = all
        .iter()
        .map(|(n, dt, sh, b)| (n.clone(), TensorView::new(*dt, sh.clone(), b).unwrap()))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        fixture("gpt2-tiny").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None::<std::collections::HashMap<String, String>>).unwrap(),
    )
    .unwrap();
}

#[test]
fn unknown_tensors_are_never_loaded_and_are_summarised_in_one_warning() {
    let d = tempfile::tempdir().unwrap();
    let ck = d.path().join("ck");
    let mut extra: Vec<_> = (0..1000)
        .map(|i| (format!("extra.{i:04}"), Dtype::F32, vec![0], vec![]))
        .collect();
    // Of any dtype or value: an i64 and a NaN tensor are ignored like the rest.
    extra.push(("extra.ids".into(), Dtype::I64, vec![2], vec![1; 16]));
    extra.push((
        "extra.nan".into(),
        Dtype::F32,
        vec![1],
        f32::NAN.to_le_bytes().to_vec(),
    ));
    with_extra_tensors(&ck, extra);
    let o = feedlens(&["inspect", &s(&ck)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("ignoring 1002 unknown tensors 'extra.0000'")
            && warnings[0].contains("and 997 more"),
        "{err}"
    );
}

#[test]
fn oversized_inputs_are_refused_by_their_caps() {
    let (_d, ck) = tiny_copy();
    // config.json over its 1 MiB cap (a huge unknown array).
    let cfg = ck.join("config.json");
    let orig = std::fs::read_to_string(&cfg).unwrap();
    let big = orig.replacen('{', &format!("{{\"junk\": [{}0],", "0,".repeat(600_000)), 1);
    std::fs::write(&cfg, big).unwrap();
    assert_clean_error(&feedlens(&["inspect", &s(&ck)]), "config.json");
    std::fs::write(&cfg, orig).unwrap();
    // A safetensors header over 16 MiB is refused before it is parsed.
    let st = ck.join("model.safetensors");
    let mut bytes = ((17u64 << 20).to_le_bytes()).to_vec();
    bytes.extend(vec![b' '; (17 << 20) + 8]);
    std::fs::write(&st, bytes).unwrap();
    assert_clean_error(&feedlens(&["inspect", &s(&ck)]), "header of 17825792 bytes");
}

#[test]
fn text_is_checked_after_the_tokenizers_own_normalizer_and_pre_tokenizer() {
    let d = tempfile::tempdir().unwrap();
    let ck = base_copy(&d.path().join("ck"));
    let tok = ck.join("tokenizer.json");
    let t = std::fs::read_to_string(&tok).unwrap();
    // "q" is normalised to "Q"; digits are split one by one.
    let t = t
        .replace(
            "\"normalizer\": null",
            "\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"q\"}, \"content\": \"Q\"}",
        )
        .replace(
            "\"pre_tokenizer\": {\n    \"type\": \"WhitespaceSplit\"\n  }",
            "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"WhitespaceSplit\"}, {\"type\": \"Digits\", \"individual_digits\": true}]}",
        );
    std::fs::write(&tok, t).unwrap();
    let json = d.path().join("run.json");
    let o = feedlens(&["run", &s(&ck), "--text", "q 12", "--json", &s(&json)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["tokens"][0], serde_json::json!(["Q", "1", "2"]));
    // A piece the vocabulary lacks is still refused (not silently the unknown token).
    assert_clean_error(
        &feedlens(&[
            "run",
            &s(&ck),
            "--text",
            "q zz",
            "--json",
            &s(&json),
            "--force",
        ]),
        "unknown token 'zz'",
    );
}

#[test]
fn a_tokenizer_cut_inside_a_section_is_an_error_not_a_panic() {
    // Found by examples/fuzz.rs: `tokenizers` panics on a syntax error inside `decoder`.
    let d = tempfile::tempdir().unwrap();
    let ck = base_copy(&d.path().join("ck"));
    let tok = ck.join("tokenizer.json");
    let t = std::fs::read_to_string(&tok).unwrap();
    let cut = t.replace(
        "\"decoder\": null",
        "\"decoder\": {\"type\": \"BPEDecoder\", \"suffix\": ",
    );
    let cut = &cut[..cut.find("\"suffix\": ").unwrap() + 10];
    std::fs::write(&tok, cut).unwrap();
    assert_clean_error(&feedlens(&["inspect", &s(&ck)]), "invalid tokenizer");
}
