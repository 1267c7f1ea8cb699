//! Every model command on a checkpoint of each family (`tests/fixtures/families/`): inspect,
//! run, patch (every component, both directions, attribution), patch-models, lens, diff, and a
//! hook the family lacks as a one-line error. The numbers themselves are checked against HF
//! and TransformerLens in `model_families.rs`; here the commands' plumbing is.

mod common;

use common::*;

const MODELS: [&str; 4] = ["gpt2-untied", "neox-parallel", "llama-gqa", "qwen2-gqa"];

fn json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn every_model_command_runs_on_every_family() {
    let d = tempfile::tempdir().unwrap();
    for name in MODELS {
        let ck = fixture(&format!("families/{name}"));
        let ck = ck.to_str().unwrap();
        let out = |f: &str| d.path().join(format!("{name}-{f}"));
        let (ok, text, err) = feedlens_text(&["inspect", ck]);
        assert!(ok, "{err}");
        let family = match name {
            "gpt2-untied" => "GPT-2: ",
            "neox-parallel" => "GPT-NeoX: parallel residual, rotary on 4 of 16",
            _ => "Llama-style: sequential residual, rotary",
        };
        assert!(text.contains(family), "{name}: {text}");
        feedlens_ok(&[
            "run",
            ck,
            "--ids",
            "1,2,3,4,5",
            "--hooks",
            "blocks.0.attn.hook_k,blocks.1.hook_resid_post",
            "--json",
            out("run.json").to_str().unwrap(),
        ]);
        let r = json(&out("run.json"));
        assert!(r.to_string().contains("blocks.0.attn.hook_k"), "{name}");
        for (method, direction) in [("both", "denoise"), ("exact", "noise")] {
            let o = out(&format!("patch-{direction}.json"));
            feedlens_ok(&[
                "patch",
                ck,
                "--clean-ids",
                "1,2,3,4,5,6",
                "--corrupt-ids",
                "1,2,9,4,5,6",
                "--metric",
                "logit-diff:3,7",
                "--method",
                method,
                "--direction",
                direction,
                "--json",
                o.to_str().unwrap(),
            ]);
            let p = json(&o);
            for c in ["resid_pre", "attn_out", "mlp_out", "head_out"] {
                assert!(
                    p.to_string().contains(&format!("\"{c}\"")),
                    "{name} {method}: no {c}"
                );
            }
        }
        feedlens_ok(&[
            "patch-models",
            ck,
            ck,
            "--prompt-ids",
            "1,2,3,4",
            "--metric",
            "logit-diff:3,7",
            "--json",
            out("pm.json").to_str().unwrap(),
        ]);
        feedlens_ok(&[
            "lens",
            ck,
            "--ids",
            "1,2,3,4,5",
            "--json",
            out("lens.json").to_str().unwrap(),
        ]);
        let (ok, text, err) = feedlens_text(&["diff", ck, ck]);
        assert!(ok && text.contains("identical weights"), "{name}: {err}");
    }
    // A hook a parallel-residual block does not have.
    let ck = fixture("families/neox-parallel");
    let o = feedlens(&[
        "run",
        ck.to_str().unwrap(),
        "--ids",
        "1,2,3",
        "--hooks",
        "blocks.0.hook_resid_mid",
        "--json",
        d.path().join("x.json").to_str().unwrap(),
    ]);
    assert_clean_error(&o, "blocks.0.hook_resid_mid does not exist");
    assert!(!d.path().join("x.json").exists());
}

#[test]
fn two_checkpoints_of_different_families_are_refused_for_paired_commands() {
    let a = fixture("families/llama-gqa");
    let b = fixture("families/neox-parallel");
    let o = feedlens(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_clean_error(&o, "family");
}

/// A prompt-pairs file over the two text checkpoints of the fixture.
fn prompt_pairs(d: &std::path::Path, clean: &str, corrupt: &str) -> std::path::PathBuf {
    let (a, b) = (fixture("families/text-a"), fixture("families/text-b"));
    let f = d.join("mine.toml");
    std::fs::write(
        &f,
        format!(
            "seed = 3\n[[pair]]\nname = \"mine\"\na = {:?}\nb = {:?}\nclean = [\"the cat sat on the mat\", {clean:?}]\ncorrupt = [\"the cat sat on the hat\", {corrupt:?}]\nmetric = \"logit-diff:Ġthe,Ġha\"\n",
            a.display().to_string(),
            b.display().to_string()
        ),
    )
    .unwrap();
    f
}

#[test]
fn report_over_prompts_of_your_own() {
    let d = tempfile::tempdir().unwrap();
    let f = prompt_pairs(d.path(), "the cat sat on the hat", "the cat sat on the mat");
    let (f, out) = (f.to_str().unwrap(), d.path().join("rep"));
    let o = out.to_str().unwrap();
    feedlens_ok(&["report", "--pairs", f, "--out", o]);
    let data = json(&out.join("data.json"));
    assert_eq!(data["kind"], "prompt_pairs");
    let p = &data["pairs"][0];
    assert_eq!(p["n_prompts"], 2);
    assert_eq!(p["family"], "neo_x");
    for side in ["A", "B"] {
        let s = &p["patching"][side];
        assert!(s["results"]["resid_pre"]["raw"].is_array(), "{side}");
        assert!(s["intervals"].is_object(), "{side}");
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("GPT-NeoX: parallel residual") && html.contains("n = 2"));
    for fig in [
        "mine-weights",
        "mine-A-resid_pre",
        "mine-B-head_out",
        "mine-cross",
        "mine-lens",
    ] {
        assert!(out.join(format!("{fig}.png")).is_file(), "{fig}");
        assert!(out.join(format!("{fig}.svg")).is_file(), "{fig}");
    }
    // No overwrite without --force; the same seed gives the same bytes.
    let again = feedlens(&["report", "--pairs", f, "--out", o]);
    assert_clean_error(&again, "rep");
    let out2 = d.path().join("rep2");
    feedlens_ok(&["report", "--pairs", f, "--out", out2.to_str().unwrap()]);
    for name in ["data.json", "index.html", "mine-A-resid_pre.png"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(out2.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn prompts_of_unequal_length_are_refused_by_prompt() {
    let d = tempfile::tempdir().unwrap();
    let f = prompt_pairs(d.path(), "the cat sat on the mat", "the dog sat on the mat");
    let out = d.path().join("rep");
    let o = feedlens(&[
        "report",
        "--pairs",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_clean_error(&o, "pair 'mine' prompt 2");
    assert!(!out.exists());
}
