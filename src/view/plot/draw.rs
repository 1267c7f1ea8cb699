//! Drawing the figure kinds of `plot` with plotters: the data checks, the shared panels
//! (heat cells, colour bar, line and bar panels, legend) and each kind's `Figure` impl.

use super::*;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight};
use plotters::style::text_anchor::{HPos, Pos, VPos};

// ---------------------------------------------------------------------------------------------
// Checks

fn check_labels(what: &str, labels: &[String]) -> std::result::Result<(), String> {
    if labels.is_empty() {
        return Err(format!("no {what}"));
    }
    Ok(())
}

fn check_value(v: f64, at: impl FnOnce() -> String) -> std::result::Result<(), String> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(format!("value {v} at {} is not finite", at()))
    }
}

fn check_grid(
    values: &[Vec<f64>],
    rows: (&str, usize),
    cols: (&str, usize),
) -> std::result::Result<(), String> {
    if values.len() != rows.1 {
        return Err(format!(
            "{} rows of values for {} {}s",
            values.len(),
            rows.1,
            rows.0
        ));
    }
    for (i, row) in values.iter().enumerate() {
        if row.len() != cols.1 {
            return Err(format!(
                "{} {i} has {} values for {} {}s",
                rows.0,
                row.len(),
                cols.1,
                cols.0
            ));
        }
        for (j, &v) in row.iter().enumerate() {
            check_value(v, || format!("{} {i}, {} {j}", rows.0, cols.0))?;
        }
    }
    Ok(())
}

fn check_lines(lines: &[Line], n: usize) -> std::result::Result<(), String> {
    if lines.is_empty() {
        return Err("no lines".into());
    }
    for l in lines {
        if l.values.len() != n {
            return Err(format!(
                "line '{}' has {} values for {n} x ticks",
                l.label,
                l.values.len()
            ));
        }
        for (i, &v) in l.values.iter().enumerate() {
            check_value(v, || format!("line '{}', x {i}", l.label))?;
        }
    }
    Ok(())
}

