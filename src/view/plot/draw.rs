//! Drawing with plotters: the data checks and the shared panels (heat cells, colour bar, line
//! and bar panels, legend) that the figure kinds (`kinds`) are drawn from.
//! Must not know what an analysis is: only plot data.

use super::*;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight};
use plotters::style::text_anchor::{HPos, Pos, VPos};

// ---------------------------------------------------------------------------------------------
// Checks

pub(super) fn check_labels(what: &str, labels: &[String]) -> std::result::Result<(), String> {
    if labels.is_empty() {
        return Err(format!("no {what}"));
    }
    Ok(())
}

pub(super) fn check_value(v: f64, at: impl FnOnce() -> String) -> std::result::Result<(), String> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(format!("value {v} at {} is not finite", at()))
    }
}

pub(super) fn check_grid(
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

pub(super) fn check_lines(lines: &[Line], n: usize) -> std::result::Result<(), String> {
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

pub(super) fn check_optional_grid(
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
pub(super) const PALETTE: [(u8, u8, u8); 10] = [
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

pub(super) fn palette(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Diverging colour for `t` in [-1, 1]: blue (negative), white (0), red (positive); linear
/// interpolation between ColorBrewer's 7-class RdBu stops (reversed so that red is positive).
pub(super) fn diverging(t: f64) -> RGBColor {
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
pub(super) fn tick(v: f64) -> String {
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
pub(super) fn sym_limit<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    let m = values.fold(0.0f64, |m, v| m.max(v.abs()));
    if m > 0.0 {
        m
    } else {
        1.0
    }
}

/// The label of category `x` (a cell centre `i + 0.5`) in `labels`.
pub(super) fn category(labels: &[String], x: f64) -> String {
    let i = (x - 0.5).round();
    if i >= 0.0 && (i as usize) < labels.len() {
        labels[i as usize].clone()
    } else {
        String::new()
    }
}

pub(super) fn centres(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 + 0.5).collect()
}

/// An f64 axis whose labelled points are exactly `keys` (category centres). plotters'
/// `with_key_points` does the same but loses the default formatting that `configure_mesh` needs.
#[derive(Clone)]
pub(super) struct Ticks {
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
pub(super) fn categories(n: usize) -> Ticks {
    Ticks {
        range: 0.0..n as f64,
        keys: centres(n),
    }
}

pub(super) fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    root.titled(text, (FONT, 18).into_font().style(FontStyle::Bold))
}

/// Space below a heatmap for its token labels and axis name.
pub(super) const X_LABELS_PX: u32 = 44;

/// Longest token label shown in full; longer ones (BPE pieces) are cut with an ellipsis.
pub(super) const MAX_LABEL: usize = 10;

pub(super) fn short_label(l: &str) -> String {
    if l.chars().count() > MAX_LABEL {
        l.chars().take(MAX_LABEL - 1).chain(['…']).collect()
    } else {
        l.to_string()
    }
}

/// Heat cells of `values[row][col]` with category labels; row 0 at the bottom.
#[allow(clippy::too_many_arguments)]
pub(super) fn heat_panel<DB: DrawingBackend>(
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
pub(super) fn colour_bar<DB: DrawingBackend>(
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
    // Ticks a rounding error away from 0 (plotters' steps of ±lim) read "0".
    let fmt = |v: &f64| tick(if v.abs() < lim * 1e-6 { 0.0 } else { *v });
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
pub(super) enum Sample {
    Solid,
    Dashed,
    Dotted,
    Box,
}

/// A legend drawn in its own area (so it never hides data).
pub(super) fn legend<DB: DrawingBackend>(
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
            Sample::Dotted => {
                for x in [6, 11, 16, 21, 26] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 2, y)],
                        colour.stroke_width(2),
                    ))?
                }
            }
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
pub(super) fn legend_width(labels: impl Iterator<Item = usize>) -> u32 {
    let longest = labels.max().unwrap_or(4);
    (48 + longest * 8) as u32 // 8 px a character at 13 px
}

/// A line chart panel over categorical x ticks.
pub(super) fn line_panel<DB: DrawingBackend>(
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
        if let Some((lo, hi)) = &l.band {
            // The 95 % interval as a translucent band under the line.
            let mut poly: Vec<(f64, f64)> = xs.iter().copied().zip(hi.iter().copied()).collect();
            poly.extend(xs.iter().copied().zip(lo.iter().copied()).rev());
            chart.draw_series(std::iter::once(Polygon::new(poly, c.mix(0.18).filled())))?;
        }
        let pts: Vec<(f64, f64)> = xs.iter().copied().zip(l.values.iter().copied()).collect();
        if l.dotted {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 2, 4, c.stroke_width(2)))?;
        } else if l.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(2)))?;
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
    }
    Ok(())
}

