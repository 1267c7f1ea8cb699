//! Probe specs end to end on small checkpoints made in a temp dir (random GPT-2s with the world's
//! tokenizer): run, store, check (pass, drift, stale hash), bad specs, activation export, and the
//! regression comparison of every committed spec in `probes/`.

mod common;

use feedlens::analysis::probes::{self, ActivationSet, Label};
use feedlens::analysis::site::Site;
use feedlens::io::checkpoint::{self, Manifest, RecipeKind};
use feedlens::lab::sample::{self, Decode};
use feedlens::lab::world;
use feedlens::{Config, Model};
use rand::SeedableRng;
use std::path::Path;

fn make_ckpt(dir: &Path, name: &str, seed: u64, force: bool) {
    let cfg = Config::new(2, 32, 4, 24, 32);
    let model = Model::init(cfg, seed).unwrap();
    let tok = world::tokenizer_json(&world::WorldConfig::default());
    let man = Manifest {
        recipe: RecipeKind::Import,
        seed,
        ..Manifest::default()
    };
    checkpoint::save(dir.join(name), &model, Some(&tok), &man, force).unwrap();
}

fn write_spec(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join("probes").join(format!("{name}.toml"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, body).unwrap();
    p
}

const SPEC: &str = r#"
checkpoints = ["../checkpoints/a", "../checkpoints/b"]
label = "optout"
n = 120
folds = 3
seed = 3
null_directions = 100
causal_alpha = 0.5
"#;

use common::feedlens_text as feedlens;

#[test]
fn run_store_check_and_stale() {
    let d = tempfile::tempdir().unwrap();
    make_ckpt(&d.path().join("checkpoints"), "a", 1, false);
    make_ckpt(&d.path().join("checkpoints"), "b", 2, false);
    let spec = write_spec(d.path(), "flag", SPEC);
    let s = spec.to_str().unwrap();
    let acts = d.path().join("acts");
    let (ok, stdout, err) = feedlens(&["probe", s, "--acts", acts.to_str().unwrap()]);
    assert!(ok, "{err}");
    // The exported activation set: X.{layer} [n, d] f32, y [n] i64, ids [n, 11].
    let exported = std::fs::read(acts.join("a.safetensors")).unwrap();
    let t = safetensors::SafeTensors::deserialize(&exported).unwrap();
    assert_eq!(t.tensor("X.0").unwrap().shape(), &[120, 32]);
    assert_eq!(t.tensor("y").unwrap().shape(), &[120]);
    assert!(stdout.contains("transfer a → b"), "{stdout}");
    let (json, st) = probes::result_paths(&spec);
    let r: probes::SpecResult = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r.layers, vec![0, 1]);
    assert_eq!(r.classes, vec![0, 1]);
    assert_eq!(
        r.control_position,
        Some(world::POS_D1),
        "A is constant at 10: key on d1"
    );
    assert_eq!(r.checkpoints.len(), 2);
    assert_eq!(r.transfer.len(), 2);
    let ck = &r.checkpoints[0];
    assert_eq!(ck.class_counts.iter().sum::<usize>(), 120);
    for l in &ck.layers {
        for v in [l.logistic.accuracy, l.logistic.auroc, l.top_pc_auroc] {
            assert!((0.0..=1.0).contains(&v), "{l:?}");
        }
        assert!(l.mass_mean.is_some() && l.control.is_some() && l.selectivity.is_some());
        let rb = l.random_best_auroc.unwrap();
        assert!((0.5..=1.0).contains(&rb));
    }
    assert_eq!(ck.causal.len(), 2, "a causal check per layer");
    assert!(ck.causal.iter().all(|c| c.alpha > 0.0 && c.plus != c.base));
    // The weights file holds a coefficient row per layer and checkpoint, and the labels.
    let bytes = std::fs::read(&st).unwrap();
    let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(t.tensor("a.layer1.coef").unwrap().shape(), &[1, 32]);
    assert_eq!(t.tensor("b.labels").unwrap().shape(), &[120]);
    // No silent overwrite; a re-run reproduces the stored result exactly, so check passes.
    let (ok, _, err) = feedlens(&["probe", s]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let again = probes::run_spec(&spec).unwrap();
    assert_eq!(again.result, r, "deterministic");
    assert!(probes::compare(&r, &again.result).is_empty());
    let (ok, stdout, err) = feedlens(&["check", spec.parent().unwrap().to_str().unwrap()]);
    assert!(ok, "{stdout}{err}");
    assert!(stdout.contains("pass"), "{stdout}");

    // Drift: a stored metric moved beyond the tolerance.
    let mut drifted = r.clone();
    drifted.checkpoints[0].layers[1].logistic.auroc += 0.05;
    let p = probes::compare(&drifted, &r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("a layer 1 logistic AUROC"), "{p:?}");
    let mut within = r.clone();
    within.checkpoints[1].layers[0].logistic.accuracy += 0.01;
    assert!(probes::compare(&within, &r).is_empty());

    // Every stored number and the whole structure are compared, not only the headline metrics.
    type Edit = Box<dyn Fn(&mut probes::SpecResult)>;
    let edits: Vec<(&str, Edit, &str)> = vec![
        (
            "layers swapped",
            Box::new(|x| x.checkpoints[0].layers.swap(0, 1)),
            "a layer 0 layer: stored 1, now 0",
        ),
        (
            "list shortened",
            Box::new(|x| {
                x.checkpoints[1].layers.pop();
            }),
            "b layers: stored 1 entries, now 2",
        ),
        (
            "null emptied",
            Box::new(|x| x.checkpoints[0].layers[0].random_best_auroc = None),
            "a layer 0 random_best_auroc: stored null",
        ),
        (
            "transfer removed",
            Box::new(|x| x.transfer[1].layers.clear()),
            "layers: stored 0 entries, now 2",
        ),
        (
            "causal alpha",
            Box::new(|x| x.checkpoints[0].causal[0].alpha *= 10.0),
            "a layer 0 alpha",
        ),
        (
            "selectivity",
            Box::new(|x| {
                x.checkpoints[1].layers[1].selectivity =
                    x.checkpoints[1].layers[1].selectivity.map(|v| v + 0.5)
            }),
            "b layer 1 selectivity",
        ),
        (
            "control position",
            Box::new(|x| x.control_position = Some(3)),
            "control_position: stored 3",
        ),
        (
            "name",
            Box::new(|x| x.checkpoints[0].name = "z".into()),
            "name: stored \"z\", now \"a\"",
        ),
        (
            "class counts",
            Box::new(|x| x.checkpoints[0].class_counts.reverse()),
            "class_counts",
        ),
    ];
    for (what, edit, expect) in &edits {
        let mut x = r.clone();
        edit(&mut x);
        let p = probes::compare(&x, &r);
        assert!(p.iter().any(|l| l.contains(expect)), "{what}: {p:?}");
    }
    // The weights file: every tensor compared (names, dtype, shape, values).
    let w = checkpoint::deserialize(&std::fs::read(&st).unwrap(), &st).unwrap();
    assert!(probes::compare_weights(&w, &w, 0.02, &[]).is_empty());
    let mut moved = w.clone();
    if let Some((_, checkpoint::StTensor::F32(_, v))) =
        moved.iter_mut().find(|(n, _)| n == "a.layer1.coef")
    {
        v[3] += 1.0;
    }
    let p = probes::compare_weights(&moved, &w, 0.02, &[]);
    assert!(
        p.len() == 1 && p[0].contains("'a.layer1.coef' differs"),
        "{p:?}"
    );
    let p = probes::compare_weights(&w[1..], &w, 0.02, &[]);
    assert!(
        p.len() == 1 && p[0].contains("missing from the stored file"),
        "{p:?}"
    );
    assert!(
        probes::compare_weights(&moved, &w, 0.02, &["a".into()]).is_empty(),
        "a stale checkpoint's weights are skipped"
    );
    // A truncated, zeroed or deleted weights file fails `check`.
    let bytes = std::fs::read(&st).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut zeroed = bytes.clone();
    zeroed[header..].fill(0);
    let dir = spec.parent().unwrap().to_str().unwrap();
    for (what, content) in [
        ("truncated", Some(bytes[..bytes.len() / 2].to_vec())),
        ("zeroed", Some(zeroed)),
        ("deleted", None),
    ] {
        match content {
            Some(c) => std::fs::write(&st, c).unwrap(),
            None => std::fs::remove_file(&st).unwrap(),
        }
        let (ok, stdout, _) = feedlens(&["check", dir]);
        assert!(!ok && stdout.contains("FAIL"), "{what}: {stdout}");
        std::fs::write(&st, &bytes).unwrap();
    }
    // A key the stored file has but feedlens does not write is a difference too.
    let stored_json = std::fs::read(&json).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&stored_json).unwrap();
    v["checkpoints"][0]["layers"][0]["note"] = serde_json::json!("edited");
    std::fs::write(&json, serde_json::to_vec(&v).unwrap()).unwrap();
    let (ok, stdout, _) = feedlens(&["check", dir]);
    assert!(
        !ok && stdout.contains("a layer 0 note: stored, but no longer produced"),
        "{stdout}"
    );
    std::fs::write(&json, &stored_json).unwrap();
    // A folder with no specs is an error, not "0 probe specs pass".
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, _, err) = feedlens(&["check", empty.to_str().unwrap()]);
    assert!(!ok && err.contains("no probe specs"), "{err}");

    // Stale: checkpoint b is replaced by another model; check names both hashes and fails.
    let old = r.checkpoints[1].sha256.clone();
    make_ckpt(&d.path().join("checkpoints"), "b", 9, true);
    let (ok, stdout, err) = feedlens(&["check", spec.parent().unwrap().to_str().unwrap()]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("stale"),
        "{stdout}"
    );
    assert!(stdout.contains(&old), "{stdout}");
    assert!(
        err.starts_with("error: ") && err.contains("1 of 1"),
        "{err}"
    );
}