fn check_optional_grid(
    values: &[Vec<Option<f64>>],
    rows: (&str, usize),
    cols: (&str, usize),
) -> std::result::Result<(), String> {
    let dense: Vec<Vec<f64>> = values
        .iter()
        .map(|r| r.iter().map(|v| v.unwrap_or(0.0)).collect())
        .collect();
    check_grid(&dense, rows, cols)?;
    if values.iter().flatten().all(Option::is_none) {
        return Err("no values".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Drawing helpers

/// Category10 colours (the matplotlib / d3 default cycle).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn palette(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Diverging colour for `t` in [-1, 1]: blue (negative), white (0), red (positive); linear
/// interpolation between ColorBrewer's 7-class RdBu stops (reversed so that red is positive).
fn diverging(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 7] = [
        (33., 102., 172.),
        (103., 169., 207.),
        (209., 229., 240.),
        (247., 247., 247.),
        (253., 219., 199.),
        (239., 138., 98.),
        (178., 24., 43.),
    ];
    let x = (t.clamp(-1.0, 1.0) + 1.0) / 2.0 * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A tick label with about three significant digits.
fn tick(v: f64) -> String {
    let s = match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 0.01 || a == 0.0 => format!("{v:.2}"),
        _ => format!("{v:.1e}"),
    };
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// Symmetric colour limit: max |v|, or 1 when everything is 0 (an all-white map).
fn sym_limit<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    let m = values.fold(0.0f64, |m, v| m.max(v.abs()));
    if m > 0.0 {
        m
    } else {
        1.0
    }
}

/// The label of category `x` (a cell centre `i + 0.5`) in `labels`.
fn category(labels: &[String], x: f64) -> String {
    let i = (x - 0.5).round();
    if i >= 0.0 && (i as usize) < labels.len() {
        labels[i as usize].clone()
    } else {
        String::new()
    }
}

fn centres(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 + 0.5).collect()
}

/// An f64 axis whose labelled points are exactly `keys` (category centres). plotters'
/// `with_key_points` does the same but loses the default formatting that `configure_mesh` needs.
#[derive(Clone)]
struct Ticks {
    range: std::ops::Range<f64>,
    keys: Vec<f64>,
}

impl Ranged for Ticks {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, (lo, hi): (i32, i32)) -> i32 {
        let f = (v - self.range.start) / (self.range.end - self.range.start);
        lo + (f * (hi - lo) as f64).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight() {
            KeyPointWeight::Bold => self.keys.clone(),
            KeyPointWeight::Any => vec![],
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// Categories `0..n` one unit wide, labelled at their centres.
fn categories(n: usize) -> Ticks {
    Ticks {
        range: 0.0..n as f64,
        keys: centres(n),
    }
}

fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    root.titled(text, (FONT, 18).into_font().style(FontStyle::Bold))
}

/// Space below a heatmap for its token labels and axis name.
const X_LABELS_PX: u32 = 44;

/// Longest token label shown in full; longer ones (BPE pieces) are cut with an ellipsis.
const MAX_LABEL: usize = 10;

fn short_label(l: &str) -> String {
    if l.chars().count() > MAX_LABEL {
        l.chars().take(MAX_LABEL - 1).chain(['…']).collect()
    } else {
        l.to_string()
    }
}

/// Heat cells of `values[row][col]` with category labels; row 0 at the bottom.
#[allow(clippy::too_many_arguments)]
fn heat_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: Option<&str>,
    values: &[Vec<f64>],
    rows: &[String],
    cols: &[String],
    lim: f64,
    (x_desc, y_desc): (&str, &str),
    x_labels: bool,
) -> DrawResult<DB> {
    let (nr, nc) = (rows.len(), cols.len());
    let mut b = ChartBuilder::on(area);
    b.margin(6)
        .margin_right(12)
        .y_label_area_size(56)
        .x_label_area_size(if x_labels { X_LABELS_PX } else { 8 });
    if let Some(c) = caption {
        b.caption(c, (FONT, 14));
    }
    let mut chart = b.build_cartesian_2d(categories(nc), categories(nr))?;
    let xf = |x: &f64| short_label(&category(cols, *x));
    let yf = |y: &f64| category(rows, *y);
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh()
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .x_label_style((FONT, 13))
        .y_label_style((FONT, 13))
        .y_desc(y_desc)
        .axis_desc_style((FONT, 14));
    if x_labels {
        mesh.x_desc(x_desc);
    } else {
        mesh.x_label_formatter(&|_| String::new());
    }
    mesh.draw()?;
    chart.draw_series(values.iter().enumerate().flat_map(|(i, row)| {
        row.iter().enumerate().map(move |(j, &v)| {
            Rectangle::new(
                [(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)],
                diverging(v / lim).filled(),
            )
        })
    }))?;
    Ok(())
}

/// A vertical colour bar for values in `[-lim, lim]`; margins match the heatmap beside it so
/// that the two plotting areas line up.
fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lim: f64,
    label: &str,
    (top, bottom): (u32, u32),
) -> DrawResult<DB> {
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .margin_top(6 + top)
        .margin_left(4)
        .x_label_area_size(bottom)
        .right_y_label_area_size(78)
        .build_cartesian_2d(0.0..1.0, -lim..lim)?;
    let fmt = |v: &f64| tick(*v);
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(9)
        .y_label_formatter(&fmt)
        .y_label_style((FONT, 12))
        .y_desc(label)
        .axis_desc_style((FONT, 13))
        .draw()?;
    let steps = 200; // enough bands that the gradient looks continuous at any bar height
    chart.draw_series((0..steps).map(|k| {
        let a = -lim + 2.0 * lim * k as f64 / steps as f64;
        let b = -lim + 2.0 * lim * (k + 1) as f64 / steps as f64;
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            diverging((a + b) / 2.0 / lim).filled(),
        )
    }))?;
    chart.plotting_area().draw(&Rectangle::new(
        [(0.0, -lim), (1.0, lim)],
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

/// Legend sample kind.
#[derive(Clone, Copy)]
enum Sample {
    Solid,
    Dashed,
    Box,
}

/// A legend drawn in its own area (so it never hides data).
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor, Sample)],
) -> DrawResult<DB> {
    let row = 20; // px per entry: fits 13 px text
    for (k, (label, colour, sample)) in entries.iter().enumerate() {
        let y = 40 + row * k as i32;
        match sample {
            Sample::Box => {
                area.draw(&Rectangle::new([(8, y - 6), (26, y + 6)], colour.filled()))?
            }
            Sample::Solid => area.draw(&PathElement::new(
                vec![(6, y), (28, y)],
                colour.stroke_width(2),
            ))?,
            Sample::Dashed => {
                for x in [6, 15, 24] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 5, y)],
                        colour.stroke_width(2),
                    ))?
                }
            }
        }
        area.draw(&Text::new(
            label.clone(),
            (34, y),
            (FONT, 13)
                .into_font()
                .into_text_style(area)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// Legend width in px for these labels.
fn legend_width(labels: impl Iterator<Item = usize>) -> u32 {
    let longest = labels.max().unwrap_or(4);
    (48 + longest * 8) as u32 // 8 px a character at 13 px
}

/// A line chart panel over categorical x ticks.
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    ticks: &[String],
    (x_desc, y_desc): (&str, &str),
    y_range: std::ops::Range<f64>,
    lines: &[Line],
) -> DrawResult<DB> {
    let n = ticks.len();
    let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 15))
        .margin(8)
        .margin_right(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(
            Ticks {
                range: -0.3..(n as f64 - 0.7),
                keys: xs.clone(),
            },
            y_range,
        )?;
    let xf = |x: &f64| {
        let i = x.round();
        if i >= 0.0 && (i as usize) < n {
            ticks[i as usize].clone()
        } else {
            String::new()
        }
    };
    let yf = |v: &f64| tick(*v);
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .x_label_style((FONT, 13))
        .y_label_style((FONT, 13))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 14))
        .draw()?;
    for l in lines {
        let c = palette(l.color);
        let pts: Vec<(f64, f64)> = xs.iter().copied().zip(l.values.iter().copied()).collect();
        if l.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(2)))?;
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
    }
    Ok(())
}

