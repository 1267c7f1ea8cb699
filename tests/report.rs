//! `feedlens report` on a small quick zoo over two seeds (base, rlhf, rlhf-optout; built
//! once): the page is well-formed XHTML, every referenced image exists and decodes, every
//! number in the generated summaries is one of the pair's facts in data.json with its interval
//! and n, the seed-null floors are in the report, names are escaped, and bad input (existing
//! report without --force, a missing checkpoint, a seed that is not trained, an unwritable
//! output folder) is refused in one line with nothing left behind.

mod common;

use common::feedlens;
use quick_xml::events::Event;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A pair name that would run script if it were not escaped.
const EVIL: &str = "optout<script>alert('x')</script>";

/// The quick zoo subset and a pairs file beside it, built once for every test here.
fn zoo() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let o = feedlens(&[
            "zoo",
            "--quick",
            "--seeds",
            "0,1",
            "--only",
            "base,rlhf,rlhf-optout",
            "--out",
            d.path().to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let pair = format!(
            "[[pair]]\nname = \"{}\"\na = \"rlhf\"\nb = \"rlhf-optout\"\ncontrast = \"optout\"\nmetric = \"mode\"\n",
            EVIL.replace('"', "\\\"")
        );
        std::fs::write(d.path().join("pairs.toml"), format!("seeds = [0, 1]\n{pair}")).unwrap();
        std::fs::write(d.path().join("untrained.toml"), format!("seeds = [0, 7]\n{pair}")).unwrap();
        std::fs::write(
            d.path().join("missing.toml"),
            "seeds = [0, 1]\n[[pair]]\nname = \"gone\"\na = \"rlhf\"\nb = \"nope\"\nmetric = \"mode\"\n",
        )
        .unwrap();
        d
    })
    .path()
}

/// Run `feedlens report` on `pairs` (a file in the zoo folder) into `out` with a small n.
fn report(pairs: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let p = zoo().join(pairs);
    let mut args = vec![
        "report",
        "--pairs",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--n",
        "64",
    ];
    args.extend_from_slice(extra);
    feedlens(&args)
}