#[test]
fn bad_specs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    make_ckpt(&d.path().join("checkpoints"), "a", 1, false);
    let one = r#"checkpoints = ["../checkpoints/a"]
n = 40
null_directions = 10
"#;
    let cases = [
        ("label", "label = \"colour\"\n", "unknown label 'colour'"),
        (
            "hook",
            "label = \"optout\"\nhook = \"resid_side\"\n",
            "unknown component 'resid_side'",
        ),
        (
            "layer",
            "label = \"optout\"\nlayers = [0, 7]\n",
            "layer 7 is out of range",
        ),
        (
            "field",
            "label = \"optout\"\nlayer = [0]\n",
            "unknown field",
        ),
        (
            "oneclass",
            "label = \"trigger\"\np_trigger = 0.0\n",
            "has one class only",
        ),
        (
            "method",
            "label = \"optout\"\nmethod = [\"svm\"]\n",
            "unknown method 'svm'",
        ),
    ];
    for (name, extra, want) in cases {
        let spec = write_spec(d.path(), name, &format!("{one}{extra}"));
        let (ok, _, err) = feedlens(&["probe", spec.to_str().unwrap()]);
        assert!(!ok, "{name}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{name}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.toml")),
            "{name}: names the spec: {err}"
        );
    }
    let (ok, _, err) = feedlens(&["probe", "no/such/spec.toml"]);
    assert!(!ok && err.contains("no such file"), "{err}");
}

