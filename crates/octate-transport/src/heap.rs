//! Where heap figures come from: the allocator's own statistics, chosen by the binary.

/// One heap measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapSample {
    /// Bytes the program has allocated and not freed.
    pub allocated: u64,
    /// Bytes the allocator holds from the operating system.
    pub resident: u64,
}

/// Measures the process's heap; the binary supplies one backed by its allocator.
pub trait HeapProbe: Send + Sync + 'static {
    /// Takes a fresh measurement.
    fn sample(&self) -> HeapSample;
    /// Returns unused memory to the operating system, if the allocator can.
    fn release(&self) {}
}

/// Falls back on the resident set size from `/proc/self/statm` for both figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct RssProbe;

impl HeapProbe for RssProbe {
    fn sample(&self) -> HeapSample {
        let rss = rss_bytes().unwrap_or(0);
        HeapSample {
            allocated: rss,
            resident: rss,
        }
    }
}

/// Resident set size of this process, on Linux.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