fn one_line_error(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

/// Parse `html` as XML; returns the text of every `<li>` of the summary lists and every local
/// `src` / `href` target. Panics on malformed markup or unbalanced tags.
/// The page's summary items grouped by the id of the section they sit in, and its local links.
fn parse_page(html: &str) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let mut r = quick_xml::Reader::from_str(html);
    r.config_mut().check_end_names = true;
    let mut stack: Vec<String> = Vec::new();
    let mut in_summary = false;
    let mut items: Vec<(String, Vec<String>)> = Vec::new();
    let mut links = Vec::new();
    let mut attrs_of = |e: &quick_xml::events::BytesStart| {
        for a in e.attributes() {
            let a = a.expect("well-formed attribute");
            let key = a.key.as_ref().to_string();
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .expect("attribute entities")
                .to_string();
            if (key == "src" || key == "href") && !v.starts_with('#') {
                links.push(v);
            }
        }
    };
    loop {
        let ev = r.read_event().unwrap_or_else(|e| {
            panic!(
                "index.html is not well-formed at byte {}: {e}",
                r.buffer_position()
            )
        });
        match ev.clone() {
            Event::Start(e) => {
                let name = e.name().as_ref().to_string();
                attrs_of(&e);
                if name == "ul"
                    && e.attributes()
                        .flatten()
                        .any(|a| a.key.as_ref() == "class" && &*a.value == "summary")
                {
                    in_summary = true;
                }
                if name == "section" {
                    let id = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == "id")
                        .map(|a| a.value.to_string())
                        .unwrap_or_default();
                    items.push((id, Vec::new()));
                }
                if name == "li" && in_summary {
                    items
                        .last_mut()
                        .expect("summary inside a section")
                        .1
                        .push(String::new());
                }
                stack.push(name);
            }
            Event::Empty(e) => attrs_of(&e),
            Event::End(e) => {
                let name = e.name().as_ref().to_string();
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.as_str()),
                    "unbalanced tags"
                );
                if name == "ul" {
                    in_summary = false;
                }
            }
            Event::Text(_) | Event::GeneralRef(_) => {
                let s = match &ev {
                    Event::Text(t) => t.xml10_content().to_string(),
                    // An entity inside text (`&lt;`): resolve it for the summary text.
                    Event::GeneralRef(g) => quick_xml::escape::unescape(&format!("&{};", &**g))
                        .expect("known entity")
                        .to_string(),
                    _ => unreachable!(),
                };
                if in_summary && stack.last().map(String::as_str) == Some("li") {
                    items
                        .last_mut()
                        .and_then(|(_, v)| v.last_mut())
                        .unwrap()
                        .push_str(&s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    (items, links)
}

/// Numbers written in `text`: an optional `-` then digits with an optional fraction, not glued
/// to a letter (so `<r4>` or `d1` are names, not numbers). Returned as written.
fn numbers(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let glued = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_' || c[i - 1] == '.');
        if c[i].is_ascii_digit() && !glued {
            let neg = i > 0 && c[i - 1] == '-' && (i == 1 || !c[i - 2].is_alphanumeric());
            let start = i;
            while i < c.len() && c[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < c.len() && c[i] == '.' && c[i + 1].is_ascii_digit() {
                i += 1;
                while i < c.len() && c[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let s: String = c[start..i].iter().collect();
            out.push(if neg { format!("-{s}") } else { s });
        } else {
            i += 1;
        }
    }
    out
}

/// `shown` (as written, d decimals) is `v` rounded to d decimals.
fn shows(shown: &str, v: f64) -> bool {
    let d = shown.split_once('.').map_or(0, |(_, f)| f.len());
    let r = format!("{v:.d$}");
    r == shown
        || (shown.trim_start_matches('-') == r.trim_start_matches('-')
            && shown.trim_start_matches(['-', '0', '.']).is_empty())
}

#[test]
fn report_for_one_pair_is_complete_and_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rep");
    let o = report("pairs.toml", &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();

    // Escaping: the pair name's markup is text, never a tag.
    assert!(!html.contains("<script"), "unescaped pair name");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));

    // Well-formed, and every local reference exists; PNGs decode, SVGs parse.
    let (sections, links) = parse_page(&html);
    let mut pngs = 0;
    for l in &links {
        assert!(!l.contains("://"), "no network references: {l}");
        let p: PathBuf = out.join(l);
        assert!(p.is_file(), "missing {l}");
        if l.ends_with(".png") {
            let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
            let mut rd = dec.read_info().unwrap_or_else(|e| panic!("{l}: {e}"));
            let mut buf = vec![0; rd.output_buffer_size()];
            let info = rd
                .next_frame(&mut buf)
                .unwrap_or_else(|e| panic!("{l}: {e}"));
            assert!(info.width > 100 && info.height > 100, "{l}: {info:?}");
            pngs += 1;
        } else if l.ends_with(".svg") {
            let svg = std::fs::read_to_string(&p).unwrap();
            let mut r = quick_xml::Reader::from_str(&svg);
            loop {
                match r.read_event() {
                    Ok(Event::Eof) => break,
                    Ok(_) => {}
                    Err(e) => panic!("{l}: {e}"),
                }
            }
        }
    }
    // Behaviour, weight diff and lens at least (patching maps only where a gap is large enough
    // to localise: a quick zoo's usually is not), all drawn.
    assert!(pngs >= 3, "only {pngs} figures");
    for stem in ["behaviour", "weight-diff", "lens"] {
        assert!(
            links.iter().any(|l| l.ends_with(&format!("-{stem}.png"))),
            "{stem} figure"
        );
    }

    // Every number in the summary is one of the pair's facts (its value or an end of its
    // interval, rounded as shown), and every fact carries a finite interval and its n.
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("data.json")).unwrap()).unwrap();
    let facts = data["pairs"][0]["summary"]["facts"]
        .as_object()
        .unwrap()
        .clone();
    let mut nums = Vec::new();
    for f in facts.values() {
        for k in ["value", "lo", "hi"] {
            nums.extend(f[k].as_f64());
        }
    }
    let pair = &data["pairs"][0];
    assert_eq!(pair["name"], EVIL);
    let summary_of = |id: &str| {
        sections
            .iter()
            .find(|(s, _)| s == id)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no section {id}: {sections:?}"))
    };
    // The answers come first, then the pair's section; the seed floors have a section of
    // their own.
    assert_eq!(
        sections[0].0, "answers",
        "the first page is the answers table"
    );
    let summary = sections
        .iter()
        .find(|(id, _)| id.starts_with("pair01"))
        .expect("the pair's section")
        .1
        .clone();
    // Every number in the answers table is one of its facts.
    let answers = data["answers"].as_array().expect("answers in data.json");
    assert!(
        !answers.is_empty(),
        "an opt-out pair gives at least one answer"
    );
    let afacts = data["answers_summary"]["facts"].as_object().unwrap();
    let anums: Vec<f64> = afacts
        .values()
        .flat_map(|f| ["value", "lo", "hi"].map(|k| f[k].as_f64()))
        .flatten()
        .collect();
    for a in answers {
        for (k, cell) in a.as_object().unwrap() {
            let text = cell.as_str().unwrap();
            assert!(!text.is_empty(), "empty answer cell {k}");
            for n in numbers(text) {
                assert!(
                    anums.iter().any(|&v| shows(&n, v)),
                    "{n} in answer {k} \"{text}\" is not in data.json"
                );
            }
        }
        let q = a["question"].as_str().unwrap();
        assert!(
            html.contains(&q.replace('<', "&lt;").replace('>', "&gt;")),
            "{q} not on the page"
        );
    }
    assert!(summary.len() >= 5, "summary: {summary:?}");
    let sentences: Vec<String> = pair["summary"]["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(summary, sentences, "the page shows data.json's summary");
    let mut checked = 0;
    for s in &summary {
        for n in numbers(s) {
            assert!(
                nums.iter().any(|&v| shows(&n, v)),
                "{n} in \"{s}\" is not in data.json"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} numbers in the summary");
    for (k, f) in &facts {
        for field in ["value", "lo", "hi"] {
            let v = f[field].as_f64();
            assert!(v.is_some_and(f64::is_finite), "fact {k}: {field} = {f}");
        }
        assert!(f["n"].as_u64().is_some_and(|n| n >= 1), "fact {k}: n = {f}");
        assert!(
            f["lo"].as_f64() <= f["value"].as_f64().map(|v| v + 1e-9),
            "fact {k}: {f}"
        );
        assert!(
            f["hi"].as_f64() >= f["value"].as_f64().map(|v| v - 1e-9),
            "fact {k}: {f}"
        );
        // Over two seeds a measured number's interval is the range of its two runs.
        if f["over"] == "seeds" {
            assert_eq!(f["interval"], "range", "fact {k}: {f}");
            assert_eq!(
                f["per_seed"].as_array().map(Vec::len),
                Some(2),
                "fact {k}: {f}"
            );
        }
    }
    assert!(
        facts.values().any(|f| f["over"] == "seeds"),
        "numbers over the two seeds"
    );
    // The seed-null pairs are in the report: one per recipe of the pair, both seeds.
    let floors = data["floors"].as_array().unwrap();
    let names: Vec<&str> = floors.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"null rlhf (optout)") && names.contains(&"null rlhf-optout (optout)"),
        "{names:?}"
    );
    let floor_sentences: Vec<String> = floors
        .iter()
        .flat_map(|f| f["summary"]["sentences"].as_array().unwrap().clone())
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(!floor_sentences.is_empty());
    assert_eq!(summary_of("seed-floors"), floor_sentences);
    for f in floors {
        let run = &f["runs"][0];
        assert!(run["a"].as_str().unwrap().starts_with("seed-0/"), "{run}");
        assert!(run["b"].as_str().unwrap().starts_with("seed-1/"), "{run}");
    }
    assert!(html.contains("Seed noise floors"), "the floors' section");
    assert!(
        facts.keys().any(|k| k.ends_with(".floor")),
        "a pair-level number set against its floor"
    );

    // No overwrite without --force; the report stays as it was.
    let before = std::fs::read(out.join("index.html")).unwrap();
    let e = one_line_error(&report("pairs.toml", &out, &[]));
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(out.join("index.html")).unwrap(), before);
    // With --force it is replaced whole, and no temp folder is left beside it. This run uses
    // one worker instead of one per core: the report is the same, byte for byte.
    let json_before = std::fs::read(out.join("data.json")).unwrap();
    let o = report("pairs.toml", &out, &["--force", "--jobs", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("data.json")).unwrap(), json_before);
    assert_eq!(std::fs::read(out.join("index.html")).unwrap(), before);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("rep")]);
}

