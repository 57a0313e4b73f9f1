//! `diag demo --plot PATH`: the run as one SVG picture (1000×700), drawn with `plotters`' SVG
//! backend from the [`Timeline`](crate::demo::timeline::Timeline) the demo recorded.
//!
//! # What the picture shows
//!
//! The title names the gateway's mode, the load and the verdict with its reason. Below it, two
//! panels share the x axis, seconds since `diag` started measuring (the streams open at 0):
//!
//! - **Top, health-probe latency**, in milliseconds on a log scale, because the values run from
//!   a fraction of a millisecond to the probe timeout. Each point is one probe, placed when it
//!   was *sent*, at the latency it then saw:
//!   - `/debug/health-sync` (red) answers from a blocking-pool job, so it waits for a free
//!     pool thread;
//!   - `/debug/health-async` (blue) answers on an async worker and needs no pool thread;
//!   - `/health` (orange) times a trivial pool job but bounds its wait (1 s in the gateway)
//!     and then answers `degraded`;
//!   - `/readyz` (cyan, only with an admin plane) is answered by the gateway's admin thread,
//!     which judges the pool from outside: it stays near a millisecond in both modes, and
//!     what it *says* is in the reason line and the report.
//!
//!   A probe that got no answer within `--probe-timeout` is a cross on the dashed timeout line,
//!   not a gap: leaving it out would make a stalled gateway look fast. The second dashed line is
//!   `--sync-budget`, the sync latency the verdict tolerates.
//! - **Bottom, blocking pool and streams**: jobs *running* on pool threads (purple), the pool
//!   size `max_threads` (dashed), streams *flowing* at that moment (green, out of the number
//!   opened), all on the left axis; and jobs *queued* for a pool thread (shaded), on the right
//!   axis, because a starved pool's queue grows to many times the pool size.
//!
//! # How to read it
//!
//! **A starved pool** draws the sync line climbing to the timeout within a second and staying
//! there, a row of crosses, while the async line stays flat under a millisecond: the process is
//! alive and its event loop is idle, but everything that needs a pool thread waits. `/health`
//! sits at its 1 s bound. Below, `running` is pinned at `max_threads`, `flowing` stops at the
//! pool size however many streams were opened, and the queue grows for the whole run (each
//! sync probe adds a job that cannot be cancelled). That is the signature of exhaustion: sync
//! at the ceiling, async on the floor.
//!
//! A sloping end is the release, not a recovery: when the run ends diag drops its streams, the
//! pool frees up, and the probes still waiting are answered, each after the time that was left.
//!
//! **A healthy gateway** draws all three probe lines flat near the bottom, `running` near zero
//! (the only pool jobs are the probes' own), nothing queued, and every stream flowing, above
//! the pool size: streaming does not hold pool threads.
//!
//! # Why plotters, and why only its SVG backend
//!
//! Its SVG backend writes text as `<text>` elements that the viewer renders, so it needs no font
//! files: the crate is built without `ttf` (font-kit) and without the bitmap backends, and pulls
//! in no system library. Its text sizes are estimates, good enough to lay out axis labels.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::demo::report::Verdict;
use crate::demo::timeline::{Latency, Series};
use crate::probe::Endpoint;

/// Width and height of the picture, in SVG pixels.
pub const SIZE: (u32, u32) = (1000, 700);

const FONT: &str = "sans-serif";
const SYNC: RGBColor = RGBColor(214, 39, 40);
const ASYNC: RGBColor = RGBColor(31, 119, 180);
const HEALTH: RGBColor = RGBColor(255, 127, 14);
const READYZ: RGBColor = RGBColor(23, 190, 207);
const RUNNING: RGBColor = RGBColor(148, 103, 189);
const QUEUED: RGBColor = RGBColor(140, 86, 75);
const FLOWING: RGBColor = RGBColor(44, 160, 44);
const REFERENCE: RGBColor = RGBColor(90, 90, 90);

/// Width of the legend column on the right of both panels.
const LEGEND_WIDTH: u32 = 220;

/// What the picture says about the run besides the series.
#[derive(Debug, Clone)]
pub struct PlotInfo {
    /// The gateway's `--mode` (`broken`, `fixed`, `unknown`).
    pub mode: String,
    /// Streams opened.
    pub streams: u32,
    pub duration: Duration,
    pub verdict: Verdict,
    /// The verdict's reason line.
    pub reason: String,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub sync_budget: Duration,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Renders the picture and writes it to `path`, creating the file's directory if needed.
pub fn write(path: &Path, series: &Series, info: &PlotInfo) -> anyhow::Result<()> {
    let svg = render(series, info)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}

/// The picture as SVG text.
pub fn render(series: &Series, info: &PlotInfo) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, series, info).map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    }
    Ok(svg)
}

