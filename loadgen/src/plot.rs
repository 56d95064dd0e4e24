//! The latency percentile spectrum as SVG, in the HdrHistogram style: the x axis is
//! log10(1 / (1 - percentile)), so 0%, 90%, 99%, 99.9%... are equally spaced and the tail gets the
//! room; y is latency, also on a log scale (decades), so runs that differ a thousandfold stay
//! readable on one chart. Written by hand (about 150 lines) rather than through plotters: no extra
//! dependency, and the output is small and deterministic.

use std::fmt::Write;
use std::path::Path;

/// One line of the chart.
pub struct Series {
    pub label: String,
    /// [percentile 0-100, latency µs] points, as in the report's `spectrum`.
    pub points: Vec<[f64; 2]>,
    /// Index into the palette: runs of one scenario against different servers share a colour.
    pub colour: usize,
    /// Drawn dashed: the comparison server (Redis) against solid uring-chat.
    pub dashed: bool,
}

const W: f64 = 960.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#ad494a",
];

/// x of a percentile: log10(1/(1-p)), with 100% capped at `cap`.
fn x_of(p: f64, cap: f64) -> f64 {
    let q = p / 100.0;
    if q >= 1.0 {
        cap
    } else {
        (-(1.0 - q).log10()).min(cap)
    }
}

/// Renders the chart as SVG text.
pub fn render(title: &str, series: &[Series]) -> String {
    // The tail extends one decade past the last point below 100%, at least to 99.9%.
    let finite_max = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p[0] < 100.0)
        .map(|p| x_of(p[0], f64::INFINITY))
        .fold(0.0f64, f64::max);
    let decades = (finite_max.ceil() + 1.0).clamp(3.0, 9.0);
    let latencies = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .map(|p| p[1].max(1.0))
    };
    let y_max_us = latencies().fold(1.0f64, f64::max);
    let y_min_us = latencies().fold(y_max_us, f64::min);
    // Whole decades of microseconds, at least one.
    let lo = y_min_us.log10().floor();
    let hi = y_max_us.log10().ceil().max(lo + 1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / decades * pw;
    let py = |us: f64| TOP + ph - (us.max(1.0).log10() - lo) / (hi - lo) * ph;

    // The legend goes below the chart, one row per series, so it never hides a line.
    let total_h = H + 20.0 * series.len() as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" viewBox="0 0 {W} {total_h}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid and x ticks: 0%, 90%, 99%, ...
    for d in 0..=(decades as u32) {
        let x = px(d as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            percentile_label(d)
        );
    }
    // y ticks, one per decade
    for d in (lo as i32)..=(hi as i32) {
        let us = 10f64.powi(d);
        let y = py(us);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            duration_label(us)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (x: 1/(1-p), log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20,{:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        TOP + ph / 2.0
    );
    for ser in series {
        let color = COLORS[ser.colour % COLORS.len()];
        let dash = dash_attr(ser.dashed);
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
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            path.trim_end()
        );
    }
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[ser.colour % COLORS.len()];
        let dash = dash_attr(ser.dashed);
        let ly = H + 10.0 + 20.0 * i as f64;
        let lx = LEFT;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"{dash}/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes the chart to `path`.
pub fn write(path: &Path, title: &str, series: &[Series]) -> std::io::Result<()> {
    std::fs::write(path, render(title, series))
}

/// "0%", "90%", "99%", "99.9%", ...
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

/// Loads the `spectrum` of saved JSON reports, one series each, labelled by file stem and rate.
/// Reports of one scenario (file names that differ only in their `redis-`/`uring-chat-` prefix)
/// share a colour, and Redis runs are dashed, so each pair reads as one comparison.
pub fn load_reports(paths: &[std::path::PathBuf]) -> Result<Vec<Series>, String> {
    let mut out = Vec::new();
    let mut scenarios: Vec<String> = Vec::new();
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
        let protocol = v.get("protocol").and_then(|p| p.as_str()).unwrap_or("");
        let label = match v.get("rate") {
            Some(rate) if !protocol.is_empty() => format!("{stem} ({protocol} {rate} msg/s)"),
            _ => stem.clone(),
        };
        let scenario = stem
            .strip_prefix(&format!("{protocol}-"))
            .unwrap_or(&stem)
            .to_string();
        let colour = match scenarios.iter().position(|s| *s == scenario) {
            Some(i) => i,
            None => {
                scenarios.push(scenario);
                scenarios.len() - 1
            }
        };
        out.push(Series {
            label,
            points,
            colour,
            dashed: protocol == "redis",
        });
    }
    // The legend lists each scenario's runs together.
    out.sort_by_key(|series| (series.colour, series.dashed));
    Ok(out)
}
