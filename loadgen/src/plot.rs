//! The latency percentile spectrum as SVG, in the HdrHistogram style: the x axis is
//! log10(1 / (1 - percentile)), so 0%, 90%, 99%, 99.9%... are equally spaced and the tail gets the
//! room; y is latency, also on a log scale (decades), so runs that differ a thousandfold stay
//! readable on one chart. Several scenarios become a grid of small panels, one per scenario, all on
//! the same axes so they compare at a glance. Written by hand rather than through plotters: no
//! extra dependency, and the output is small and deterministic.

use std::fmt::Write;
use std::path::PathBuf;

/// One line of the chart.
pub struct Series {
    /// The legend entry: lines with the same label, colour and dash are one entry.
    pub label: String,
    /// [percentile 0-100, latency µs] points, as in the report's `spectrum`.
    pub points: Vec<[f64; 2]>,
    /// Index into the palette: one colour per server.
    pub colour: usize,
    /// Drawn dashed: the comparison server (Redis) against solid uring-chat.
    pub dashed: bool,
}

/// One small chart of the grid: a scenario and its runs (one per server).
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// Left margin: the y tick labels and the y axis caption.
const LEFT: f64 = 84.0;
const RIGHT: f64 = 24.0;
/// Between two panels of a row.
const GAP: f64 = 22.0;
/// Above each panel: its title.
const PANEL_TITLE: f64 = 24.0;
/// Below each panel: the x tick labels.
const X_TICKS: f64 = 26.0;
/// Below the grid: the x axis caption.
const BOTTOM: f64 = 34.0;
const LEGEND_ROW: f64 = 20.0;
/// Rough width of a character of the legend (13 px), for layout only.
const CHAR_W: f64 = 7.0;
/// ...and of a panel title (bold 12 px).
const TITLE_CHAR_W: f64 = 7.6;
const COLORS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#ad494a",
];
/// The servers whose name prefixes a report file (`<server>-<scenario>.json`): uring-chat first
/// (colour 0, solid), Redis second (colour 1, dashed).
const SERVERS: [&str; 2] = ["uring-chat", "redis"];

/// x of a percentile: log10(1/(1-p)), with 100% capped at `cap`.
fn x_of(p: f64, cap: f64) -> f64 {
    let q = p / 100.0;
    if q >= 1.0 {
        cap
    } else {
        (-(1.0 - q).log10()).min(cap)
    }
}

/// Renders every series in one panel.
pub fn render(title: &str, series: &[Series]) -> String {
    grid(title, &[("", series)])
}

/// Renders one small panel per entry, sharing both axes.
pub fn render_panels(title: &str, panels: &[Panel]) -> String {
    let panels: Vec<(&str, &[Series])> = panels
        .iter()
        .map(|p| (p.title.as_str(), p.series.as_slice()))
        .collect();
    grid(title, &panels)
}

