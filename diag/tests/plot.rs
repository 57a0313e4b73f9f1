//! `diag demo --plot` end to end: a real mock, a real broken gateway with a 2-thread pool, the
//! real binary for 3 s, and the SVG it leaves behind. The picture's content is checked by its
//! text (series names, title, verdict) and by its shapes (lines and probe points were drawn).

mod support;

use support::{Mock, diag, gateway};

/// A fresh path for a picture, in a directory that does not exist yet.
fn plot_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("diag-plot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("pictures").join(format!("{name}.svg"))
}

#[test]
fn a_broken_run_is_drawn_with_every_series() {
    let mock = Mock::start();
    let gateway = gateway("broken", &mock);
    let url = gateway.url();
    let plot = plot_path("broken");
    let plot_arg = plot.to_str().expect("utf-8 path");
    let run = diag(&[
        "demo",
        "--gateway",
        &url,
        "--streams",
        "4",
        "--duration",
        "3s",
        "--stream-query",
        "chunks=6&interval_ms=300",
        "--probe-interval",
        "100ms",
        "--plot",
        plot_arg,
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains(&format!("plot written to {plot_arg}")),
        "{}",
        run.stdout
    );

    let svg = std::fs::read_to_string(&plot).expect("the picture was written");
    assert!(svg.trim_start().starts_with("<svg"), "not an SVG");
    assert!(svg.trim_end().ends_with("</svg>"), "an SVG cut short");
    for label in [
        "/debug/health-sync",
        "/debug/health-async",
        "/health",
        "running",
        "queued",
        "max_threads",
        "pool size, 2 threads",
        "flowing streams",
        "broken gateway, 4 streams for 3s",
        "EXHAUSTED",
    ] {
        assert!(svg.contains(label), "no {label:?} in the picture");
    }
    assert!(svg.contains("<polyline"), "no line drawn");
    // Each probe is a point: ~30 per endpoint in 3 s at 100 ms, and 3 legend markers.
    let points = svg.matches("<circle").count();
    assert!(points > 30, "only {points} points drawn");
}

#[test]
fn an_unwritable_plot_path_exits_1_and_names_it() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock);
    let url = gateway.url();
    // A file where the picture's directory should be.
    let blocker = plot_path("blocked");
    let parent = blocker.parent().expect("has a parent");
    std::fs::create_dir_all(parent.parent().expect("has a grandparent")).expect("scratch dir");
    std::fs::write(parent, "not a directory").expect("blocker file");
    let run = diag(&[
        "demo",
        "--gateway",
        &url,
        "--streams",
        "1",
        "--duration",
        "500ms",
        "--plot",
        blocker.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("cannot create") && run.stderr.contains("pictures"),
        "{}",
        run.stderr
    );
}