#[test]
fn activation_sets_export_and_labels() {
    let cfg = Config::new(2, 32, 4, 24, 32);
    let model = Model::init(cfg, 5).unwrap();
    let prompts = probes::sample_prompts(Label::Bucket, 30, 1, None, None);
    let set = ActivationSet::build(
        &model,
        prompts.clone(),
        Label::Bucket,
        Site::ResidPre,
        3,
        &[0, 1],
    )
    .unwrap();
    assert_eq!(set.acts.len(), 2);
    assert_eq!(set.acts[0].dim(), (30, 32));
    for (p, &y) in prompts.iter().zip(&set.labels) {
        assert_eq!(Some(y as u8), p.bucket);
    }
    // resid_pre of layer 0 at position 3 is embedding + position embedding of the S3 token:
    // identical rows for identical tokens.
    for i in 0..30 {
        for j in 0..30 {
            if prompts[i].bucket == prompts[j].bucket {
                assert_eq!(set.acts[0].row(i), set.acts[0].row(j));
            }
        }
    }
    let bytes = set.safetensors_bytes().unwrap();
    let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(t.tensor("X.1").unwrap().shape(), &[30, 32]);
    assert_eq!(t.tensor("y").unwrap().shape(), &[30]);
    assert_eq!(t.tensor("ids").unwrap().shape(), &[30, 11]);
    // Model-derived labels: mode agrees with the logits; defect with greedy decoding.
    let set = ActivationSet::build(
        &model,
        prompts.clone(),
        Label::Defect,
        Site::ResidPost,
        10,
        &[1],
    )
    .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let eps = sample::generate(&model, &prompts, Decode::Greedy, &mut rng).unwrap();
    for (e, &y) in eps.iter().zip(&set.labels) {
        assert_eq!(y, e.completion.contains(&world::BANG) as i64);
    }
    let set = ActivationSet::build(
        &model,
        prompts.clone(),
        Label::Mode,
        Site::ResidPost,
        10,
        &[1],
    )
    .unwrap();
    for (e, &y) in eps.iter().zip(&set.labels) {
        // Greedy's first token is the argmax over the whole vocabulary; when it is E or H it
        // must agree with the E-vs-H comparison.
        if e.completion[0] == world::E || e.completion[0] == world::H {
            assert_eq!(y, (e.completion[0] == world::E) as i64);
        }
    }
}