fn draw(root: &Area<'_>, series: &Series, info: &PlotInfo) -> Drawn {
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(78);
    header(&head, series, info)?;
    let (top, bottom) = body.split_vertically(350);
    let x_max = x_max(series, info);
    let (chart, legend) = top.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    latency_panel(&chart, &legend, series, info, x_max)?;
    let (chart, legend) = bottom.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    pool_panel(&chart, &legend, series, info, x_max)
}

fn header(area: &Area<'_>, series: &Series, info: &PlotInfo) -> Drawn {
    let center = (SIZE.0 / 2) as i32;
    let title = format!(
        "diag demo: {} gateway, {} streams for {}",
        info.mode,
        info.streams,
        short(info.duration)
    );
    let style = TextStyle::from((FONT, 24).into_font().style(FontStyle::Bold))
        .pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(title, (center, 8), style))?;
    let color = match info.verdict {
        Verdict::Exhausted => SYNC,
        Verdict::Healthy => FLOWING,
        // Neither red nor green: a failed run says nothing about the pool either way.
        Verdict::Failed => REFERENCE,
    };
    let mut reason = format!("{}: {}", info.verdict.word(), info.reason);
    if series.dropped > 0 {
        reason.push_str(&format!(" (plot truncated: {} points)", series.dropped));
    }
    let style = (FONT, 14)
        .into_font()
        .color(&color)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (row, line) in wrap(&reason, REASON_WIDTH).into_iter().take(2).enumerate() {
        let y = 38 + 18 * i32::try_from(row).unwrap_or(0);
        area.draw(&Text::new(line, (center, y), style.clone()))?;
    }
    Ok(())
}

/// Characters of the reason line that fit across the picture at its font size.
const REASON_WIDTH: usize = 125;

/// Splits the reason at its `; ` separators into lines of at most `width` characters (a
/// single longer clause is cut, with `...`).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for clause in text.split("; ") {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 2 + clause.chars().count() <= width => {
                line.push_str("; ");
                line.push_str(clause);
            }
            _ => lines.push(clause.to_owned()),
        }
    }
    for line in &mut lines {
        if line.chars().count() > width {
            *line = line.chars().take(width - 3).collect::<String>() + "...";
        }
    }
    lines
}

/// The right end of the time axis: the run, or the last point if one came later.
fn x_max(series: &Series, info: &PlotInfo) -> f64 {
    let probes = series.probes.iter().flatten().map(|p| p.at_s);
    let pool = series.pool.iter().map(|p| p.at_s);
    let flowing = series.flowing.iter().map(|p| p.at_s);
    probes
        .chain(pool)
        .chain(flowing)
        .fold(info.duration.as_secs_f64(), f64::max)
        .max(0.1)
}

