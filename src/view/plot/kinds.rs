//! Each figure kind's `Figure` impl: its title, size, data check and drawing from the panels
//! of `draw`. Must not know what an analysis is: only plot data.

use super::draw::*;
use super::*;

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
        let lim = self
            .limit
            .unwrap_or_else(|| sym_limit(self.values.iter().flatten()));
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
        let lim = self
            .limit
            .unwrap_or_else(|| sym_limit(self.values.iter().flatten().flatten()));
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

/// Line charts of values in [0, 1] over categorical ticks with a legend (the lens and the
/// steering dose–response share them).
fn unit_lines_size(ticks: usize, lines: &[Line]) -> (u32, u32) {
    let lw = legend_width(lines.iter().map(|l| l.label.len()));
    (
        (PANEL.0 + 120).max(110 + 60 * ticks as u32) + lw,
        PANEL.1 + 40,
    )
}

fn unit_lines_check(
    ticks: (&str, &[String]),
    lines: &[Line],
    noun: &str,
) -> std::result::Result<(), String> {
    check_labels(ticks.0, ticks.1)?;
    check_lines(lines, ticks.1.len())?;
    if let Some(l) = lines
        .iter()
        .find(|l| l.values.iter().any(|&p| !(0.0..=1.0).contains(&p)))
    {
        return Err(format!("line '{}' has a {noun} outside [0, 1]", l.label));
    }
    Ok(())
}

fn unit_lines_draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    ticks: &[String],
    axes: (&str, &str),
    lines: &[Line],
) -> DrawResult<DB> {
    let area = titled(root, title)?;
    let lw = legend_width(lines.iter().map(|l| l.label.len()));
    let (w, _) = area.dim_in_pixel();
    let (a, leg) = area.split_horizontally(w - lw);
    line_panel(&a, "", ticks, axes, 0.0..1.02, lines)?;
    legend(&leg, &line_entries(lines))
}

impl Figure for LensCurves {
    fn title(&self) -> String {
        self.title.clone()
    }
    fn size(&self) -> (u32, u32) {
        unit_lines_size(self.layers.len(), &self.lines)
    }
    fn check(&self) -> std::result::Result<(), String> {
        unit_lines_check(("layers", &self.layers), &self.lines, "probability")
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let axes = ("residual stream after layer", "probability");
        unit_lines_draw(root, &self.title, &self.layers, axes, &self.lines)
    }
}

impl Figure for DoseCurves {
    fn title(&self) -> String {
        self.title.clone()
    }
    fn size(&self) -> (u32, u32) {
        unit_lines_size(self.ticks.len(), &self.lines)
    }
    fn check(&self) -> std::result::Result<(), String> {
        unit_lines_check(("ticks", &self.ticks), &self.lines, "rate")
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let axes = (self.x_label.as_str(), self.y_label.as_str());
        unit_lines_draw(root, &self.title, &self.ticks, axes, &self.lines)
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
        let marks = BarMarks {
            err: self.err.as_deref(),
            floor: self.floor.as_deref(),
        };
        bar_panel(&a, None, &self.groups, &self.y_label, &self.values, marks)?;
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
            let err = self.err.as_ref().map(|e| vec![e[k].clone()]);
            let marks = BarMarks {
                err: err.as_deref(),
                floor: None,
            };
            bar_panel(
                panel,
                Some(&self.metrics[k]),
                &[String::new()],
                "",
                std::slice::from_ref(&self.values[k]),
                marks,
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