pub(super) fn line_entries(lines: &[Line]) -> Vec<(String, RGBColor, Sample)> {
    lines
        .iter()
        .map(|l| {
            let s = if l.dotted {
                Sample::Dotted
            } else if l.dashed {
                Sample::Dashed
            } else {
                Sample::Solid
            };
            (l.label.clone(), palette(l.color), s)
        })
        .collect()
}

/// y range covering `values` and 0, padded 8 % so bars and labels do not touch the frame.
pub(super) fn bar_range<'a>(values: impl Iterator<Item = &'a f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.08).max(1e-9);
    (if lo < 0.0 { lo - pad } else { 0.0 })..(if hi > 0.0 { hi + pad } else { pad })
}

/// What a bar panel draws on top of its bars, cell for cell as `values`: 95 % error bars and
/// a floor marker (a short black line at the seed floor's level).
#[derive(Clone, Copy, Default)]
pub(super) struct BarMarks<'a> {
    pub err: Option<&'a [Vec<Option<Span>>]>,
    pub floor: Option<&'a [Vec<Option<f64>>]>,
}

/// Grouped bars `values[group][series]` (colour = series) on one panel, with `marks`.
pub(super) fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: Option<&str>,
    groups: &[String],
    y_label: &str,
    values: &[Vec<Option<f64>>],
    marks: BarMarks,
) -> DrawResult<DB> {
    let ng = groups.len();
    let mut extent: Vec<f64> = values.iter().flatten().flatten().copied().collect();
    if let Some(err) = marks.err {
        extent.extend(err.iter().flatten().flatten().flat_map(|&(a, b)| [a, b]));
    }
    if let Some(fl) = marks.floor {
        extent.extend(fl.iter().flatten().flatten().copied());
    }
    let range = bar_range(extent.iter().filter(|v| v.is_finite()));
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
        for (k, &(s, _)) in present.iter().enumerate() {
            let x0 = g as f64 + 0.1 + w * k as f64;
            let xm = x0 + w * 0.45;
            let cell = |m: Option<&[Vec<Option<f64>>]>| {
                m.and_then(|m| m.get(g)?.get(s).copied().flatten())
            };
            if let Some((lo, hi)) = marks.err.and_then(|e| e.get(g)?.get(s).copied().flatten()) {
                if lo.is_finite() && hi.is_finite() {
                    let tick = w * 0.2;
                    for seg in [
                        vec![(xm, lo), (xm, hi)],
                        vec![(xm - tick, lo), (xm + tick, lo)],
                        vec![(xm - tick, hi), (xm + tick, hi)],
                    ] {
                        chart.draw_series(std::iter::once(PathElement::new(
                            seg,
                            BLACK.stroke_width(1),
                        )))?;
                    }
                }
            }
            if let Some(f) = cell(marks.floor).filter(|f| f.is_finite()) {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x0, f), (x0 + w * 0.9, f)],
                    BLACK.stroke_width(3),
                )))?;
            }
        }
    }
    chart.plotting_area().draw(&PathElement::new(
        vec![(0.0, 0.0), (ng as f64, 0.0)],
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}
