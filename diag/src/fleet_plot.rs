//! The picture of `make demo-scale`: a fleet of gateways behind HAProxy over time, as one SVG
//! (1000×620), drawn with the same `plotters` SVG backend as `diag demo --plot`
//! ([`crate::demo::plot`]).
//!
//! xtask records the [`Timeline`] (it runs the steps and samples each instance once a second)
//! and calls [`write()`]; the drawing lives here, beside diag's other picture, so the workspace
//! has one place that knows plotters.
//!
//! # What the picture shows
//!
//! - **Top, streams per instance**: each gateway's `gateway_live_streams`, one line each. An
//!   even spread is lines close together; a starved or restarting instance's line drops to
//!   zero while the others rise to carry its share.
//! - **Bottom, readiness and routing**, one row per instance, coloured per second:
//!   green when its `/readyz` says 200 and HAProxy routes to it; orange when it says 503 and
//!   HAProxy still routes to it (the two checks HAProxy waits for); red when HAProxy took it
//!   out; blue when it is ready again and HAProxy has not yet counted the three good checks
//!   it needs to route to it again.
//! - The steps are shaded bands across both panels, named on top with their verdicts.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One instance's colour in the top panel, by its index.
const LINES: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const READY: RGBColor = RGBColor(44, 160, 44);
const STILL_ROUTED: RGBColor = RGBColor(255, 127, 14);
const OUT: RGBColor = RGBColor(214, 39, 40);
const RISING: RGBColor = RGBColor(31, 119, 180);
const BAND: RGBColor = RGBColor(235, 235, 235);
const FONT: &str = "sans-serif";

/// Width and height, in SVG pixels.
pub const SIZE: (u32, u32) = (1000, 620);

/// What xtask recorded: a point per second, and the steps.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The instances' names (`gw1`, ...), in the order of each point's vectors.
    pub instances: Vec<String>,
    pub points: Vec<Point>,
    pub steps: Vec<Step>,
}

/// The fleet at one second.
#[derive(Debug, Clone, Default)]
pub struct Point {
    /// Seconds since the demo started.
    pub t: f64,
    /// Each instance's live streams; `None` when its admin plane did not answer (stopped).
    pub streams: Vec<Option<f64>>,
    /// Each instance's `/readyz` said 200.
    pub ready: Vec<bool>,
    /// HAProxy routes new requests to it (its status is `UP`).
    pub routed: Vec<bool>,
}

/// One step of the demo.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub name: String,
    pub from: f64,
    pub to: f64,
    /// `PASS`, `FAIL` or `SKIPPED`.
    pub verdict: String,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Renders the picture and writes it to `path`.
pub fn write(path: &Path, timeline: &Timeline) -> anyhow::Result<()> {
    let svg = render(timeline)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}

/// The picture as SVG text.
pub fn render(timeline: &Timeline) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, timeline).map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    }
    Ok(svg)
}

fn draw(root: &Area<'_>, timeline: &Timeline) -> Drawn {
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(50);
    let title = format!(
        "make demo-scale: {} gateways behind HAProxy, streams and readiness per second",
        timeline.instances.len()
    );
    let style = TextStyle::from((FONT, 20).into_font().style(FontStyle::Bold))
        .pos(Pos::new(HPos::Center, VPos::Top));
    head.draw(&Text::new(title, ((SIZE.0 / 2) as i32, 12), style))?;
    let x_max = timeline
        .points
        .iter()
        .map(|p| p.t)
        .chain(timeline.steps.iter().map(|s| s.to))
        .fold(1.0, f64::max);
    let (top, bottom) = body.split_vertically(360);
    streams_panel(&top, timeline, x_max)?;
    readiness_panel(&bottom, timeline, x_max)
}