/// The regression test on stored probe outputs: every spec committed in `probes/` re-run and
/// compared with its stored result (what `feedlens check` does).
#[test]
fn committed_probe_specs_match_their_stored_results() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes");
    if !dir.exists() {
        eprintln!("no probes/ folder: nothing to compare");
        return;
    }
    let outcomes = probes::check_dir(&dir).unwrap();
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.pass).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn causal_check_invariants() {
    let cfg = Config::new(2, 32, 4, 24, 32);
    let model = Model::init(cfg, 11).unwrap();
    let prompts = probes::sample_prompts(Label::Optout, 64, 2, None, None);
    let set =
        ActivationSet::build(&model, prompts, Label::Optout, Site::ResidPost, 10, &[0]).unwrap();
    let x = &set.acts[0];
    let m = feedlens::analysis::probes::math::Logistic::fit(x.view(), &set.labels, 1.0).unwrap();
    let dir = m.coef.row(0).to_vec();
    let hook = feedlens::Hook::ResidPost(0);
    let zero = probes::causal_check(&model, &set, hook, &dir, x, 0.0).unwrap();
    assert_eq!(
        (zero.plus, zero.minus),
        (zero.base, zero.base),
        "α = 0 changes nothing"
    );
    // Small α: the change is first order, so +α and −α move the metric by opposite amounts.
    let small = probes::causal_check(&model, &set, hook, &dir, x, 1e-3).unwrap();
    let (up, down) = (small.plus - small.base, small.minus - small.base);
    assert!(
        up != 0.0 && (up + down).abs() <= 0.1 * (up - down).abs(),
        "{small:?}"
    );
    assert_ne!(small.ablated, small.base);
}