fn latency_panel(
    chart_area: &Area<'_>,
    legend_area: &Area<'_>,
    series: &Series,
    info: &PlotInfo,
    x_max: f64,
) -> Drawn {
    let timeout_ms = ms(info.probe_timeout);
    let budget_ms = ms(info.sync_budget);
    let drawn = || {
        series
            .probes
            .iter()
            .flatten()
            .filter_map(|p| p.latency.drawn_ms())
    };
    // From below the fastest answer (at most 0.1 ms) to above the timeout: the same decades in
    // every picture unless a value falls outside, so a broken and a fixed run compare by eye.
    let y_min = drawn().fold(0.1, f64::min).max(1e-3) * 0.7;
    let y_max = drawn().fold(timeout_ms.max(budget_ms), f64::max) * 3.0;

    let mut chart = ChartBuilder::on(chart_area)
        .caption(
            format!(
                "health-probe latency, one point per probe (every {}), log scale",
                short(info.probe_interval)
            ),
            (FONT, 16),
        )
        .margin(8)
        .margin_left(12)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .y_desc("latency")
        .y_labels(8)
        .y_label_formatter(&|v| format_ms(*v))
        .x_label_formatter(&|v| format!("{v}s"))
        .label_style((FONT, 13))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;

    let dashed = REFERENCE.stroke_width(1);
    for level in [timeout_ms, budget_ms] {
        chart.draw_series(DashedLineSeries::new(
            [(0.0, level), (x_max, level)],
            6,
            4,
            dashed,
        ))?;
    }

    let mut legend = Legend::new(legend_area);
    let mut lines = vec![
        (Endpoint::HealthSync, SYNC, "needs a pool thread"),
        (Endpoint::HealthAsync, ASYNC, "async worker, no pool"),
        (Endpoint::Health, HEALTH, "waits up to 1s for the pool"),
    ];
    if !series.probes(Endpoint::Readyz).is_empty() {
        lines.push((Endpoint::Readyz, READYZ, "admin plane, its own thread"));
    }
    for (endpoint, color, note) in lines {
        let mut points: Vec<(f64, f64)> = series
            .probes(endpoint)
            .iter()
            .filter_map(|p| p.latency.drawn_ms().map(|ms| (p.at_s, ms.max(y_min))))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(2))?;
        let timeouts = series
            .probes(endpoint)
            .iter()
            .filter(|p| matches!(p.latency, Latency::TimedOut(_)));
        chart.draw_series(
            timeouts.map(|p| Cross::new((p.at_s, timeout_ms), 5, color.stroke_width(2))),
        )?;
        legend.entry(Glyph::Line(color), endpoint.path(), Some(note))?;
    }
    legend.entry(
        Glyph::Cross(REFERENCE),
        "no answer: a timeout",
        Some("drawn at the timeout"),
    )?;
    legend.entry(
        Glyph::Dashed(REFERENCE, 1),
        &format!("probe timeout {}", short(info.probe_timeout)),
        None,
    )?;
    legend.entry(
        Glyph::Dashed(REFERENCE, 1),
        &format!("sync budget {}", short(info.sync_budget)),
        None,
    )?;
    Ok(())
}

fn pool_panel(
    chart_area: &Area<'_>,
    legend_area: &Area<'_>,
    series: &Series,
    info: &PlotInfo,
    x_max: f64,
) -> Drawn {
    let max_threads = series.pool.iter().map(|p| p.max_threads).max();
    let peak = |values: &mut dyn Iterator<Item = usize>| values.max().unwrap_or(0);
    let running_max = peak(&mut series.pool.iter().map(|p| p.running));
    let flowing_max = peak(&mut series.flowing.iter().map(|p| p.flowing));
    let queued_max = peak(&mut series.pool.iter().map(|p| p.queued));
    let left_max = [
        max_threads.unwrap_or(0),
        running_max,
        flowing_max,
        info.streams as usize,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
        + 1;
    let left_max = u32::try_from(left_max).unwrap_or(u32::MAX);
    // At least the left axis's height, so that an empty queue stays a flat line at the bottom
    // instead of filling a stretched axis.
    let right_max = (queued_max as f64 * 1.1).max(f64::from(left_max)).ceil();

    let mut chart = ChartBuilder::on(chart_area)
        .caption("blocking pool and streams", (FONT, 16))
        .margin(8)
        .margin_left(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0u32..left_max)?
        .set_secondary_coord(0f64..x_max, 0f64..right_max);
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("threads / streams")
        .x_label_formatter(&|v| format!("{v}s"))
        .label_style((FONT, 13))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("jobs queued")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 13))
        .draw()?;

    // Back to front: the queue's area, the flowing streams as a broad pale band, the running
    // jobs, and the pool size dashed on top: in a starved pool all three sit on one row.
    let queued = steps(series.pool.iter().map(|p| (p.at_s, p.queued as f64)));
    chart.draw_secondary_series(
        AreaSeries::new(queued, 0.0, QUEUED.mix(0.22)).border_style(QUEUED.mix(0.8)),
    )?;
    let flowing = steps(series.flowing.iter().map(|p| (p.at_s, count(p.flowing))));
    chart.draw_series(LineSeries::new(flowing, FLOWING.mix(0.55).stroke_width(7)))?;
    let running = steps(series.pool.iter().map(|p| (p.at_s, count(p.running))));
    chart.draw_series(LineSeries::new(running, RUNNING.stroke_width(3)))?;
    if let Some(max_threads) = max_threads {
        let level = u32::try_from(max_threads).unwrap_or(u32::MAX);
        chart.draw_series(DashedLineSeries::new(
            [(0.0, level), (x_max, level)],
            8,
            6,
            BLACK.stroke_width(2),
        ))?;
    }

    let mut legend = Legend::new(legend_area);
    legend.entry(
        Glyph::Solid(RUNNING),
        "running",
        Some("jobs on pool threads"),
    )?;
    let pool_size = match max_threads {
        Some(max) => format!("pool size, {max} threads"),
        None => "not observed (/debug/pool)".to_owned(),
    };
    legend.entry(Glyph::Dashed(BLACK, 2), "max_threads", Some(&pool_size))?;
    legend.entry(
        Glyph::Area(QUEUED),
        "queued (right axis)",
        Some("jobs waiting for a thread"),
    )?;
    legend.entry(
        Glyph::Thick(FLOWING),
        "flowing streams",
        Some(&format!("of {} opened", info.streams)),
    )?;
    Ok(())
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
enum Glyph {
    /// A line with point markers (a probe series).
    Line(RGBColor),
    /// A plain line (a sampled count).
    Solid(RGBColor),
    Thick(RGBColor),
    /// A dashed line of this width (a reference level).
    Dashed(RGBColor, u32),
    Cross(RGBColor),
    Area(RGBColor),
}