fn grid(title: &str, panels: &[(&str, &[Series])]) -> String {
    let all = || panels.iter().flat_map(|(_, s)| s.iter());
    // The tail extends one decade past the last point below 100%, at least to 99.9%.
    let finite_max = all()
        .flat_map(|s| s.points.iter())
        .filter(|p| p[0] < 100.0)
        .map(|p| x_of(p[0], f64::INFINITY))
        .fold(0.0f64, f64::max);
    let decades = (finite_max.ceil() + 1.0).clamp(3.0, 9.0);
    let latencies = || all().flat_map(|s| s.points.iter()).map(|p| p[1].max(1.0));
    let y_max_us = latencies().fold(1.0f64, f64::max);
    let y_min_us = latencies().fold(y_max_us, f64::min);
    // Whole decades of microseconds, at least one; the same for every panel.
    let lo = y_min_us.log10().floor();
    let hi = y_max_us.log10().ceil().max(lo + 1.0);

    // Layout: up to 3 panels in a row, then a near-square grid of at most 4 columns.
    let n = panels.len().max(1);
    let cols = if n <= 3 {
        n
    } else {
        ((n as f64).sqrt().ceil() as usize).min(4)
    };
    let rows = n.div_ceil(cols);
    let width = if cols == 1 { 960.0 } else { 1200.0 };
    let pw = (width - LEFT - RIGHT - GAP * (cols - 1) as f64) / cols as f64;
    let ph = (pw * 0.62).clamp(180.0, 430.0);

    // The legend, once, under the title: one entry per distinct (label, colour, dash).
    let mut legend: Vec<(&str, usize, bool)> = Vec::new();
    for s in all() {
        let key = (s.label.as_str(), s.colour, s.dashed);
        if !legend.contains(&key) {
            legend.push(key);
        }
    }
    legend.sort_by_key(|&(_, colour, dashed)| (dashed, colour));
    let mut legend_at = Vec::new();
    let (mut lx, mut ly) = (LEFT, 0.0);
    for (label, ..) in &legend {
        let w = 34.0 + CHAR_W * label.chars().count() as f64 + 24.0;
        if lx > LEFT && lx + w > width - RIGHT {
            lx = LEFT;
            ly += LEGEND_ROW;
        }
        legend_at.push((lx, ly));
        lx += w;
    }
    let legend_rows = if legend.is_empty() {
        0.0
    } else {
        ly / LEGEND_ROW + 1.0
    };
    let top = 44.0 + legend_rows * LEGEND_ROW + 4.0;
    let cell_h = PANEL_TITLE + ph + X_TICKS;
    let height = top + rows as f64 * cell_h + BOTTOM;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="26" text-anchor="middle" font-size="17">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (&(label, colour, dashed), &(x, y)) in legend.iter().zip(&legend_at) {
        let y = 44.0 + y;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"{}/>"#,
            x + 28.0,
            COLORS[colour % COLORS.len()],
            dash_attr(dashed)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="13">{}</text>"#,
            x + 34.0,
            y + 4.0,
            escape(label)
        );
    }
    // Axis captions, once for the whole grid.
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        top + rows as f64 * cell_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (x: 1/(1-p), log scale)</text>"#,
        (LEFT + width - RIGHT) / 2.0,
        height - 12.0
    );

    // Label every tick when the labels fit, else every second (or third...) one.
    let ticks = decades as u32;
    let step = tick_step(ticks, pw / decades);
    for (i, &(name, series)) in panels.iter().enumerate() {
        let x0 = LEFT + (i % cols) as f64 * (pw + GAP);
        let y0 = top + (i / cols) as f64 * cell_h + PANEL_TITLE;
        let px = |x: f64| x0 + x / decades * pw;
        let py = |us: f64| y0 + ph - (us.max(1.0).log10() - lo) / (hi - lo) * ph;
        let _ = writeln!(s, r#"<g class="panel">"#);
        if !name.is_empty() {
            let _ = writeln!(
                s,
                r#"<text class="panel-title" x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
                x0 + pw / 2.0,
                y0 - 8.0,
                escape(&fit(name, pw))
            );
        }
        for d in 0..=(decades as u32) {
            let x = px(d as f64);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                y0 + ph
            );
            if d % step == 0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="{}" font-size="11">{}</text>"#,
                    y0 + ph + 15.0,
                    tick_anchor(d, ticks),
                    percentile_label(d)
                );
            }
        }
        for d in (lo as i32)..=(hi as i32) {
            let us = 10f64.powi(d);
            let y = py(us);
            let _ = writeln!(
                s,
                r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
                x0 + pw
            );
            // The y axis is shared: its labels only on the left column.
            if i % cols == 0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    x0 - 6.0,
                    y + 4.0,
                    duration_label(us)
                );
            }
        }
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{y0:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#444"/>"##
        );
        for ser in series {
            let mut path = String::new();
            for (j, p) in ser.points.iter().enumerate() {
                let _ = write!(
                    path,
                    "{}{:.1},{:.1} ",
                    if j == 0 { "M" } else { "L" },
                    px(x_of(p[0], decades)),
                    py(p[1])
                );
            }
            let _ = writeln!(
                s,
                r#"<path d="{}" fill="none" stroke="{}" stroke-width="2"{}/>"#,
                path.trim_end(),
                COLORS[ser.colour % COLORS.len()],
                dash_attr(ser.dashed)
            );
        }
        let _ = writeln!(s, "</g>");
    }
    s.push_str("</svg>\n");
    s
}

/// The first x tick label starts at the panel's left edge and the last ends at its right edge, so
/// labels never reach into the next panel.
fn tick_anchor(d: u32, ticks: u32) -> &'static str {
    if d == 0 {
        "start"
    } else if d == ticks {
        "end"
    } else {
        "middle"
    }
}