fn line_entries(lines: &[Line]) -> Vec<(String, RGBColor, Sample)> {
    lines
        .iter()
        .map(|l| {
            let s = if l.dashed {
                Sample::Dashed
            } else {
                Sample::Solid
            };
            (l.label.clone(), palette(l.color), s)
        })
        .collect()
}

/// y range covering `values` and 0, padded 8 % so bars and labels do not touch the frame.
fn bar_range<'a>(values: impl Iterator<Item = &'a f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.08).max(1e-9);
    (if lo < 0.0 { lo - pad } else { 0.0 })..(if hi > 0.0 { hi + pad } else { pad })
}

/// Grouped bars `values[group][series]` (colour = series) on one panel.
fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: Option<&str>,
    groups: &[String],
    y_label: &str,
    values: &[Vec<Option<f64>>],
) -> DrawResult<DB> {
    let ng = groups.len();
    let range = bar_range(values.iter().flatten().flatten());
    let mut b = ChartBuilder::on(area);
    b.margin(8)
        .margin_right(12)
        .x_label_area_size(if groups.iter().all(|g| g.is_empty()) {
            8
        } else {
            40
        })
        .y_label_area_size(60);
    if let Some(c) = caption {
        b.caption(c, (FONT, 14));
    }
    let mut chart = b.build_cartesian_2d(categories(ng), range)?;
    let xf = |x: &f64| category(groups, *x);
    let yf = |v: &f64| tick(*v);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .x_label_style((FONT, 13))
        .y_label_style((FONT, 12))
        .y_desc(y_label)
        .axis_desc_style((FONT, 13))
        .draw()?;
    for (g, row) in values.iter().enumerate() {
        let present: Vec<(usize, f64)> = row
            .iter()
            .enumerate()
            .filter_map(|(s, v)| v.map(|v| (s, v)))
            .collect();
        let w = 0.8 / present.len().max(1) as f64; // bars fill 80 % of the group's width
        chart.draw_series(present.iter().enumerate().map(|(k, &(s, v))| {
            let x0 = g as f64 + 0.1 + w * k as f64;
            Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], palette(s).filled())
        }))?;
    }
    chart.plotting_area().draw(&PathElement::new(
        vec![(0.0, 0.0), (ng as f64, 0.0)],
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Figure impls

/// Heat cell width in px: wide enough for its (shortened) token label at ~8 px a character,
/// at least 40 px, and the whole map at least 720 px wide.
fn cell_px(labels: &[String]) -> f64 {
    let longest = labels
        .iter()
        .map(|l| short_label(l).chars().count())
        .max()
        .unwrap_or(1);
    (8.0 * longest as f64 + 12.0)
        .max(40.0)
        .max(720.0 / labels.len().max(1) as f64)
}

/// Width of the colour bar's area (bar, ticks and the rotated metric label).
const BAR_W: u32 = 150;

impl Figure for PatchHeatmap {
    fn title(&self) -> String {
        format!(
            "{}: {} — {} patching ({}), {}",
            self.checkpoint, self.contrast, self.hook, self.direction, self.metric
        )
    }
    fn size(&self) -> (u32, u32) {
        let (cell, xs) = (cell_px(&self.tokens), X_LABELS_PX);
        let w = 56 + BAR_W + 30 + (cell * self.tokens.len() as f64) as u32;
        let h = 70 + xs + 36 * self.layers.len() as u32;
        (w.max(640), h.max(300))
    }
    fn check(&self) -> std::result::Result<(), String> {
        check_labels("layers", &self.layers)?;
        check_labels("tokens", &self.tokens)?;
        check_grid(
            &self.values,
            ("layer", self.layers.len()),
            ("position", self.tokens.len()),
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = titled(root, &self.title())?;
        let (w, _) = area.dim_in_pixel();
        let (left, right) = area.split_horizontally(w.saturating_sub(BAR_W));
        let lim = sym_limit(self.values.iter().flatten());
        heat_panel(
            &left,
            None,
            &self.values,
            &self.layers,
            &self.tokens,
            lim,
            ("position (token)", "layer"),
            true,
        )?;
        colour_bar(&right, lim, &self.metric, (0, X_LABELS_PX))
    }
}

/// Height in px of one head-grid panel: caption + one row a head.
fn head_panel_h(n_head: usize) -> u32 {
    34 + 22 * n_head as u32
}

impl Figure for HeadGrid {
    fn title(&self) -> String {
        format!(
            "{}: {} — per-head patching ({}), {}",
            self.checkpoint, self.contrast, self.direction, self.metric
        )
    }
    fn size(&self) -> (u32, u32) {
        let (cell, xs) = (cell_px(&self.tokens), X_LABELS_PX);
        let n_head = self.n_head();
        let w = 56 + BAR_W + 30 + (cell * self.tokens.len() as f64) as u32;
        let h = 20 + xs + head_panel_h(n_head) * self.values.len() as u32; // 20: title beyond the last panel's own label area
        (w.max(640), h.max(300))
    }
    fn check(&self) -> std::result::Result<(), String> {
        check_labels("tokens", &self.tokens)?;
        if self.values.is_empty() {
            return Err("no layers".into());
        }
        let n_head = self.n_head();
        if n_head == 0 {
            return Err("no heads".into());
        }
        for (l, grid) in self.values.iter().enumerate() {
            check_grid(grid, ("position", self.tokens.len()), ("head", n_head))
                .map_err(|m| format!("layer {l}: {m}"))?;
        }
        Ok(())
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = titled(root, &self.title())?;
        let (w, _) = area.dim_in_pixel();
        let (left, right) = area.split_horizontally(w.saturating_sub(BAR_W));
        let n_head = self.n_head();
        let lim = sym_limit(self.values.iter().flatten().flatten());
        let heads: Vec<String> = (0..n_head).map(|h| format!("h{h}")).collect();
        let ph = head_panel_h(n_head) as i32;
        let n = self.values.len();
        let breaks: Vec<i32> = (1..n).map(|k| k as i32 * ph).collect();
        for (l, (panel, grid)) in left
            .split_by_breakpoints(Vec::<i32>::new(), breaks)
            .iter()
            .zip(&self.values)
            .enumerate()
        {
            // [position][head] → [head][position]: heads are the rows.
            let rows: Vec<Vec<f64>> = (0..n_head)
                .map(|h| grid.iter().map(|p| p[h]).collect())
                .collect();
            let last = l + 1 == n;
            heat_panel(
                panel,
                Some(&format!("layer {l}")),
                &rows,
                &heads,
                &self.tokens,
                lim,
                ("position (token)", "head"),
                last,
            )?;
        }
        // The bar spans the panels' plotting rows: skip the first caption (~20 px).
        colour_bar(&right, lim, &self.metric, (20, X_LABELS_PX))
    }
}

impl HeadGrid {
    fn n_head(&self) -> usize {
        self.values
            .first()
            .and_then(|g| g.first())
            .map_or(0, Vec::len)
    }
}

/// Panel width and height of line charts.
const PANEL: (u32, u32) = (520, 400);

impl Figure for ProbeCurves {
    fn title(&self) -> String {
        self.title.clone()
    }
    fn size(&self) -> (u32, u32) {
        let lw = legend_width(
            self.accuracy
                .iter()
                .chain(&self.auroc)
                .map(|l| l.label.len()),
        );
        (2 * PANEL.0 + lw, PANEL.1 + 40)
    }
    fn check(&self) -> std::result::Result<(), String> {
        check_labels("layers", &self.layers)?;
        check_lines(&self.accuracy, self.layers.len()).map_err(|m| format!("accuracy: {m}"))?;
        check_lines(&self.auroc, self.layers.len()).map_err(|m| format!("AUROC: {m}"))
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = titled(root, &self.title)?;
        let (a, rest) = area.split_horizontally(PANEL.0);
        let (b, leg) = rest.split_horizontally(PANEL.0);
        let axes = ("layer", "held-out score");
        line_panel(
            &a,
            "accuracy",
            &self.layers,
            axes,
            0.0..1.02,
            &self.accuracy,
        )?;
        line_panel(&b, "AUROC", &self.layers, axes, 0.0..1.02, &self.auroc)?;
        // One legend entry per distinct label (accuracy and AUROC share them).
        let mut entries = line_entries(&self.accuracy);
        for e in line_entries(&self.auroc) {
            if !entries.iter().any(|x| x.0 == e.0) {
                entries.push(e);
            }
        }
        legend(&leg, &entries)
    }
}

impl Figure for LensCurves {
    fn title(&self) -> String {
        self.title.clone()
    }
    fn size(&self) -> (u32, u32) {
        let lw = legend_width(self.lines.iter().map(|l| l.label.len()));
        (
            (PANEL.0 + 120).max(110 + 60 * self.layers.len() as u32) + lw,
            PANEL.1 + 40,
        )
    }
    fn check(&self) -> std::result::Result<(), String> {
        check_labels("layers", &self.layers)?;
        check_lines(&self.lines, self.layers.len())?;
        if let Some(l) = self
            .lines
            .iter()
            .find(|l| l.values.iter().any(|&p| !(0.0..=1.0).contains(&p)))
        {
            return Err(format!(
                "line '{}' has a probability outside [0, 1]",
                l.label
            ));
        }
        Ok(())
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = titled(root, &self.title)?;
        let lw = legend_width(self.lines.iter().map(|l| l.label.len()));
        let (w, _) = area.dim_in_pixel();
        let (a, leg) = area.split_horizontally(w - lw);
        let axes = ("residual stream after layer", "probability");
        line_panel(&a, "", &self.layers, axes, 0.0..1.02, &self.lines)?;
        legend(&leg, &line_entries(&self.lines))
    }
}

impl Bars {
    fn series_used(&self) -> Vec<usize> {
        (0..self.series.len())
            .filter(|&s| {
                self.values
                    .iter()
                    .any(|r| r.get(s).is_some_and(Option::is_some))
            })
            .collect()
    }
}

impl Figure for Bars {
    fn title(&self) -> String {
        self.title.clone()
    }
    fn size(&self) -> (u32, u32) {
        let per_group: usize = self.values.iter().map(|r| r.iter().flatten().count()).sum();
        let lw = legend_width(self.series.iter().map(String::len));
        let w = 100 + 14 * per_group as u32 + 24 * self.groups.len() as u32;
        (w.max(560) + lw, 440)
    }
    fn check(&self) -> std::result::Result<(), String> {
        check_labels("groups", &self.groups)?;
        check_labels("series", &self.series)?;
        check_optional_grid(
            &self.values,
            ("group", self.groups.len()),
            ("series", self.series.len()),
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = titled(root, &self.title)?;
        let lw = legend_width(self.series.iter().map(String::len));
        let (w, _) = area.dim_in_pixel();
        let (a, leg) = area.split_horizontally(w - lw);
        bar_panel(&a, None, &self.groups, &self.y_label, &self.values)?;
        let entries: Vec<_> = self
            .series_used()
            .into_iter()
            .map(|s| (self.series[s].clone(), palette(s), Sample::Box))
            .collect();
        legend(&leg, &entries)
    }
}

/// Behaviour panels per row.
const BEHAVIOUR_COLS: usize = 3;

impl Figure for BehaviourBars {
    fn title(&self) -> String {
        self.title.clone()
    }
    fn size(&self) -> (u32, u32) {
        let n = self.metrics.len().max(1);
        let cols = n.min(BEHAVIOUR_COLS) as u32;
        let rows = n.div_ceil(BEHAVIOUR_COLS) as u32;
        let lw = legend_width(self.checkpoints.iter().map(String::len));
        (cols * 300 + lw, 40 + rows * 260)
    }
    fn check(&self) -> std::result::Result<(), String> {
        check_labels("metrics", &self.metrics)?;
        check_labels("checkpoints", &self.checkpoints)?;
        check_optional_grid(
            &self.values,
            ("metric", self.metrics.len()),
            ("checkpoint", self.checkpoints.len()),
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = titled(root, &self.title)?;
        let lw = legend_width(self.checkpoints.iter().map(String::len));
        let (w, _) = area.dim_in_pixel();
        let (grid, leg) = area.split_horizontally(w - lw);
        let n = self.metrics.len();
        let rows = n.div_ceil(BEHAVIOUR_COLS);
        let cols = n.min(BEHAVIOUR_COLS);
        for (k, panel) in grid.split_evenly((rows, cols)).iter().enumerate().take(n) {
            bar_panel(
                panel,
                Some(&self.metrics[k]),
                &[String::new()],
                "",
                std::slice::from_ref(&self.values[k]),
            )?;
        }
        let entries: Vec<_> = self
            .checkpoints
            .iter()
            .enumerate()
            .map(|(s, c)| (c.clone(), palette(s), Sample::Box))
            .collect();
        legend(&leg, &entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_is_white_at_zero_and_symmetric() {
        assert_eq!(diverging(0.0), RGBColor(247, 247, 247));
        assert_eq!(diverging(1.0), RGBColor(178, 24, 43));
        assert_eq!(diverging(-1.0), RGBColor(33, 102, 172));
        assert_eq!(diverging(7.0), diverging(1.0), "clamped");
        // Equal distance from 0 gives equal lightness steps: both sides are paler at ±0.2
        // than at ±0.8.
        let sum = |c: RGBColor| c.0 as u32 + c.1 as u32 + c.2 as u32;
        assert!(sum(diverging(0.2)) > sum(diverging(0.8)));
        assert!(sum(diverging(-0.2)) > sum(diverging(-0.8)));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick(0.5), "0.50");
        assert_eq!(tick(-0.001), "-1.0e-3");
        assert_eq!(tick(-0.0), "0.00");
        assert_eq!(tick(12.345), "12.3");
        assert_eq!(tick(250.0), "250");
        assert_eq!(short_label("abcdefghijklmnop"), "abcdefghi…");
    }
}