/// A legend in its own column beside a panel, so it never hides a series.
struct Legend<'a, 'b> {
    area: &'a Area<'b>,
    /// Pixel row of the next entry.
    y: i32,
}

impl<'a, 'b> Legend<'a, 'b> {
    fn new(area: &'a Area<'b>) -> Self {
        Self { area, y: 44 }
    }

    fn entry(&mut self, glyph: Glyph, label: &str, note: Option<&str>) -> Drawn {
        let (x, y) = (8, self.y);
        let (x1, mid) = (x + 28, x + 14);
        match glyph {
            Glyph::Line(color) => {
                self.area
                    .draw(&PathElement::new([(x, y), (x1, y)], color.stroke_width(2)))?;
                self.area.draw(&Circle::new((mid, y), 2, color.filled()))?;
            }
            Glyph::Solid(color) => {
                self.area
                    .draw(&PathElement::new([(x, y), (x1, y)], color.stroke_width(3)))?;
            }
            Glyph::Thick(color) => {
                self.area.draw(&PathElement::new(
                    [(x, y), (x1, y)],
                    color.mix(0.55).stroke_width(7),
                ))?;
            }
            Glyph::Dashed(color, width) => {
                self.area.draw(&DashedPathElement::new(
                    [(x, y), (x1, y)],
                    6,
                    4,
                    color.stroke_width(width),
                ))?;
            }
            Glyph::Cross(color) => {
                self.area
                    .draw(&Cross::new((mid, y), 5, color.stroke_width(2)))?;
            }
            Glyph::Area(color) => {
                self.area.draw(&Rectangle::new(
                    [(x, y - 6), (x1, y + 6)],
                    color.mix(0.22).filled(),
                ))?;
                self.area
                    .draw(&Rectangle::new([(x, y - 6), (x1, y + 6)], color.mix(0.8)))?;
            }
        }
        let text = |size: i32, color: RGBColor| {
            (FONT, size)
                .into_font()
                .color(&color)
                .pos(Pos::new(HPos::Left, VPos::Center))
        };
        self.area
            .draw(&Text::new(label.to_owned(), (x1 + 8, y), text(14, BLACK)))?;
        self.y += 20;
        if let Some(note) = note {
            self.area.draw(&Text::new(
                note.to_owned(),
                (x1 + 8, y + 15),
                text(12, REFERENCE),
            ))?;
            self.y += 16;
        }
        self.y += 6;
        Ok(())
    }
}

/// Points held until the next one: a sample stays true until the next sample, so the picture
/// draws steps, not slopes between samples.
fn steps<Y: Copy>(points: impl Iterator<Item = (f64, Y)>) -> Vec<(f64, Y)> {
    let mut out = Vec::new();
    let mut previous = None;
    for (x, y) in points {
        if let Some(held) = previous {
            out.push((x, held));
        }
        out.push((x, y));
        previous = Some(y);
    }
    out
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// An axis label: `0.1ms`, `10ms`, `1s`, `10s`.
fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{}s", trim(ms / 1e3))
    } else {
        format!("{}ms", trim(ms))
    }
}

/// A number without trailing zeros, at most 3 decimals: `0.1`, `10`, `2.5`.
fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

