//! `tokend-bench-chart <latest.json> <out.png>`: draws the JSON that
//! bench/run.sh writes as one 1600×700 PNG with two panels.
//!
//! - Left, latency at constant rate: p50, p99 and p99.9 in ms (log) against
//!   the target req/s, one colour per scenario of `constant_rate` (validate,
//!   mixed, …), the 2 ms p99 target as a dashed red line. A point whose
//!   achieved rate fell below 95 % of its target is hollow, and the legend
//!   says what it achieved.
//! - Right, full speed: req/s per scenario of `scenarios` (log), the median
//!   as a bar with a min–max whisker over the runs, on a grey band showing
//!   the ceiling it is compared with (`baseline`, or `baseline_p16` for
//!   `_p16`), and the ratio to that ceiling printed on the bar.
//!
//! Every section of the JSON is optional and unknown fields or entries of
//! another shape are skipped, so new sections of run.sh do not break it.
//! Text uses the sans-serif font fontconfig finds (Debian: fonts-dejavu-core,
//! libfontconfig1). Errors are one line on stderr, a non-zero exit, no file.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

const SIZE: (u32, u32) = (1600, 700);
const P99_TARGET_MS: f64 = 2.0;
const SHORTFALL: f64 = 0.95; // achieved / target below this: hollow marker
const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(230, 110, 20), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
const BAND: RGBColor = RGBColor(222, 222, 222);
const CEILING_BAR: RGBColor = RGBColor(140, 140, 140);
const GRID: RGBColor = RGBColor(240, 240, 240);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// One constant-rate scenario: (target, achieved, [p50, p99, p99.9]) by target rate.
type Points = Vec<(f64, Option<f64>, [Option<f64>; 3])>;

#[derive(Deserialize)]
struct Run {
    rps: Option<f64>,
}

#[derive(Deserialize)]
struct Scenario {
    rps_median: Option<f64>,
    rps_min: Option<f64>,
    rps_max: Option<f64>,
    #[serde(default)]
    runs: Vec<Run>,
    ceiling: Option<String>,
    ratio_to_ceiling: Option<f64>,
    socket_errors: Option<u64>,
}

#[derive(Deserialize)]
struct RatePoint {
    rps: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    tool: Option<String>,
}

/// The entries of an object that parse as `T`, in file order (none if it is no object).
fn entries<T: DeserializeOwned>(object: Option<&Value>) -> Vec<(String, T)> {
    let Some(map) = object.and_then(Value::as_object) else { return vec![] };
    map.iter().filter_map(|(k, v)| Some((k.clone(), T::deserialize(v).ok()?))).collect()
}

fn positive(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite() && *x > 0.0)
}

