//! The latency percentile spectrum as SVG, in the HdrHistogram style: the x axis is
//! log10(1 / (1 - percentile)), so 0%, 90%, 99%, 99.9%... are equally spaced and the tail gets the
//! room; y is latency. Written by hand (about 150 lines) rather than through plotters: no extra
//! dependency, and the output is small and deterministic.

use std::fmt::Write;
use std::path::Path;

/// One line of the chart.
pub struct Series {
    pub label: String,
    /// [percentile 0-100, latency µs] points, as in the report's `spectrum`.
    pub points: Vec<[f64; 2]>,
}

const W: f64 = 960.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
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
    let y_max_us = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p[1])
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (y_unit, y_div) = if y_max_us >= 1000.0 {
        ("ms", 1000.0)
    } else {
        ("µs", 1.0)
    };
    let y_top = nice_ceiling(y_max_us / y_div * 1.05);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / decades * pw;
    let py = |us: f64| TOP + ph - (us / y_div) / y_top * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="13">"#
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
    // y ticks
    for i in 0..=5 {
        let v = y_top * i as f64 / 5.0;
        let y = TOP + ph - ph * i as f64 / 5.0;
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
            trim(v)
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
        r#"<text transform="translate(20,{:.1}) rotate(-90)" text-anchor="middle">latency ({y_unit})</text>"#,
        TOP + ph / 2.0
    );
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
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
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.trim_end()
        );
        let ly = TOP + 20.0 + 20.0 * i as f64;
        let lx = LEFT + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
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
fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".into(),
        1 => "90%".into(),
        d => format!("99.{}%", "9".repeat(d as usize - 2)).replace("99.%", "99%"),
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
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

/// Loads the `spectrum` of saved JSON reports, one series each, labelled by file stem and rate.
pub fn load_reports(paths: &[std::path::PathBuf]) -> Result<Vec<Series>, String> {
    let mut out = Vec::new();
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
        let label = match (v.get("protocol"), v.get("rate")) {
            (Some(proto), Some(rate)) => {
                format!("{stem} ({} {} msg/s)", proto.as_str().unwrap_or(""), rate)
            }
            _ => stem,
        };
        out.push(Series { label, points });
    }
    Ok(out)
}
