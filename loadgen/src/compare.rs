//! `loadgen compare A.json B.json`: two sweeps (or single runs) side by side,
//! cells matched by their parameters, with B/A ratios.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::stats::fmt_ms;
use crate::sweep::{self, Cell, SweepResult};

pub fn main(a: &Path, b: &Path) -> Result<()> {
    let (ra, rb) = (sweep::load(a)?, sweep::load(b)?);
    println!("A: {} ({} {})", a.display(), ra.host, ra.started);
    println!("B: {} ({} {})", b.display(), rb.host, rb.started);
    print!("{}", render(&ra, &rb));
    Ok(())
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("{:.2}x", b / a)
    } else {
        "-".into()
    }
}

/// Cells that match by key; when only one cell each, they are compared
/// whatever their keys (two single runs).
fn pairs<'a>(a: &'a SweepResult, b: &'a SweepResult) -> Vec<(&'a Cell, Option<&'a Cell>)> {
    if a.cells.len() == 1 && b.cells.len() == 1 {
        return vec![(&a.cells[0], Some(&b.cells[0]))];
    }
    a.cells
        .iter()
        .map(|ca| (ca, b.cells.iter().find(|cb| cb.key == ca.key)))
        .collect()
}

pub fn render(a: &SweepResult, b: &SweepResult) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<58} {:>10} {:>10} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
        "cell",
        "A msgs/s",
        "B msgs/s",
        "B/A",
        "A p50",
        "B p50",
        "B/A",
        "A p99",
        "B p99",
        "B/A",
        "A p99.9",
        "B p99.9",
        "B/A"
    );
    for (ca, cb) in pairs(a, b) {
        let label: String = ca.key.chars().take(58).collect();
        let Some(cb) = cb else {
            let _ = writeln!(t, "{label:<58} {:>10.0} {:>10}", ca.msgs_per_s, "(missing)");
            continue;
        };
        let (pa, pb) = (&ca.produce_latency, &cb.produce_latency);
        let _ = writeln!(
            t,
            "{label:<58} {:>10.0} {:>10.0} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}",
            ca.msgs_per_s,
            cb.msgs_per_s,
            ratio(ca.msgs_per_s, cb.msgs_per_s),
            fmt_ms(pa.p50_ms),
            fmt_ms(pb.p50_ms),
            ratio(pa.p50_ms, pb.p50_ms),
            fmt_ms(pa.p99_ms),
            fmt_ms(pb.p99_ms),
            ratio(pa.p99_ms, pb.p99_ms),
            fmt_ms(pa.p999_ms),
            fmt_ms(pb.p999_ms),
            ratio(pa.p999_ms, pb.p999_ms),
        );
    }
    for cb in &b.cells {
        if a.cells.len() > 1 && !a.cells.iter().any(|ca| ca.key == cb.key) {
            let label: String = cb.key.chars().take(58).collect();
            let _ = writeln!(t, "{label:<58} {:>10} {:>10.0}", "(missing)", cb.msgs_per_s);
        }
    }
    t
}