fn min_max(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values.into_iter().fold((f64::MAX, 0.0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// 2.5 → "2.5", 950 → "950", 42073 → "42.1k", 519052 → "519k", 1e6 → "1M".
fn kilo(v: f64) -> String {
    match v {
        v if v < 10.0 => format!("{v:.1}"),
        v if v < 1e3 => format!("{v:.0}"),
        v if v < 1e5 => format!("{:.1}k", v / 1e3).replace(".0k", "k"),
        v if v < 1e6 => format!("{:.0}k", v / 1e3),
        v => format!("{:.1}M", v / 1e6).replace(".0M", "M"),
    }
}

/// Two significant digits: 0.7574 → "0.76", 0.000632 → "0.00063", 1.03 → "1.0".
fn sig2(v: f64) -> String {
    let decimals = (1 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// validate blue and mixed orange in every chart; other scenarios by position.
fn colour_of(scenario: &str, index: usize) -> RGBColor {
    match scenario {
        "validate" => COLOURS[0],
        "mixed" => COLOURS[1],
        _ => COLOURS[2 + index % 2],
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing failed: {e}")
}

fn main() {
    // A panic (a bug, or libfontconfig.so.1 missing) is reported on one line too.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tokend-bench-chart: internal error: {}", info.to_string().replace('\n', " "));
    }));
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: tokend-bench-chart <latest.json> <out.png>");
        std::process::exit(2);
    }
    if let Err(e) = run(&args[1], &args[2]) {
        eprintln!("tokend-bench-chart: {}", e.replace('\n', " "));
        std::process::exit(1);
    }
}

fn run(input: &str, output: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("cannot read {input}: {e}"))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{input} is not valid JSON: {e}"))?;
    if !doc.is_object() {
        return Err(format!("{input}: expected a JSON object at the top level"));
    }
    ("sans-serif", 16).into_font().box_size("x").map_err(|e| {
        format!(
            "no sans-serif font through fontconfig ({e}): apt-get install fonts-dejavu-core libfontconfig1"
        )
    })?;
    // Drawn in memory and encoded at the end, so an error leaves no half-drawn file.
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, body) = root.split_vertically(62);
        draw_title(&top, &doc)?;
        let (left, right) = body.split_horizontally(740);
        draw_latency(&left, &doc)?;
        draw_throughput(&right, &doc)?;
        root.present().map_err(err)?;
    }
    image::save_buffer_with_format(
        output,
        &pixels,
        SIZE.0,
        SIZE.1,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| format!("cannot write {output}: {e}"))
}

fn draw_title(area: &Area, doc: &Value) -> Result<(), String> {
    let text =
        |path: &str| doc.pointer(path).map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()));
    let date = text("/generated_at").unwrap_or_else(|| "date unknown".into());
    let mut line2 = format!(
        "{}, nproc {}",
        text("/machine/cpu_model").unwrap_or_else(|| "cpu unknown".into()),
        text("/machine/nproc").unwrap_or_else(|| "?".into())
    );
    for (path, before, after) in [
        ("/machine/kernel", ", kernel ", ""),
        ("/command", "   ·   command: ", ""),
        ("/settings/connections", "   ·   ", " connections"),
    ] {
        if let Some(v) = text(path) {
            line2 += &format!("{before}{v}{after}");
        }
    }
    let title = format!("tokend benchmark — {date}");
    area.draw_text(&title, &("sans-serif", 24).into_font().color(&BLACK), (14, 8)).map_err(err)?;
    area.draw_text(&line2, &("sans-serif", 16).into_font().color(&RGBColor(60, 60, 60)), (14, 38))
        .map_err(err)
}

/// A panel with nothing to plot: its caption and a centred note.
fn empty_panel(area: &Area, caption: &str, note: &str) -> Result<(), String> {
    let area = area.titled(caption, ("sans-serif", 18)).map_err(err)?;
    let (w, h) = area.dim_in_pixel();
    let style = ("sans-serif", 16)
        .into_font()
        .color(&RGBColor(110, 110, 110))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(note, &style, (w as i32 / 2, h as i32 / 2)).map_err(err)
}

/// Marker outlines in pixels around a point: p50 octagon, p99 triangle, p99.9 square.
fn marker(k: usize, (dx, dy): (i32, i32)) -> Vec<(i32, i32)> {
    let shape: &[(i32, i32)] = match k {
        0 => &[(-2, -5), (2, -5), (5, -2), (5, 2), (2, 5), (-2, 5), (-5, 2), (-5, -2)],
        1 => &[(0, -6), (6, 5), (-6, 5)],
        _ => &[(-4, -4), (4, -4), (4, 4), (-4, 4)],
    };
    shape.iter().map(|(x, y)| (x + dx, y + dy)).collect()
}

