//! Latency histograms and what /proc says about a process.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

use crate::Ctx;

/// When the load starts, when measuring starts, when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Load starts.
    pub(crate) start: Instant,
    /// Measuring starts (after the warm-up).
    pub(crate) from: Instant,
    /// Measuring and load end.
    pub(crate) until: Instant,
}

impl Window {
    /// A window starting `lead` from now, with the run's warm-up and duration.
    pub(crate) fn after(lead: Duration, ctx: &Ctx) -> Self {
        let start = Instant::now() + lead;
        let from = start + ctx.warmup();
        Self {
            start,
            from,
            until: from + ctx.duration(),
        }
    }

    /// Whether `t` falls in the measured part.
    pub(crate) fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.until
    }

    /// Measures CPU use (the server processes and the generator) over the measured part,
    /// in the background.
    pub(crate) fn measure_cpu(self, server_pids: Vec<u32>) -> tokio::task::JoinHandle<Value> {
        tokio::spawn(async move {
            tokio::time::sleep_until(self.from).await;
            let a = CpuMark::now(&server_pids);
            tokio::time::sleep_until(self.until).await;
            a.usage(&CpuMark::now(&server_pids))
        })
    }
}

/// A histogram of microseconds, 1 µs to 60 s, three significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    // Invariant: the bounds are valid constants.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records microsecond samples into a histogram, clamped to its range.
pub(crate) fn record_all(h: &mut Histogram<u64>, samples: &[u32]) {
    for &s in samples {
        h.saturating_record(u64::from(s.max(1)));
    }
}

/// p50/p99/p99.9/max in milliseconds.
pub(crate) fn summary_ms(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "samples": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    })
}

/// Resident set size of a process, bytes (`VmRSS` in /proc/<pid>/status).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User and system CPU time of a process, seconds (fields 14 and 15 of /proc/<pid>/stat).
pub(crate) fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((utime / ticks, stime / ticks))
}

/// CPU time of the server processes (those whose pid is known) and of this process at
/// one moment.
#[derive(Debug, Clone)]
pub(crate) struct CpuMark {
    /// (user, system) seconds of each server process, in pid order.
    servers: Vec<Option<(f64, f64)>>,
    me: Option<(f64, f64)>,
    at: std::time::Instant,
}

impl CpuMark {
    /// The CPU time of `server_pids` and of this process, now.
    pub(crate) fn now(server_pids: &[u32]) -> Self {
        Self {
            servers: server_pids.iter().map(|&pid| cpu_seconds(pid)).collect(),
            me: cpu_seconds(std::process::id()),
            at: std::time::Instant::now(),
        }
    }

    /// CPU use between `self` and `later`, in percent of one core: the servers' summed
    /// (and split into user and kernel time), each server's when there are several, and
    /// the generator's.
    pub(crate) fn usage(&self, later: &Self) -> Value {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let pct = |x: f64| json!((x / secs * 1000.0).round() / 10.0);
        let delta = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
            (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
            _ => None,
        };
        let per_server: Vec<Option<(f64, f64)>> = self
            .servers
            .iter()
            .zip(&later.servers)
            .map(|(a, b)| delta(*a, *b))
            .collect();
        // The sum only when every server could be read, so a total never hides a gap.
        let total: Option<(f64, f64)> = if per_server.is_empty() {
            None
        } else {
            per_server
                .iter()
                .try_fold((0.0, 0.0), |acc, d| d.map(|d| (acc.0 + d.0, acc.1 + d.1)))
        };
        let show =
            |d: Option<(f64, f64)>, f: fn((f64, f64)) -> f64| d.map_or(Value::Null, |d| pct(f(d)));
        let mut out = json!({
            "server_cpu_pct": show(total, |(u, s)| u + s),
            "server_user_pct": show(total, |(u, _)| u),
            "server_sys_pct": show(total, |(_, s)| s),
            "generator_cpu_pct": show(delta(self.me, later.me), |(u, s)| u + s),
        });
        if per_server.len() > 1 {
            out["server_cpu_pct_per_node"] = per_server
                .iter()
                .map(|d| show(*d, |(u, s)| u + s))
                .collect();
        }
        out
    }
}

/// Kernel memory held by TCP sockets, bytes (the `mem` pages of /proc/net/sockstat).
pub(crate) fn tcp_kernel_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            let pages: u64 = words.next()?.parse().ok()?;
            return Some(pages * 4096);
        }
    }
    None
}

/// Sum of the values, or `None` if any is unknown (or there are none).
pub(crate) fn sum_all(values: &[Option<u64>]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.iter().try_fold(0u64, |acc, v| v.map(|v| acc + v))
}

/// Rounds to two decimals.
pub(crate) fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Rounds to one decimal.
pub(crate) fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Server CPU time per operation, microseconds: `cpu` from [`CpuMark::usage`] over the
/// window, `rate` operations per second in the same window.
pub(crate) fn server_us_per_op(cpu: &Value, rate: f64) -> Value {
    match cpu["server_cpu_pct"].as_f64() {
        Some(pct) if rate > 0.0 => json!(r2(pct / 100.0 / rate * 1e6)),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(servers: Vec<Option<(f64, f64)>>, at: std::time::Instant) -> CpuMark {
        CpuMark {
            servers,
            me: Some((0.0, 0.0)),
            at,
        }
    }

    #[test]
    fn server_cpu_is_summed_over_nodes_and_shown_per_node() {
        let t0 = std::time::Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let a = mark(vec![Some((1.0, 1.0)), Some((5.0, 0.0))], t0);
        let b = mark(vec![Some((2.0, 1.5)), Some((6.0, 1.0))], t1);
        let u = a.usage(&b);
        // 1.5 s + 2 s of CPU over 2 s.
        assert_eq!(u["server_cpu_pct"], 175.0);
        assert_eq!(u["server_user_pct"], 100.0);
        assert_eq!(u["server_sys_pct"], 75.0);
        assert_eq!(u["server_cpu_pct_per_node"], json!([75.0, 100.0]));

        // One node: the same figures as before, and no per-node list.
        let one = mark(vec![Some((1.0, 1.0))], t0).usage(&mark(vec![Some((2.0, 1.0))], t1));
        assert_eq!(one["server_cpu_pct"], 50.0);
        assert!(one.get("server_cpu_pct_per_node").is_none());

        // A node that could not be read leaves the total unknown rather than too small.
        let gap =
            mark(vec![Some((0.0, 0.0)), None], t0).usage(&mark(vec![Some((1.0, 0.0)), None], t1));
        assert_eq!(gap["server_cpu_pct"], Value::Null);
        assert_eq!(gap["server_cpu_pct_per_node"], json!([50.0, null]));
        let none = mark(Vec::new(), t0).usage(&mark(Vec::new(), t1));
        assert_eq!(none["server_cpu_pct"], Value::Null);
    }

    #[test]
    fn sums_need_every_value() {
        assert_eq!(sum_all(&[Some(1), Some(2)]), Some(3));
        assert_eq!(sum_all(&[Some(1), None]), None);
        assert_eq!(sum_all(&[]), None);
    }
}
