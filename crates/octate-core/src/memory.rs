//! The memory policy: which level a heap reading falls into.

/// Memory pressure level derived from a heap reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemoryLevel {
    /// Below the warning threshold: nothing to do.
    Normal,
    /// At or above the warning threshold: run the normal cleanup now.
    Warning,
    /// At or above the critical threshold: also close idle rooms and drop idle peers.
    Critical,
}

impl MemoryLevel {
    /// Classifies a heap reading against the two thresholds.
    pub fn classify(heap_bytes: u64, warning_bytes: u64, critical_bytes: u64) -> Self {
        if heap_bytes >= critical_bytes {
            Self::Critical
        } else if heap_bytes >= warning_bytes {
            Self::Warning
        } else {
            Self::Normal
        }
    }

    /// The level's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_against_both_thresholds() {
        assert_eq!(MemoryLevel::classify(199, 200, 300), MemoryLevel::Normal);
        assert_eq!(MemoryLevel::classify(200, 200, 300), MemoryLevel::Warning);
        assert_eq!(MemoryLevel::classify(299, 200, 300), MemoryLevel::Warning);
        assert_eq!(MemoryLevel::classify(300, 200, 300), MemoryLevel::Critical);
    }
}
