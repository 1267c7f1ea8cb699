//! Plots of analysis results, each written as PNG and SVG: patching heatmaps, per-head patching
//! grids, probe and logit-lens curves, weight-diff and behaviour bars. Owns drawing only: every
//! figure is plain data already computed by an analysis; nothing here runs a model.
//!
//! Text uses DejaVu Sans embedded in the binary (the `dejavu` crate; licence in
//! `LICENSES/DejaVu.txt`), so no system fonts are needed.

use crate::io::fsio;
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The font family name the figures ask plotters for.
const FONT: &str = "sans-serif";

/// Register the embedded DejaVu Sans once per process (plotters' font table is global).
fn fonts() -> Result<()> {
    static REG: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REG.get_or_init(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ] {
            register_font(FONT, style, bytes)
                .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())?;
        }
        Ok(())
    })
    .clone()
    .map_err(Error::input)
}

/// A drawing result on backend `DB`.
pub type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A figure: plain data that checks itself and draws itself on any plotters backend.
pub trait Figure {
    /// The title drawn at the top (also named in errors).
    fn title(&self) -> String;
    /// Size in pixels (width, height); the SVG uses the same units.
    fn size(&self) -> (u32, u32);
    /// Reject empty, ragged or non-finite data with a one-line reason.
    fn check(&self) -> std::result::Result<(), String>;
    /// Draw on `root` (called only after [`Figure::check`] passed).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// A rendered figure: PNG bytes and SVG text.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// PNG file contents (8-bit RGB).
    pub png: Vec<u8>,
    /// SVG document.
    pub svg: String,
}

/// Render `fig` in memory as PNG and SVG.
pub fn render(fig: &impl Figure) -> Result<Rendered> {
    fonts()?;
    let title = fig.title();
    fig.check()
        .map_err(|m| Error::input(format!("plot '{title}': {m}")))?;
    let draw_err = |e: String| Error::input(format!("plot '{title}': cannot draw: {e}"));
    let (w, h) = fig.size();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        fig.draw(&root).map_err(|e| draw_err(e.to_string()))?;
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3]; // 3 bytes a pixel: RGB
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        fig.draw(&root).map_err(|e| draw_err(e.to_string()))?;
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    Ok(Rendered {
        png: encode_png(&rgb, w, h).map_err(draw_err)?,
        svg,
    })
}

/// Encode an 8-bit RGB buffer as PNG in memory (plotters' own encoder only writes to a path,
/// which would not be atomic).
fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Figures are flat colours on white: the slow, strong settings shrink them ~2× for a few
    // milliseconds each.
    enc.set_compression(png::Compression::Best);
    enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut wr = enc.write_header().map_err(|e| e.to_string())?;
    wr.write_image_data(rgb).map_err(|e| e.to_string())?;
    wr.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// The two files a figure with path stem `stem` goes to: `{stem}.png` and `{stem}.svg`.
pub fn paths(stem: &Path) -> (PathBuf, PathBuf) {
    let with_ext = |ext: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(format!(".{ext}"));
        PathBuf::from(s)
    };
    (with_ext("png"), with_ext("svg"))
}