#[test]
fn bad_input_fails_in_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A pairs file naming a missing checkpoint.
    let out = tmp.path().join("rep");
    let e = one_line_error(&report("missing.toml", &out, &[]));
    assert!(e.contains("missing.toml") && e.contains("'nope'"), "{e}");
    assert!(!out.exists());
    // An output folder that cannot be created (its parent is a file).
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = one_line_error(&report("pairs.toml", &file.join("rep"), &[]));
    assert!(e.contains("not a directory"), "{e}");
    // An unknown --only name.
    let e = one_line_error(&report("pairs.toml", &out, &["--only", "nosuch"]));
    assert!(e.contains("nosuch"), "{e}");
    // A seed that is not trained, and --seeds outside the file's.
    let e = one_line_error(&report("untrained.toml", &out, &[]));
    assert!(
        e.contains("untrained.toml") && e.contains("of seed 7"),
        "{e}"
    );
    let e = one_line_error(&report("pairs.toml", &out, &["--seeds", "3"]));
    assert!(e.contains("--seeds: seed 3 is not in"), "{e}");
    let e = one_line_error(&report("pairs.toml", &out, &["--seeds", "0,0"]));
    assert!(e.contains("--seeds: seed 0 is listed twice"), "{e}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("file")],
        "nothing written"
    );
}

