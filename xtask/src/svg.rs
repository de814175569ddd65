//! Minimal SVG charts for the benchmark reports: line charts (one line per series) and
//! horizontal bar charts. Hand-rolled so the bench needs no font or graphics stack.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
];

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        esc(title)
    );
}

/// A line chart; x values are plotted as given (linear axis), y from zero.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmin >= xmax {
        (xmin - 1.0, xmin + 1.0)
    } else {
        (xmin, xmax)
    };
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - xmin) / (xmax - xmin) * pw;
    let sy = |y: f64| TOP + ph - y / ymax * ph;
    axes(&mut out, x_label, y_label);
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{py}" y2="{py}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            sy(y) + 4.0,
            fmt_num(y),
            py = sy(y)
        );
    }
    let mut xticks: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    xticks.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xticks.dedup();
    for x in xticks {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            sx(x),
            TOP + ph + 16.0,
            fmt_num(x)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for &(x, y) in &s.points {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                sx(x),
                sy(y)
            );
        }
        legend(&mut out, i, c, &s.name);
    }
    out.push_str("</svg>\n");
    out
}

/// A horizontal bar chart of (label, value) pairs.
pub fn bar_chart(title: &str, x_label: &str, bars: &[(String, f64)]) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let vmax = nice_max(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let left = 200.0;
    let pw = W - left - 60.0;
    let bh = ((H - TOP - BOTTOM) / bars.len().max(1) as f64).min(40.0);
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = TOP + i as f64 * bh;
        let w = v / vmax * pw;
        let c = COLORS[i % COLORS.len()];
        let _ = write!(
            out,
            r#"<rect x="{left}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{c}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{:.1}" y="{:.1}">{}</text>"#,
            y + 4.0,
            bh - 8.0,
            left - 6.0,
            y + bh / 2.0 + 4.0,
            esc(label),
            left + w + 4.0,
            y + bh / 2.0 + 4.0,
            fmt_num(*v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        H - 12.0,
        esc(x_label)
    );
    out.push_str("</svg>\n");
    out
}

fn axes(out: &mut String, x_label: &str, y_label: &str) {
    let ph = H - TOP - BOTTOM;
    let pw = W - LEFT - RIGHT;
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/><text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"##,
        TOP + ph,
        TOP + ph,
        LEFT + pw,
        TOP + ph,
        LEFT + pw / 2.0,
        H - 12.0,
        esc(x_label),
        TOP + ph / 2.0,
        esc(y_label)
    );
}

fn legend(out: &mut String, i: usize, color: &str, name: &str) {
    let x = W - RIGHT + 15.0;
    let y = TOP + 10.0 + i as f64 * 20.0;
    let _ = write!(
        out,
        r#"<rect x="{x}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
        y - 10.0,
        x + 18.0,
        y,
        esc(name)
    );
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_max_rounds_up_to_1_2_5() {
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(4_100.0), 5_000.0);
    }

    #[test]
    fn charts_are_well_formed_svg() {
        let s = line_chart(
            "t <x>",
            "x",
            "y",
            &[Series {
                name: "a&b".into(),
                points: vec![(1.0, 2.0), (2.0, 3.0)],
            }],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("t &lt;x&gt;") && s.contains("a&amp;b"));
        assert_eq!(s.matches("<circle").count(), 2);
        let b = bar_chart("b", "ns", &[("x".into(), 5.0), ("y".into(), 10.0)]);
        assert_eq!(b.matches("<rect").count(), 3); // background + 2 bars
    }
}
