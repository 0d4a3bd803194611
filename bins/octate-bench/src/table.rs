//! `table`: a Markdown side-by-side table from the JSON lines of earlier runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::Res;

/// One cell of the table: a number, or text (such as "min/max").
#[derive(Debug, Clone)]
enum Cell {
    Num(f64),
    Text(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Num(x) if x.abs() >= 100.0 => write!(f, "{}", group(x.round() as i64)),
            Self::Num(x) => write!(f, "{x:.2}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// 12345 → "12,345".
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn num(v: &Value) -> Option<Cell> {
    v.as_f64().map(Cell::Num)
}

/// What one operation is, for the CPU-per-operation row.
fn per_op(line: &Value) -> &'static str {
    match line["scenario"].as_str() {
        Some("relay") => "relayed message",
        Some("churn") => "session",
        _ => "delivery",
    }
}

/// The rows one result contributes: (row name, cell).
fn rows(line: &Value) -> Vec<(String, Option<Cell>)> {
    let p = &line["params"];
    let m = &line["metrics"];
    let cpu = |m: &Value| num(&m["cpu"]["server_cpu_pct"]);
    match line["scenario"].as_str().unwrap_or("") {
        "relay" => {
            let name = format!("relay P={} W={}", p["pairs"], p["window"]);
            vec![
                (
                    format!("{name}: relayed msgs/s"),
                    num(&m["relayed_msgs_per_sec"]),
                ),
                (format!("{name}: RTT p50 ms"), num(&m["rtt"]["p50_ms"])),
                (format!("{name}: RTT p99 ms"), num(&m["rtt"]["p99_ms"])),
                (format!("{name}: RTT p99.9 ms"), num(&m["rtt"]["p999_ms"])),
                (
                    format!("{name}: round trips per pair min/max (starved)"),
                    Some(Cell::Text(format!(
                        "{}/{} ({})",
                        m["per_pair"]["min"], m["per_pair"]["max"], m["per_pair"]["starved"]
                    ))),
                ),
                (format!("{name}: server CPU %"), cpu(m)),
                (
                    format!("{name}: server CPU µs per {}", per_op(line)),
                    num(&m["server_cpu_us_per_op"]),
                ),
            ]
        }
        "churn" => {
            let name = format!("churn C={}", p["workers"]);
            vec![
                (format!("{name}: sessions/s"), num(&m["sessions_per_sec"])),
                (format!("{name}: join p50 ms"), num(&m["join"]["p50_ms"])),
                (format!("{name}: join p99 ms"), num(&m["join"]["p99_ms"])),
                (format!("{name}: errors"), num(&m["errors"])),
                (format!("{name}: server CPU %"), cpu(m)),
                (
                    format!("{name}: server CPU µs per {}", per_op(line)),
                    num(&m["server_cpu_us_per_op"]),
                ),
            ]
        }
        "idle" => {
            let name = format!("idle N={}", p["peers"]);
            vec![
                (format!("{name}: peers connected"), num(&m["connected"])),
                (
                    format!("{name}: connect+auth/s"),
                    num(&m["connect_per_sec"]),
                ),
                (format!("{name}: join p99 ms"), num(&m["join"]["p99_ms"])),
                (
                    format!("{name}: server RSS per peer, bytes"),
                    num(&m["rss_per_peer_bytes"]),
                ),
                (
                    format!("{name}: server heap per peer, bytes (Octate /stats)"),
                    num(&m["heap_per_peer_bytes"]),
                ),
            ]
        }
        "fanout" => {
            let name = format!("fanout {} rooms of {}", p["rooms"], p["room_size"]);
            vec![
                (
                    format!("{name}: deliveries/s"),
                    num(&m["deliveries_per_sec"]),
                ),
                (
                    format!("{name}: latency p50 ms"),
                    num(&m["latency"]["p50_ms"]),
                ),
                (
                    format!("{name}: latency p99 ms"),
                    num(&m["latency"]["p99_ms"]),
                ),
                (format!("{name}: server CPU %"), cpu(m)),
                (
                    format!("{name}: server CPU µs per {}", per_op(line)),
                    num(&m["server_cpu_us_per_op"]),
                ),
            ]
        }
        _ => Vec::new(),
    }
}

/// Row names in first-seen order, and each row's (Octate, matchbox) cells.
type Table = (Vec<String>, BTreeMap<String, [Option<Cell>; 2]>);

pub(crate) fn run(inputs: &[PathBuf]) -> Res<()> {
    if inputs.is_empty() {
        return Err("table: give --input FILE (JSON lines from earlier runs)".into());
    }
    // label → row → (octate, matchbox), rows in first-seen order.
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for path in inputs {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(line)?;
            let col = match v["target"].as_str() {
                Some("octate") => 0,
                Some("matchbox") => 1,
                _ => continue,
            };
            let label = v["label"].as_str().unwrap_or("").to_owned();
            let (order, cells) = tables.entry(label).or_default();
            for (row, cell) in rows(&v) {
                if !cells.contains_key(&row) {
                    order.push(row.clone());
                }
                cells.entry(row).or_insert([None, None])[col] = cell;
            }
        }
    }
    for (label, (order, cells)) in &tables {
        println!(
            "\n#### {}\n",
            if label.is_empty() {
                "(no label)"
            } else {
                label
            }
        );
        println!("| scenario | Octate | matchbox | Octate ÷ matchbox |");
        println!("|---|---:|---:|---:|");
        for row in order {
            let [o, m] = &cells[row];
            let show = |c: &Option<Cell>| {
                c.as_ref()
                    .map_or_else(|| "–".to_owned(), ToString::to_string)
            };
            let ratio = match (o, m) {
                (Some(Cell::Num(a)), Some(Cell::Num(b))) if *b != 0.0 => format!("{:.2}", a / b),
                _ => "–".to_owned(),
            };
            println!("| {row} | {} | {} | {ratio} |", show(o), show(m));
        }
    }
    Ok(())
}
