//! The status page (`GET /status`): one self-contained HTML document (inline CSS and SVG, no
//! script, refreshes itself every 5 s) showing this node, its tables and each replication
//! link with state, lag, throughput sparkline, full-copy progress and certificate expiry.
//! Works offline on the box. Every name on it is HTML-escaped.

use super::{history, LinkSnap, Snapshot};
use std::fmt::Write;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An inline SVG polyline of `values` (scaled to their maximum), with the last value.
fn sparkline(values: &[f64]) -> String {
    let (w, h) = (160.0, 28.0);
    if values.len() < 2 {
        return "<span class=\"muted\">collecting…</span>".to_string();
    }
    let max = values.iter().cloned().fold(0.0_f64, f64::max).max(1.0);
    let step = w / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - v / max * (h - 2.0) - 1.0
            )
        })
        .collect();
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><polyline fill=\"none\" stroke=\"#2a7\" stroke-width=\"1.5\" points=\"{}\"/></svg> <span>{:.0}/s</span>",
        points.join(" "),
        values.last().copied().unwrap_or(0.0)
    )
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn link_row(out: &mut String, l: &LinkSnap) {
    let state = match (l.receiving, l.sending) {
        (true, true) => "<span class=\"ok\">connected</span>",
        (true, false) => "<span class=\"warn\">receiving only</span>",
        (false, true) => "<span class=\"warn\">sending only</span>",
        (false, false) => "<span class=\"bad\">down</span>",
    };
    let copy = match (l.copy_in, l.copy_out) {
        (Some((done, total)), _) | (_, Some((done, total))) => {
            let dir = if l.copy_in.is_some() {
                "receiving"
            } else {
                "sending"
            };
            if total > 0 {
                format!(
                    "{dir} {done} / {total} ({:.0}%)",
                    done as f64 * 100.0 / total as f64
                )
            } else {
                format!("{dir} {done}")
            }
        }
        _ => "—".to_string(),
    };
    let cert = match l.cert_days_left {
        Some(d) if d < super::super::tls::info::EXPIRY_WARNING_DAYS => {
            format!("<span class=\"warn\">expires in {d} days</span>")
        }
        Some(d) => format!("{d} days"),
        None => "—".to_string(),
    };
    let error = l
        .last_error
        .as_ref()
        .map(|(ms, e)| {
            format!(
                "<br><span class=\"muted\">last error {}: {}</span>",
                esc(&crate::util::time::iso8601(*ms)),
                esc(e)
            )
        })
        .unwrap_or_default();
    let _ = write!(
        out,
        "<tr class=\"link\"><td>{}</td><td>{}</td><td>{state}{error}</td><td>{:.1} s / {} records</td><td>{}</td><td>{copy}</td><td>{cert}</td></tr>",
        esc(&l.peer),
        esc(&l.database),
        l.lag_ms as f64 / 1000.0,
        l.lag_records,
        sparkline(&history::link_records_per_s(&l.peer, &l.database)),
    );
}

/// The page for `snap`, with the node's version and start time.
pub fn render(snap: &Snapshot, started_ms: u64) -> String {
    let mut out = String::with_capacity(8192);
    let now = crate::util::time::now_ms();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"5\"><title>Skerry {node}</title>\
<style>body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
td,th{{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left;vertical-align:top}}th{{background:#f4f4f4}}\
.ok{{color:#185}}.warn{{color:#b60}}.bad{{color:#c22;font-weight:bold}}.muted{{color:#888}}svg.spark{{vertical-align:middle}}</style>\
</head><body><h1>Skerry node <span id=\"node\">{node}</span></h1>\
<p id=\"summary\">{health} · version {version} · up since {since} · {rss} resident · {conns} open connections · {links} replication links</p>\
<p>Requests: {spark}</p>",
        node = esc(&snap.node),
        health = if snap.core_alive {
            "<span class=\"ok\">healthy</span>"
        } else {
            "<span class=\"bad\">core not running</span>"
        },
        version = env!("CARGO_PKG_VERSION"),
        since = esc(&crate::util::time::iso8601(started_ms)),
        rss = human_bytes(snap.rss_bytes),
        conns = snap.connections,
        links = snap.links.len(),
        spark = sparkline(&history::requests_per_s()),
    );
    out.push_str("<h2>Replication</h2>");
    if snap.links.is_empty() {
        out.push_str("<p class=\"muted\">No peers.</p>");
    } else {
        out.push_str("<table id=\"links\"><tr><th>Peer</th><th>Database</th><th>State</th><th>Lag</th><th>Throughput</th><th>Full copy</th><th>Certificate</th></tr>");
        for l in &snap.links {
            link_row(&mut out, l);
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Tables</h2>");
    if snap.tables.is_empty() {
        out.push_str("<p class=\"muted\">No tables.</p>");
    } else {
        out.push_str("<table id=\"tables\"><tr><th>Database</th><th>Table</th><th>Records</th><th>Size</th></tr>");
        for t in &snap.tables {
            let _ = write!(
                out,
                "<tr class=\"table\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.database),
                esc(&t.table),
                t.records,
                human_bytes(t.bytes)
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(
        out,
        "<p class=\"muted\">Generated {} · refreshes every 5 s · <a href=\"/metrics\">metrics</a></p></body></html>",
        esc(&crate::util::time::iso8601(now))
    );
    out
}