fn streams_panel(area: &Area<'_>, timeline: &Timeline, x_max: f64) -> Drawn {
    let y_max = timeline
        .points
        .iter()
        .flat_map(|p| p.streams.iter().flatten())
        .fold(1.0_f64, |a, &b| a.max(b))
        * 1.25;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .margin_top(24)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .y_desc("live streams")
        .x_desc("seconds")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for step in &timeline.steps {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(step.from, 0.0), (step.to, y_max)],
            BAND.mix(0.6).filled(),
        )))?;
        let label = format!("{} {}", step.name, step.verdict);
        let style = (FONT, 12).into_font().color(&BLACK);
        chart.draw_series(std::iter::once(Text::new(
            label,
            (step.from + 0.5, y_max * 0.98),
            style,
        )))?;
    }
    for (k, name) in timeline.instances.iter().enumerate() {
        let color = LINES[k % LINES.len()];
        let points: Vec<(f64, f64)> = timeline
            .points
            .iter()
            .map(|p| (p.t, p.streams.get(k).copied().flatten().unwrap_or(0.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// One instance's state at one point: what HAProxy and its `/readyz` said.
fn state_color(ready: bool, routed: bool) -> RGBColor {
    match (ready, routed) {
        (true, true) => READY,
        (false, true) => STILL_ROUTED,
        (false, false) => OUT,
        (true, false) => RISING,
    }
}

fn readiness_panel(area: &Area<'_>, timeline: &Timeline, x_max: f64) -> Drawn {
    let rows = timeline.instances.len().max(1) as f64;
    let (chart_area, legend) = area.split_vertically(170);
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(10)
        .x_label_area_size(24)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..rows)?;
    let names = timeline.instances.clone();
    chart
        .configure_mesh()
        .disable_mesh()
        .y_labels(timeline.instances.len())
        .y_label_formatter(&|y: &f64| {
            let row = (rows - y.floor() - 1.0).max(0.0) as usize;
            names.get(row).cloned().unwrap_or_default()
        })
        .draw()?;
    for (k, _) in timeline.instances.iter().enumerate() {
        let y0 = rows - k as f64 - 0.85;
        let y1 = rows - k as f64 - 0.15;
        for pair in timeline.points.windows(2) {
            let (p, next) = (&pair[0], &pair[1]);
            let ready = p.ready.get(k).copied().unwrap_or(false);
            let routed = p.routed.get(k).copied().unwrap_or(false);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(p.t, y0), (next.t, y1)],
                state_color(ready, routed).filled(),
            )))?;
        }
    }
    let entries = [
        (READY, "/readyz 200, HAProxy routes to it"),
        (STILL_ROUTED, "/readyz 503, HAProxy still routes (fall 2)"),
        (OUT, "out of rotation (HAProxy DOWN)"),
        (RISING, "/readyz 200, HAProxy not yet back (rise 3)"),
    ];
    for (i, (color, text)) in entries.iter().enumerate() {
        let x = 60 + 235 * i as i32;
        legend.draw(&Rectangle::new([(x, 8), (x + 14, 22)], color.filled()))?;
        let style = (FONT, 12).into_font().color(&BLACK);
        legend.draw(&Text::new(text.to_string(), (x + 20, 9), style))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_draws_every_instance_and_step() {
        let point = |t: f64, ready: bool| Point {
            t,
            streams: vec![Some(8.0), Some(7.0), None],
            ready: vec![true, true, ready],
            routed: vec![true, true, ready],
        };
        let timeline = Timeline {
            instances: vec!["gw1".into(), "gw2".into(), "gw3".into()],
            points: vec![point(0.0, true), point(1.0, false), point(2.0, true)],
            steps: vec![Step {
                name: "b.starve".into(),
                from: 0.0,
                to: 2.0,
                verdict: "PASS".into(),
            }],
        };
        let svg = render(&timeline).expect("drawn");
        assert!(svg.starts_with("<svg"));
        for needle in ["gw1", "gw3", "b.starve PASS", "out of rotation"] {
            assert!(svg.contains(needle), "{needle} missing");
        }
    }
}