#[test]
fn number_parser_reads_numbers_not_names() {
    assert_eq!(
        numbers("P(E) 0.25 with <r4>, layer 3 head 1, d1, -1.50 and 85 %"),
        vec!["0.25", "3", "1", "-1.50", "85"]
    );
    assert!(shows("0.25", 0.2499));
    assert!(shows("-0.00", 0.001));
    assert!(!shows("0.25", 0.26));
}

/// The crosscoder section: `crosscoder zoo` trains one crosscoder per seed for the pair the
/// file names, a second run keeps them, and the report reads them into a section and its
/// data; without the folders the section says they are not trained.
#[test]
fn report_reads_the_crosscoders_the_prepare_step_trains() {
    let pair = "[[pair]]\nname = \"cc\"\na = \"rlhf\"\nb = \"rlhf-optout\"\ncontrast = \"optout\"\nmetric = \"mode\"\n";
    let d = tempfile::tempdir().unwrap();
    // A zoo folder of its own (links to the shared quick zoo's checkpoints).
    for s in ["seed-0", "seed-1"] {
        std::fs::create_dir_all(d.path().join(s)).unwrap();
        for n in ["rlhf", "rlhf-optout"] {
            std::os::unix::fs::symlink(zoo().join(s).join(n), d.path().join(s).join(n)).unwrap();
        }
    }
    let file = d.path().join("cc.toml");
    std::fs::write(
        &file,
        format!("seeds = [0, 1]\ncrosscoders = [\"cc\"]\n{pair}"),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = d.path().join("untrained");
    let o = feedlens(&[
        "report",
        "--pairs",
        f,
        "--out",
        out.to_str().unwrap(),
        "--n",
        "64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("not trained (run feedlens crosscoder zoo)"));
    let o = feedlens(&["crosscoder", "zoo", "--pairs", f]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for s in ["seed-0", "seed-1"] {
        assert!(d
            .path()
            .join("crosscoders")
            .join(s)
            .join("cc/crosscoder.safetensors")
            .is_file());
    }
    let o = feedlens(&["crosscoder", "zoo", "--pairs", f]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("0 crosscoders"), "{err}");
    let out = d.path().join("rep");
    let o = feedlens(&[
        "report",
        "--pairs",
        f,
        "--out",
        out.to_str().unwrap(),
        "--n",
        "64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("Model diffing without labels: crosscoders"));
    assert!(html.contains("Activation Difference Lens"));
    assert!(out.join("crosscoder-cc.png").is_file());
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("data.json")).unwrap()).unwrap();
    let cc = &data["crosscoders"][0];
    assert_eq!(cc["runs"].as_array().unwrap().len(), 2);
    for r in cc["runs"].as_array().unwrap() {
        assert!(r.get("unused").is_none(), "{r}");
        // One lens row per block of the checkpoints.
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(zoo().join("seed-0/rlhf/config.json")).unwrap())
                .unwrap();
        let n_layer = cfg["n_layer"].as_u64().unwrap() as usize;
        assert_eq!(r["difflens"]["layers"].as_array().unwrap().len(), n_layer);
    }
    let vars: Vec<&str> = cc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variable"].as_str().unwrap())
        .collect();
    assert!(
        vars.contains(&"optout") && vars.contains(&"sorted"),
        "{vars:?}"
    );
}
