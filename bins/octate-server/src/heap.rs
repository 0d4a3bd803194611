//! Heap figures from jemalloc's own statistics.

use octate_transport::{HeapProbe, HeapSample, RssProbe};

/// Reads `stats.allocated` and `stats.resident` from jemalloc.
#[derive(Debug)]
pub(crate) struct JemallocProbe;

impl JemallocProbe {
    /// Turns on jemalloc's background threads so freed memory goes back to the OS.
    pub(crate) fn new() -> Self {
        #[cfg(not(target_env = "msvc"))]
        let _ = tikv_jemalloc_ctl::background_thread::write(true);
        Self
    }
}

impl HeapProbe for JemallocProbe {
    #[cfg(not(target_env = "msvc"))]
    fn sample(&self) -> HeapSample {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are cached until the epoch advances.
        if epoch::advance().is_err() {
            return RssProbe.sample();
        }
        match (stats::allocated::read(), stats::resident::read()) {
            (Ok(allocated), Ok(resident)) => HeapSample {
                allocated: allocated as u64,
                resident: resident as u64,
            },
            _ => RssProbe.sample(),
        }
    }

    #[cfg(target_env = "msvc")]
    fn sample(&self) -> HeapSample {
        RssProbe.sample()
    }
}