/// Approximate width in px of a percentile label at 11 px sans-serif.
fn tick_width(d: u32) -> f64 {
    percentile_label(d)
        .chars()
        .map(|c| match c {
            '.' => 3.2,
            '%' => 10.0,
            _ => 6.3,
        })
        .sum()
}

/// The smallest k such that labelling every k-th of the x ticks `0..=ticks`, `spacing` px apart,
/// leaves at least 6 px between neighbouring labels.
fn tick_step(ticks: u32, spacing: f64) -> u32 {
    let span = |d: u32| {
        let (c, w) = (d as f64 * spacing, tick_width(d));
        match tick_anchor(d, ticks) {
            "start" => (c, c + w),
            "end" => (c - w, c),
            _ => (c - w / 2.0, c + w / 2.0),
        }
    };
    (1..=ticks.max(1))
        .find(|&k| {
            let labelled: Vec<u32> = (0..=ticks).filter(|d| d % k == 0).collect();
            labelled
                .windows(2)
                .all(|w| span(w[0]).1 + 6.0 <= span(w[1]).0)
        })
        .unwrap_or(ticks.max(1))
}

/// `1 µs`, `10 ms`, `1 s`... for a power of ten of microseconds.
fn duration_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} µs", trim(us))
    }
}

/// "0%", "90%", "99%", "99.9%", ...
fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".into(),
        1 => "90%".into(),
        d => format!("99.{}%", "9".repeat(d as usize - 2)).replace("99.%", "99%"),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `name`, with its middle cut out if it would not fit in `width` px (bold 12 px): scenario names
/// differ at both ends (`ws-...`, `...-tick1ms`).
fn fit(name: &str, width: f64) -> String {
    let max = (width / TITLE_CHAR_W) as usize;
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= max {
        return name.to_string();
    }
    let head = max.saturating_sub(1) / 2;
    let tail = max.saturating_sub(1) - head;
    let mut cut: String = chars[..head].iter().collect();
    cut.push('…');
    cut.extend(&chars[chars.len() - tail..]);
    cut
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn dash_attr(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="7 4""#
    } else {
        ""
    }
}

/// The panel of a report file named `<server>-<scenario>.json`: the scenario, and the server if
/// the name starts with a known one. Any other name is its own scenario.
pub fn scenario_of(stem: &str) -> (&str, Option<&'static str>) {
    for server in SERVERS {
        if let Some(rest) = stem.strip_prefix(server).and_then(|r| r.strip_prefix('-')) {
            if !rest.is_empty() {
                return (rest, Some(server));
            }
        }
    }
    (stem, None)
}

/// Loads the `spectrum` of saved JSON reports into one panel per scenario (file names that differ
/// only in their `uring-chat-`/`redis-` prefix), in the order the scenarios first appear. Each
/// line is labelled by its server (the report's `protocol`) and coloured by it; Redis is dashed.
pub fn load_reports(paths: &[PathBuf]) -> Result<Vec<Panel>, String> {
    let mut panels: Vec<Panel> = Vec::new();
    let mut labels: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        let points: Vec<[f64; 2]> = v
            .get("spectrum")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("{}: bad spectrum: {e}", p.display()))?
            .ok_or_else(|| format!("{}: no \"spectrum\" field", p.display()))?;
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (scenario, server) = scenario_of(&stem);
        let label = match v.get("protocol").and_then(|p| p.as_str()) {
            Some(protocol) if !protocol.is_empty() => protocol,
            _ => server.unwrap_or(&stem),
        }
        .to_string();
        let colour = match labels.iter().position(|l| *l == label) {
            Some(i) => i,
            None => {
                labels.push(label.clone());
                labels.len() - 1
            }
        };
        let series = Series {
            dashed: label == "redis",
            label,
            points,
            colour,
        };
        match panels.iter_mut().find(|panel| panel.title == scenario) {
            Some(panel) => panel.series.push(series),
            None => panels.push(Panel {
                title: scenario.to_string(),
                series: vec![series],
            }),
        }
    }
    // uring-chat first in each panel, so Redis's dashes are drawn over it.
    for panel in &mut panels {
        panel.series.sort_by_key(|s| (s.dashed, s.colour));
    }
    Ok(panels)
}
