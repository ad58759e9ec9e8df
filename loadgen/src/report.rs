//! report.html for a sweep: self-contained (inline CSS and SVG, no script),
//! with latency percentiles against throughput per acks setting, the
//! linger x batch trade-off as heat maps, and the table of every cell.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::Result;

use crate::stats::fmt_ms;
use crate::sweep::{Cell, SweepResult};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_BOTTOM: f64 = 44.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_RIGHT: f64 = 150.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

pub struct Series {
    pub name: String,
    pub color: String,
    pub dash: &'static str,
    pub points: Vec<(f64, f64)>,
    /// Join the points with a line (a rate sweep); markers only otherwise.
    pub connect: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart with a linear x axis and a log10 y axis.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.1 > 0.0)
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        MARGIN_LEFT,
        esc(title)
    );
    if pts.is_empty() {
        svg.push_str(r#"<text x="80" y="100">no data</text></svg>"#);
        return svg;
    }
    let x_max = pts.iter().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    let x_max = if x_max <= 0.0 { 1.0 } else { x_max };
    let y_lo = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::MAX, f64::min)
        .log10()
        .floor();
    let y_hi = pts
        .iter()
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .log10()
        .ceil()
        .max(y_lo + 1.0);
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let sx = |x: f64| MARGIN_LEFT + x / x_max * plot_w;
    let sy = |y: f64| MARGIN_TOP + plot_h - (y.log10() - y_lo) / (y_hi - y_lo) * plot_h;
    // axes and grid
    let _ = write!(
        svg,
        r##"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##
    );
    let mut e = y_lo;
    while e <= y_hi + 1e-9 {
        let y = sy(10f64.powf(e));
        let _ = write!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 4.0,
            y + 4.0,
            fmt_ms(10f64.powf(e))
        );
        e += 1.0;
    }
    for i in 0..=5 {
        let xv = x_max * f64::from(i) / 5.0;
        let x = sx(xv);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{MARGIN_TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{xv:.0}</text>"##,
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 14.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        esc(x_label),
        MARGIN_TOP + plot_h / 2.0,
        MARGIN_TOP + plot_h / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let mut p: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1 > 0.0).collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = p
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let stroke = if s.connect { 1.6 } else { 0.0 };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="{stroke}" stroke-dasharray="{}" points="{}"/>"#,
            s.color,
            s.dash,
            path.join(" ")
        );
        for (x, y) in &p {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"><title>{}: {:.1} MB/s, {}</title></circle>"#,
                sx(*x),
                sy(*y),
                s.color,
                esc(&s.name),
                x,
                fmt_ms(*y)
            );
        }
        let ly = MARGIN_TOP + 10.0 + i as f64 * 15.0;
        let lx = MARGIN_LEFT + plot_w + 10.0;
        let _ = write!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2" stroke-dasharray="{}"/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            s.color,
            s.dash,
            lx + 26.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A heat map: rows x columns of labelled cells, colour from `value`.
fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    value: impl Fn(usize, usize) -> Option<f64>,
    label: impl Fn(f64) -> String,
    higher_is_better: bool,
) -> String {
    let cell_w = 92.0;
    let cell_h = 30.0;
    let left = 90.0;
    let top = 46.0;
    let w = left + cell_w * cols.len() as f64 + 10.0;
    let h = top + cell_h * rows.len() as f64 + 10.0;
    let vals: Vec<f64> = (0..rows.len())
        .flat_map(|r| (0..cols.len()).map(move |c| (r, c)))
        .filter_map(|(r, c)| value(r, c))
        .collect();
    let lo = vals.iter().copied().fold(f64::MAX, f64::min);
    let hi = vals.iter().copied().fold(f64::MIN, f64::max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11"><text x="4" y="16" font-size="13" font-weight="bold">{}</text><text x="4" y="{}">linger \ batch</text>"#,
        esc(title),
        top - 8.0
    );
    for (c, name) in cols.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            left + cell_w * (c as f64 + 0.5),
            top - 8.0,
            esc(name)
        );
    }
    for (r, name) in rows.iter().enumerate() {
        let y = top + cell_h * r as f64;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 19.0,
            esc(name)
        );
        for c in 0..cols.len() {
            let x = left + cell_w * c as f64;
            let (fill, text) = match value(r, c) {
                Some(v) => {
                    let mut t = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
                    if !higher_is_better {
                        t = 1.0 - t;
                    }
                    // red (worst) .. green (best)
                    let red = (220.0 - 150.0 * t) as u8;
                    let green = (90.0 + 120.0 * t) as u8;
                    (format!("rgb({red},{green},110)"), label(v))
                }
                None => ("#eee".to_string(), "-".to_string()),
            };
            let _ = write!(
                svg,
                r##"<rect x="{x}" y="{y}" width="{cell_w}" height="{cell_h}" fill="{fill}" stroke="#fff"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#000">{}</text>"##,
                x + cell_w / 2.0,
                y + 19.0,
                esc(&text)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Cells that differ only by rate form a curve; anything else is a scatter.
fn rate_sweep(cells: &[&Cell]) -> bool {
    let shapes: BTreeSet<(u64, usize, &str)> = cells
        .iter()
        .map(|c| {
            (
                c.params.linger_ms,
                c.params.batch_bytes,
                c.params.message_bytes.as_str(),
            )
        })
        .collect();
    shapes.len() == 1
}

fn distinct<T: Ord + Clone>(cells: &[Cell], f: impl Fn(&Cell) -> T) -> Vec<T> {
    cells
        .iter()
        .map(f)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

pub fn html(r: &SweepResult) -> Result<String> {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadgen sweep: {0}</title><style>\
body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;font-size:12px}}\
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} th{{background:#f4f4f4}}\
.charts{{display:flex;flex-wrap:wrap;gap:16px}} .note{{color:#555;font-size:13px;max-width:60em}}</style></head><body>\
<h1>loadgen sweep: {0}</h1><p class=\"note\">{1}</p><p class=\"note\">host {2}, brokers {3}, started {4}, loadgen {5}. \
Latency is produce-ack latency measured from each message's intended send time (open loop); cells with rate \"max\" are \
closed-loop max-throughput runs, whose latency is from message creation and is subject to coordinated omission. \
Throughput is the median over repeats; percentiles come from the histograms merged over repeats.</p>",
        esc(&r.scenario),
        esc(&r.description),
        esc(&r.host),
        esc(&r.brokers),
        esc(&r.started),
        esc(&r.loadgen_version)
    );
    out.push_str("<h2>Latency against throughput, per acks</h2><div class=\"charts\">");
    let acks = distinct(&r.cells, |c| c.params.acks.clone());
    let mut series = Vec::new();
    for (i, a) in acks.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| &c.params.acks == a).collect();
        let connect = rate_sweep(&cells);
        for (name, dash, pick) in [("p50", "", 0usize), ("p99", "6,3", 1), ("p99.9", "2,3", 2)] {
            series.push(Series {
                name: format!("acks={a} {name}"),
                color: color.into(),
                dash,
                points: cells
                    .iter()
                    .map(|c| {
                        let p = &c.produce_latency;
                        (c.mb_per_s, [p.p50_ms, p.p99_ms, p.p999_ms][pick])
                    })
                    .collect(),
                connect,
            });
        }
    }
    out.push_str(&line_chart(
        "produce-ack latency vs throughput",
        "throughput, MB/s (payload)",
        "latency",
        &series,
    ));
    if r.cells.iter().any(|c| c.e2e_latency.is_some()) {
        let mut e2e = Vec::new();
        for (i, a) in acks.iter().enumerate() {
            let cells: Vec<&Cell> = r.cells.iter().filter(|c| &c.params.acks == a).collect();
            let connect = rate_sweep(&cells);
            e2e.push(Series {
                name: format!("acks={a} e2e p99"),
                color: COLORS[i % COLORS.len()].into(),
                dash: "6,3",
                points: cells
                    .iter()
                    .filter_map(|c| c.e2e_latency.as_ref().map(|e| (c.mb_per_s, e.p99_ms)))
                    .collect(),
                connect,
            });
        }
        out.push_str(&line_chart(
            "end-to-end p99 vs throughput",
            "throughput, MB/s",
            "latency",
            &e2e,
        ));
    }
    out.push_str("</div>");
    trade_off(&mut out, r, &acks);
    cell_table(&mut out, r);
    out.push_str("</body></html>\n");
    Ok(out)
}

fn trade_off(out: &mut String, r: &SweepResult, acks: &[String]) {
    let lingers = distinct(&r.cells, |c| c.params.linger_ms);
    let batches = distinct(&r.cells, |c| c.params.batch_bytes);
    if lingers.len() < 2 && batches.len() < 2 {
        return;
    }
    out.push_str("<h2>The linger / batch-size trade-off</h2><p class=\"note\">One map per acks setting, rate and message size: throughput (higher is greener) and p99 produce latency (lower is greener).</p>");
    let rows: Vec<String> = lingers.iter().map(|l| format!("{l} ms")).collect();
    let cols: Vec<String> = batches
        .iter()
        .map(|b| format!("{} KiB", b / 1024))
        .collect();
    let groups = distinct(&r.cells, |c| {
        (
            c.params.acks.clone(),
            c.key_rate(),
            c.params.message_bytes.clone(),
        )
    });
    for a in acks {
        for (_, rate, size) in groups.iter().filter(|g| &g.0 == a) {
            let find = |ri: usize, ci: usize| {
                r.cells.iter().find(|c| {
                    &c.params.acks == a
                        && &c.key_rate() == rate
                        && &c.params.message_bytes == size
                        && c.params.linger_ms == lingers[ri]
                        && c.params.batch_bytes == batches[ci]
                })
            };
            out.push_str("<div class=\"charts\">");
            out.push_str(&heatmap(
                &format!("acks={a} rate={rate} size={size}: MB/s"),
                &rows,
                &cols,
                |ri, ci| find(ri, ci).map(|c| c.mb_per_s),
                |v| format!("{v:.1}"),
                true,
            ));
            out.push_str(&heatmap(
                &format!("acks={a} rate={rate} size={size}: p99"),
                &rows,
                &cols,
                |ri, ci| find(ri, ci).map(|c| c.produce_latency.p99_ms),
                fmt_ms,
                false,
            ));
            out.push_str("</div>");
        }
    }
}

fn cell_table(out: &mut String, r: &SweepResult) {
    out.push_str("<h2>Every cell</h2><table><tr><th>acks</th><th>linger ms</th><th>batch</th><th>rate</th><th>size</th><th>mode</th><th>msgs/s</th><th>MB/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>e2e p50</th><th>e2e p99</th><th>errors</th><th>loadgen cpu</th><th>broker cpu</th><th>repeats msgs/s</th></tr>");
    for c in &r.cells {
        let p = &c.produce_latency;
        let e = c.e2e_latency.clone().unwrap_or_default();
        let runs: Vec<String> = c
            .runs_msgs_per_s
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.params.acks),
            c.params.linger_ms,
            c.params.batch_bytes,
            esc(&c.params.rate),
            esc(&c.params.message_bytes),
            esc(&c.mode),
            c.msgs_per_s,
            c.mb_per_s,
            fmt_ms(p.p50_ms),
            fmt_ms(p.p90_ms),
            fmt_ms(p.p99_ms),
            fmt_ms(p.p999_ms),
            fmt_ms(p.p9999_ms),
            fmt_ms(p.max_ms),
            fmt_ms(e.p50_ms),
            fmt_ms(e.p99_ms),
            c.errors.values().sum::<u64>(),
            c.loadgen_cpu_cores,
            c.broker_cpu_cores.map_or("-".into(), |b| format!("{b:.2}")),
            runs.join(" ")
        );
    }
    out.push_str("</table>");
}

impl Cell {
    /// The rate as written in the scenario ("max", "25%", "20000").
    pub fn key_rate(&self) -> String {
        self.key
            .split(' ')
            .find_map(|w| w.strip_prefix("rate="))
            .unwrap_or("")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_self_contained_svg() {
        let s = line_chart(
            "t",
            "x",
            "y",
            &[Series {
                name: "a<b".into(),
                color: "#000".into(),
                dash: "",
                points: vec![(1.0, 0.5), (2.0, 20.0)],
                connect: true,
            }],
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("a&lt;b"));
        assert!(!s.contains("<script"));
    }
}
