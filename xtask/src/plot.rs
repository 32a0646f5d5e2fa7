//! test-cluster's plots: latency of every operation and throughput per second over the run,
//! with the fault windows shaded (plotters, PNG).

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One operation: when it was sent (s since the start), how long it took (ms), and its outcome
/// (`ok`, `fail`, `unknown`).
pub(crate) struct Point {
    pub at: f64,
    pub latency_ms: f64,
    pub outcome: &'static str,
}

/// One fault window (s since the start).
pub(crate) struct Span {
    pub start: f64,
    pub end: f64,
    pub what: String,
}

const FONT: &str = "sans-serif";
const OUTCOMES: [(&str, RGBColor); 3] = [
    ("ok", RGBColor(30, 130, 60)),
    ("fail", RGBColor(230, 140, 0)),
    ("unknown", RGBColor(200, 30, 30)),
];

/// The shade of a fault kind (the first word of its description).
fn shade(what: &str) -> RGBColor {
    match what.split([' ', ',', ':']).next().unwrap_or("") {
        "partition" | "lagger" => RGBColor(70, 110, 220),
        "kill" | "kill-leader" => RGBColor(220, 50, 50),
        "pause" => RGBColor(240, 160, 20),
        _ => RGBColor(150, 70, 200),
    }
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font parses; if it ever did not, plots would lack their text only.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw the plot: {e}")
}

/// `latency.png`: every operation's latency (log scale) at the time it was sent, coloured by
/// outcome.
pub(crate) fn latency(path: &Path, points: &[Point], spans: &[Span], end: f64) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = points.iter().map(|p| p.latency_ms).fold(10.0f64, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency of every operation", (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end.max(1.0), (0.05f64..top).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("latency (ms)")
        .label_style((FONT, 13))
        .draw()
        .map_err(err)?;
    draw_spans(&mut chart, spans, 0.05, top, &root)?;
    for (outcome, color) in OUTCOMES {
        let n = points.iter().filter(|p| p.outcome == outcome).count();
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.outcome == outcome)
                    .map(|p| Circle::new((p.at, p.latency_ms.max(0.05)), 1, color.filled())),
            )
            .map_err(err)?
            .label(format!("{outcome} ({n})"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], color.filled()));
    }
    legend(&mut chart)?;
    root.present().map_err(err)
}

/// `throughput.png`: operations completed per second, by outcome.
pub(crate) fn throughput(path: &Path, points: &[Point], spans: &[Span], end: f64) -> Result<()> {
    register_font();
    let seconds = end.ceil().max(1.0) as usize;
    let mut buckets = vec![[0u32; 3]; seconds + 1];
    for p in points {
        let done = ((p.at + p.latency_ms / 1000.0) as usize).min(seconds);
        if let Some(i) = OUTCOMES.iter().position(|(o, _)| *o == p.outcome) {
            buckets[done][i] += 1;
        }
    }
    let top = buckets
        .iter()
        .flat_map(|b| b.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(10) as f64
        * 1.15;
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("operations completed per second", (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end.max(1.0), 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("operations / s")
        .label_style((FONT, 13))
        .draw()
        .map_err(err)?;
    draw_spans(&mut chart, spans, 0.0, top, &root)?;
    for (i, (outcome, color)) in OUTCOMES.into_iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                buckets
                    .iter()
                    .enumerate()
                    .map(|(s, b)| (s as f64 + 0.5, f64::from(b[i]))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(outcome)
            .legend(move |(x, y)| Rectangle::new([(x, y - 2), (x + 14, y + 2)], color.filled()));
    }
    legend(&mut chart)?;
    root.present().map_err(err)
}

type Chart<'a, 'b, Y> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

/// Shades every fault window and writes what it was at its top.
fn draw_spans<Y>(
    chart: &mut Chart<'_, '_, Y>,
    spans: &[Span],
    bottom: f64,
    top: f64,
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
) -> Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(spans.iter().map(|s| {
            Rectangle::new(
                [(s.start, bottom), (s.end, top)],
                shade(&s.what).mix(0.15).filled(),
            )
        }))
        .map_err(err)?;
    // An empty series per fault kind present, for the legend.
    let mut kinds: Vec<&str> = spans
        .iter()
        .map(|s| s.what.split([' ', ',', ':']).next().unwrap_or(""))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let color = shade(kind);
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(err)?
            .label(kind)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.3).filled())
            });
    }
    // Each window is named at its start, on the first of two rows with room for the name; a
    // window with no room (a long run's crowded stretch) goes unnamed rather than overprinted:
    // its shade still shows its kind and `report.md` lists every window.
    let style = (FONT, 12).into_font();
    let mut free_from = [i32::MIN; 2];
    for s in spans {
        let (x, y) = chart.backend_coord(&(s.start, top));
        let label = s.what.split(':').next().unwrap_or(&s.what);
        let label = label.replace("partition, ", "");
        let width = root
            .estimate_text_size(&label, &TextStyle::from(style.clone()))
            .map_or(label.len() as i32 * 7, |(w, _)| w as i32);
        let Some(row) = free_from.iter().position(|f| *f <= x) else {
            continue;
        };
        free_from[row] = x + width + 6;
        root.draw(&Text::new(
            label,
            (x + 2, y + 4 + 14 * row as i32),
            style.color(&shade(&s.what)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn legend<'a, 'b: 'a, Y>(chart: &mut Chart<'a, 'b, Y>) -> Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}