/// Render `fig` and write `{stem}.png` and `{stem}.svg` as one result (`fsio::write_files`):
/// neither is overwritten without `force`, and neither is written unless both can be.
/// Returns the two paths.
pub fn write(fig: &impl Figure, stem: &Path, force: bool) -> Result<(PathBuf, PathBuf)> {
    let (png_path, svg_path) = paths(stem);
    // An existing output is reported before the drawing is attempted.
    fsio::check_clobber(&png_path, force)?;
    fsio::check_clobber(&svg_path, force)?;
    let r = render(fig)?;
    fsio::write_files(&[(&png_path, &r.png), (&svg_path, r.svg.as_bytes())], force)?;
    Ok((png_path, svg_path))
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Activation patching over layer × position: `values[layer][position]`.
#[derive(Clone, Debug)]
pub struct PatchHeatmap {
    /// Checkpoint name.
    pub checkpoint: String,
    /// Contrast (e.g. "S1 [x]/_").
    pub contrast: String,
    /// What was patched (e.g. "resid_pre").
    pub hook: String,
    /// Metric (e.g. "normalised logit diff E−H @10").
    pub metric: String,
    /// "denoising" or "noising".
    pub direction: String,
    /// Row labels, bottom to top (one per layer).
    pub layers: Vec<String>,
    /// Column labels (the prompt's tokens, one per position).
    pub tokens: Vec<String>,
    /// `[layer][position]`.
    pub values: Vec<Vec<f64>>,
    /// A fixed symmetric colour limit (values beyond it are drawn at full colour), so maps of
    /// one kind share a scale; None: the largest |value|.
    pub limit: Option<f64>,
}

/// Per-head activation patching: one panel per layer, position × head:
/// `values[layer][position][head]`.
#[derive(Clone, Debug)]
pub struct HeadGrid {
    /// Checkpoint name.
    pub checkpoint: String,
    /// Contrast.
    pub contrast: String,
    /// Metric.
    pub metric: String,
    /// "denoising" or "noising".
    pub direction: String,
    /// Column labels (the prompt's tokens, one per position).
    pub tokens: Vec<String>,
    /// `[layer][position][head]`.
    pub values: Vec<Vec<Vec<f64>>>,
    /// A fixed symmetric colour limit, as [`PatchHeatmap::limit`].
    pub limit: Option<f64>,
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend entry.
    pub label: String,
    /// One value per x tick.
    pub values: Vec<f64>,
    /// Dashed (control tasks, transfers, reference levels).
    pub dashed: bool,
    /// Dotted (null baselines and chance; wins over `dashed`).
    pub dotted: bool,
    /// Palette index (lines of one checkpoint share it).
    pub color: usize,
    /// The 95 % interval per x tick (lower, upper), drawn as a band.
    pub band: Option<(Vec<f64>, Vec<f64>)>,
}

/// Probe accuracy and AUROC per layer: two panels sharing the legend.
#[derive(Clone, Debug)]
pub struct ProbeCurves {
    /// Title.
    pub title: String,
    /// x tick labels (one per layer, e.g. "0".."3" or hook names).
    pub layers: Vec<String>,
    /// Held-out accuracy lines (checkpoints solid; control task and null baselines dashed).
    pub accuracy: Vec<Line>,
    /// Held-out AUROC lines, same conventions.
    pub auroc: Vec<Line>,
}

/// Logit lens: probability of chosen tokens per layer, one line per token (and checkpoint).
#[derive(Clone, Debug)]
pub struct LensCurves {
    /// Title.
    pub title: String,
    /// x tick labels (one per residual point, e.g. "embed", "0", "1", ...).
    pub layers: Vec<String>,
    /// Probability lines, values in [0, 1].
    pub lines: Vec<Line>,
}

/// A dose–response: a sampled rate per x tick (the multiples α of a steering direction), one
/// line per steered layer, with dashed reference levels.
#[derive(Clone, Debug)]
pub struct DoseCurves {
    /// Title.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label (a rate in [0, 1]).
    pub y_label: String,
    /// x tick labels.
    pub ticks: Vec<String>,
    /// Lines, values in [0, 1].
    pub lines: Vec<Line>,
}

/// A 95 % interval `(lo, hi)` drawn as an error bar.
pub type Span = (f64, f64);

/// Error bars cell for cell as a panel's values (`[group][series]`), `None` where none.
pub type ErrBars = Vec<Vec<Option<Span>>>;

/// Grouped bars on one axis: `values[group][series]`, `None` where a series has no bar in a
/// group (present bars are packed together).
#[derive(Clone, Debug)]
pub struct Bars {
    /// Title.
    pub title: String,
    /// y axis label.
    pub y_label: String,
    /// x groups.
    pub groups: Vec<String>,
    /// Series (legend entries, one colour each).
    pub series: Vec<String>,
    /// `[group][series]`.
    pub values: Vec<Vec<Option<f64>>>,
    /// 95 % intervals, `[group][series]`, drawn as error bars.
    pub err: Option<ErrBars>,
    /// The seed floor of each bar, `[group][series]`, drawn as a black line across it.
    pub floor: Option<Vec<Vec<Option<f64>>>>,
}

/// Behaviour metrics by checkpoint: one small panel per metric (each with its own scale), one
/// bar per checkpoint: `values[metric][checkpoint]`.
#[derive(Clone, Debug)]
pub struct BehaviourBars {
    /// Title.
    pub title: String,
    /// Metric names (panel captions).
    pub metrics: Vec<String>,
    /// Checkpoint names (legend entries).
    pub checkpoints: Vec<String>,
    /// `[metric][checkpoint]`, `None` where a metric does not apply.
    pub values: Vec<Vec<Option<f64>>>,
    /// 95 % intervals `[metric][checkpoint]`, drawn as error bars.
    pub err: Option<ErrBars>,
}

/// A figure of any kind, for code that queues figures of several kinds (the report) and renders
/// them later ([`Figure`] is generic, so the kinds are listed).
#[derive(Clone, Debug)]
pub enum AnyFigure {
    /// A patching heatmap.
    Heat(PatchHeatmap),
    /// A per-head patching grid.
    Head(HeadGrid),
    /// Probe curves.
    Probe(ProbeCurves),
    /// Logit-lens curves.
    Lens(LensCurves),
    /// Grouped bars.
    Bars(Bars),
    /// Behaviour panels.
    Behaviour(BehaviourBars),
    /// A steering dose–response.
    Dose(DoseCurves),
}

impl AnyFigure {
    /// Render as PNG and SVG ([`render`]).
    pub fn render(&self) -> Result<Rendered> {
        match self {
            AnyFigure::Heat(f) => render(f),
            AnyFigure::Head(f) => render(f),
            AnyFigure::Probe(f) => render(f),
            AnyFigure::Lens(f) => render(f),
            AnyFigure::Bars(f) => render(f),
            AnyFigure::Behaviour(f) => render(f),
            AnyFigure::Dose(f) => render(f),
        }
    }
    /// Render and write `{stem}.png` and `{stem}.svg` ([`write`]).
    pub fn write(&self, stem: &Path, force: bool) -> Result<(PathBuf, PathBuf)> {
        match self {
            AnyFigure::Heat(f) => write(f, stem, force),
            AnyFigure::Head(f) => write(f, stem, force),
            AnyFigure::Probe(f) => write(f, stem, force),
            AnyFigure::Lens(f) => write(f, stem, force),
            AnyFigure::Bars(f) => write(f, stem, force),
            AnyFigure::Behaviour(f) => write(f, stem, force),
            AnyFigure::Dose(f) => write(f, stem, force),
        }
    }
}

mod draw;
mod kinds;