fn draw_latency(area: &Area, doc: &Value) -> Result<(), String> {
    let mut tools = Vec::<String>::new();
    let mut lines: Vec<(String, Points)> = Vec::new();
    for (scenario, rates) in entries::<Value>(doc.get("constant_rate")) {
        let mut points = Vec::new();
        for (rate, p) in entries::<RatePoint>(Some(&rates)) {
            let Some(target) = positive(rate.parse().ok()) else { continue };
            tools.extend(p.tool.filter(|t| !tools.contains(t)));
            points.push((target, positive(p.rps), [p.p50_ms, p.p99_ms, p.p999_ms].map(positive)));
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.iter().any(|p| p.2.iter().any(Option::is_some)) {
            lines.push((scenario, points));
        }
    }
    let mut caption = "Latency at constant rate".to_string();
    if !tools.is_empty() {
        let tools: Vec<_> =
            tools.iter().map(|t| if t == "oha" { "oha --latency-correction" } else { t }).collect();
        caption += &format!(" ({})", tools.join(", "));
    }
    if lines.is_empty() {
        return empty_panel(area, &caption, "no constant-rate runs in this JSON");
    }
    let targets: Vec<f64> = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)).collect();
    let (xlo, xhi) = min_max(targets.iter().copied());
    let (xlo, xhi) = (xlo / 1.25, xhi * 1.25);
    let values = lines.iter().flat_map(|l| l.1.iter().flat_map(|p| p.2.into_iter().flatten()));
    let (ylo, yhi) = min_max(values.chain([P99_TARGET_MS]));
    let mut shortfalls = Vec::new(); // (legend text, colour) of points that fell short
    for (i, (scenario, points)) in lines.iter().enumerate() {
        for &(t, got, _) in points {
            if let Some(got) = got.filter(|g| *g < SHORTFALL * t) {
                let text = format!("{scenario} at {}/s: achieved {}/s", kilo(t), kilo(got));
                shortfalls.push((text, colour_of(scenario, i)));
            }
        }
    }
    // Headroom above the data for the legend (upper left), about 17 px a line.
    let series: usize =
        lines.iter().map(|l| (0..3).filter(|&k| l.1.iter().any(|p| p.2[k].is_some())).count()).sum();
    let legend_lines = 1 + series + shortfalls.len() + usize::from(!shortfalls.is_empty());
    let share =
        ((legend_lines * 17 + 30) as f64 / (area.dim_in_pixel().1 as f64 - 110.0).max(100.0)).min(0.6);
    let ybottom = 10f64.powf(ylo.log10().floor()).min(ylo / 1.5) * 0.8;
    let ytop = ybottom * 10f64.powf((yhi * 1.5 / ybottom).log10() / (1.0 - share));
    let mut chart = ChartBuilder::on(area)
        .caption(&caption, ("sans-serif", 18))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((xlo..xhi).log_scale().with_key_points(targets), (ybottom..ytop).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("target rate, req/s (log)")
        .y_desc("latency, ms (log)")
        .x_label_formatter(&|v| kilo(*v))
        .y_label_formatter(&|v| match *v {
            v if v > yhi * 10.0 => String::new(), // the legend's headroom
            v if v >= 1.0 => format!("{v:.0}"),
            v => format!("{v}"),
        })
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(GRID)
        .draw()
        .map_err(err)?;
    let red = RED.stroke_width(2);
    chart
        .draw_series(DashedLineSeries::new([(xlo, P99_TARGET_MS), (xhi, P99_TARGET_MS)], 10, 6, red))
        .map_err(err)?
        .label(format!("p99 target {P99_TARGET_MS} ms"))
        .legend(move |(x, y)| {
            let dash = |a, b| PathElement::new([(a, 0), (b, 0)], red);
            EmptyElement::at((x, y)) + dash(0, 8) + dash(12, 18) + dash(22, 30)
        });
    // p50 thin solid, p99 thick solid, p99.9 dashed; hollow marker where the rate fell short.
    for (i, (scenario, points)) in lines.iter().enumerate() {
        let colour = colour_of(scenario, i);
        for (k, pct) in ["p50", "p99", "p99.9"].into_iter().enumerate() {
            let pts: Vec<(f64, f64, bool)> = points
                .iter()
                .filter_map(|&(t, got, p)| Some((t, p[k]?, got.is_none_or(|g| g >= SHORTFALL * t))))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let xy = pts.iter().map(|p| (p.0, p.1));
            let line = colour.stroke_width([1, 3, 2][k]);
            let series = if k == 2 {
                chart.draw_series(DashedLineSeries::new(xy, 7, 5, line))
            } else {
                chart.draw_series(LineSeries::new(xy, line))
            };
            let gap = if k == 2 { 8 } else { 0 };
            series.map_err(err)?.label(format!("{scenario} {pct}")).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (15 - gap, 0)], line)
                    + PathElement::new([(15 + gap, 0), (30, 0)], line)
                    + Polygon::new(marker(k, (15, 0)), colour.filled())
            });
            let fill = |ok| if ok { colour.filled() } else { WHITE.filled() };
            let edge = colour.stroke_width(2);
            chart
                .draw_series(pts.iter().map(|&(x, y, ok)| {
                    let mut outline = marker(k, (0, 0));
                    outline.push(outline[0]);
                    EmptyElement::at((x, y))
                        + Polygon::new(marker(k, (0, 0)), fill(ok))
                        + PathElement::new(outline, edge)
                }))
                .map_err(err)?;
        }
    }
    if !shortfalls.is_empty() {
        let heading = (format!("hollow: achieved < {:.0}% of target rate", SHORTFALL * 100.0), BLACK);
        for (text, colour) in std::iter::once(heading).chain(shortfalls) {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(err)?
                .label(text)
                .legend(move |(x, y)| Circle::new((x + 15, y), 4, colour.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 13))
        .legend_area_size(36)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(err)
}

struct Row {
    name: String,
    median: f64,
    min: f64,
    max: f64,
    /// None: the row is a ceiling; else the ceiling's name and, if it was measured, (its median, ratio).
    ceiling: Option<(String, Option<(f64, f64)>)>,
    note: String,
}

fn draw_throughput(area: &Area, doc: &Value) -> Result<(), String> {
    let scenarios = entries::<Scenario>(doc.get("scenarios"));
    let runs = scenarios.iter().map(|s| s.1.runs.len()).max().unwrap_or(0);
    let runs = if runs > 0 { format!("{runs} runs") } else { "the runs".into() };
    let caption = format!("Full speed: req/s per scenario, median of {runs}, whisker min–max (log)");
    let stats = |s: &Scenario| {
        let mut r: Vec<f64> = s.runs.iter().filter_map(|r| positive(r.rps)).collect();
        r.sort_by(f64::total_cmp);
        let median = positive(s.rps_median).or(r.get(r.len() / 2).copied())?;
        let min = positive(s.rps_min).or(r.first().copied()).unwrap_or(median).min(median);
        Some((median, min, positive(s.rps_max).or(r.last().copied()).unwrap_or(median).max(median)))
    };
    let ceiling_of = |name: &str, s: &Scenario| match &s.ceiling {
        Some(c) => Some(c.clone()),
        None if name.starts_with("baseline") => None,
        None => Some(if name.ends_with("_p16") { "baseline_p16" } else { "baseline" }.to_string()),
    };
    // Each ceiling, then the scenarios compared with it; then any others.
    let mut order: Vec<usize> = Vec::new();
    for (i, (name, s)) in scenarios.iter().enumerate() {
        if ceiling_of(name, s).is_none() {
            order.push(i);
            order.extend(
                (0..scenarios.len())
                    .filter(|&j| ceiling_of(&scenarios[j].0, &scenarios[j].1).as_ref() == Some(name)),
            );
        }
    }
    order.extend((0..scenarios.len()).filter(|j| !order.contains(j)).collect::<Vec<_>>());
    let login_vs_argon2 = positive(doc.pointer("/argon2/login_ratio").and_then(Value::as_f64));
    let mut rows = Vec::new();
    for (name, s) in order.into_iter().map(|i| &scenarios[i]) {
        let Some((median, min, max)) = stats(s) else { continue };
        let ceiling = ceiling_of(name, s).map(|c| {
            let cm = scenarios.iter().find(|(n, _)| *n == c).and_then(|(_, cs)| stats(cs)).map(|st| st.0);
            let measured = cm.map(|cm| (cm, positive(s.ratio_to_ceiling).unwrap_or(median / cm)));
            (c, measured)
        });
        let mut note = String::new();
        if let (Some(r), "login") = (login_vs_argon2, name.as_str()) {
            note += &format!(" · {}× argon2id ceiling", sig2(r));
        }
        if let Some(e) = s.socket_errors.filter(|e| *e > 0) {
            note += &format!(" · {e} socket errors");
        }
        rows.push(Row { name: name.clone(), median, min, max, ceiling, note });
    }
    if rows.is_empty() {
        return empty_panel(area, &caption, "no full-speed scenarios in this JSON");
    }
    let n = rows.len();
    let (lo, hi) = min_max(rows.iter().flat_map(|r| [r.min, r.max]));
    let (lo, hi) = (10f64.powf((lo / 1.5).log10().floor()), 10f64.powf((hi * 1.3).log10().ceil()));
    // y in twentieths of a row, so bars can be thinner than a row on an integer axis.
    let y_of = |i: usize| 20 * (n - 1 - i) as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(&caption, ("sans-serif", 18))
        .margin(12)
        .margin_right(20)
        .x_label_area_size(44)
        .y_label_area_size(104)
        .build_cartesian_2d(
            (lo..hi).log_scale(),
            (-12..20 * n as i32 - 8).with_key_points((0..n).map(y_of).collect()),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("requests/s (log); grey band = the ceiling each scenario is compared with")
        .x_label_formatter(&|v| kilo(*v))
        .y_label_formatter(&|v| rows[n - 1 - (*v / 20).clamp(0, n as i32 - 1) as usize].name.clone())
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(GRID)
        .draw()
        .map_err(err)?;
    let text_style =
        |c: RGBColor| ("sans-serif", 13).into_font().color(&c).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, r) in rows.iter().enumerate() {
        let y = y_of(i);
        if let Some((_, Some((cm, _)))) = &r.ceiling {
            chart.draw_series([Rectangle::new([(lo, y - 8), (*cm, y + 8)], BAND.filled())]).map_err(err)?;
        }
        let bar = if r.ceiling.is_some() { COLOURS[0] } else { CEILING_BAR };
        chart.draw_series([Rectangle::new([(lo, y - 5), (r.median, y + 5)], bar.filled())]).map_err(err)?;
        let whisker = |a, b| PathElement::new([a, b], BLACK.stroke_width(2));
        chart
            .draw_series([
                whisker((r.min, y), (r.max, y)),
                whisker((r.min, y - 3), (r.min, y + 3)),
                whisker((r.max, y - 3), (r.max, y + 3)),
            ])
            .map_err(err)?;
        let text = match &r.ceiling {
            Some((c, Some((_, ratio)))) => format!("{}/s · {}× {c}{}", kilo(r.median), sig2(*ratio), r.note),
            Some((c, None)) => format!("{}/s · no {c} in this run{}", kilo(r.median), r.note),
            None => format!("{}/s (ceiling){}", kilo(r.median), r.note),
        };
        // On the bar in white when it fits left of the whisker, else after the whisker.
        let (w, _) = area.estimate_text_size(&text, &text_style(BLACK)).map_err(err)?;
        let room = chart.backend_coord(&(r.min, y)).0 - chart.backend_coord(&(lo, y)).0;
        let label = if w as i32 + 16 < room {
            EmptyElement::at((lo, y)) + Text::new(text, (8, 0), text_style(WHITE))
        } else {
            EmptyElement::at((r.max, y)) + Text::new(text, (8, 0), text_style(BLACK))
        };
        chart.plotting_area().draw(&label).map_err(err)?;
    }
    Ok(())
}