/// A flag's duration as a person writes it: `250ms`, `5s`, `1.5s`, `2m`.
fn short(duration: Duration) -> String {
    let ms = ms(duration);
    if ms < 1000.0 {
        format!("{}ms", trim(ms))
    } else if ms < 120_000.0 {
        format!("{}s", trim(ms / 1e3))
    } else {
        format!("{}m", trim(ms / 60e3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::timeline::{FlowingPoint, PoolPoint, ProbePoint};

    /// A broken-looking run of 4 s: sync climbs to the timeout, async stays flat, the pool is
    /// full and queues.
    fn starved() -> Series {
        let mut series = Series::default();
        for tick in 0..16 {
            let at_s = f64::from(tick) * 0.25;
            let sync = if tick < 2 {
                Latency::Answered(0.5 + 1000.0 * f64::from(tick))
            } else {
                Latency::TimedOut(5000.0)
            };
            let probes = [
                (Endpoint::HealthSync, sync),
                (Endpoint::HealthAsync, Latency::Answered(0.4)),
                (Endpoint::Health, Latency::Answered(1002.0)),
            ];
            for (endpoint, latency) in probes {
                series.probes[endpoint.index()].push(ProbePoint { at_s, latency });
            }
            series.pool.push(PoolPoint {
                at_s,
                running: 2,
                queued: tick as usize * 3,
                max_threads: 2,
            });
            series.flowing.push(FlowingPoint { at_s, flowing: 2 });
        }
        series
    }

    fn info() -> PlotInfo {
        PlotInfo {
            mode: "broken".into(),
            streams: 4,
            duration: Duration::from_secs(4),
            verdict: Verdict::Exhausted,
            reason: "only 2 of 4 streams flowed at once".into(),
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(5),
            sync_budget: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_synthetic_run_renders_as_svg_with_every_series_named() {
        let svg = render(&starved(), &info()).expect("renders");
        assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for label in [
            "/debug/health-sync",
            "/debug/health-async",
            "/health",
            "running",
            "queued",
            "max_threads",
            "flowing",
            "EXHAUSTED",
            "broken gateway, 4 streams for 4s",
        ] {
            assert!(svg.contains(label), "no {label:?} in the picture");
        }
        assert!(svg.contains("<polyline"), "no line drawn");
        assert!(svg.contains("<polygon"), "no queue area drawn");
        assert_eq!(
            svg.matches("<text").count(),
            svg.matches("</text>").count(),
            "every text element is closed"
        );
    }

    #[test]
    fn readyz_is_drawn_only_when_it_was_probed() {
        let svg = render(&starved(), &info()).expect("renders");
        assert!(!svg.contains("/readyz"), "no admin plane, no line");
        let mut series = starved();
        series.probes[Endpoint::Readyz.index()] = (0..16)
            .map(|tick| ProbePoint {
                at_s: f64::from(tick) * 0.25,
                latency: Latency::Answered(1.2),
            })
            .collect();
        let svg = render(&series, &info()).expect("renders");
        assert!(svg.contains("/readyz") && svg.contains("admin plane"));
    }

    #[test]
    fn an_empty_run_still_renders() {
        let svg = render(&Series::default(), &info()).expect("renders");
        assert!(svg.contains("not observed"));
    }

    #[test]
    fn the_picture_is_written_where_asked_with_its_directory() {
        let dir = std::env::temp_dir().join(format!("diag-plot-{}", std::process::id()));
        let path = dir.join("nested").join("run.svg");
        write(&path, &starved(), &info()).expect("written");
        let svg = std::fs::read_to_string(&path).expect("readable");
        assert!(svg.contains("/debug/health-sync"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn axis_labels_read_as_durations() {
        assert_eq!(format_ms(0.1), "0.1ms");
        assert_eq!(format_ms(10.0), "10ms");
        assert_eq!(format_ms(1000.0), "1s");
        assert_eq!(format_ms(10000.0), "10s");
        assert_eq!(short(Duration::from_millis(250)), "250ms");
        assert_eq!(short(Duration::from_millis(1500)), "1.5s");
        assert_eq!(short(Duration::from_secs(180)), "3m");
    }

    #[test]
    fn a_long_reason_wraps_at_its_clauses() {
        let lines = wrap("first clause; second clause; third", 30);
        assert_eq!(lines, ["first clause; second clause", "third"]);
        let lines = wrap(&"x".repeat(40), 30);
        assert_eq!(lines, [format!("{}...", "x".repeat(27))]);
    }

    #[test]
    fn samples_are_held_until_the_next_one() {
        let held = steps([(0.0, 1), (1.0, 3), (2.0, 2)].into_iter());
        assert_eq!(held, vec![(0.0, 1), (1.0, 1), (1.0, 3), (2.0, 3), (2.0, 2)]);
    }
}
