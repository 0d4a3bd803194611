//! The audit file (`OCTATE_AUDIT_LOG`): the audit records as JSON lines of their own,
//! appended, and reopened on SIGHUP so that logrotate can move the file away.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use octate_transport::AUDIT_TARGET;
use parking_lot::{Mutex, MutexGuard};
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

/// The audit file, shared by the log layer that writes it and the SIGHUP task that
/// reopens it.
#[derive(Clone, Debug)]
pub(crate) struct AuditLog(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Each record is one `write` under this lock, so lines never interleave.
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (or creates) the file at `path` for appending.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Ok(Self(Arc::new(Inner {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        })))
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.0.path
    }

    /// Opens the path afresh and writes there from now on; on an error the old file
    /// stays in use.
    pub(crate) fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.0.path)?;
        *self.0.file.lock() = file;
        Ok(())
    }

    /// The log layer that writes the records of the target `octate::audit`, and only
    /// those, to this file as JSON lines with their fields at the top level.
    pub(crate) fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .with_writer(self.clone())
            .with_filter(Targets::new().with_target(AUDIT_TARGET, Level::INFO))
    }
}

/// Opens `path` for appending, creating it readable by its owner and group only.
fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path)
}

/// The file, locked for one record.
pub(crate) struct AuditWriter<'a>(MutexGuard<'a, File>);

impl Write for AuditWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for AuditLog {
    type Writer = AuditWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        AuditWriter(self.0.file.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_follows_the_path_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("octate-audit-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("audit.log");
        let rotated = dir.join("audit.log.1");
        let log = AuditLog::open(&path).expect("opens");
        log.make_writer().write_all(b"one\n").expect("writes");
        std::fs::rename(&path, &rotated).expect("rename");
        log.make_writer().write_all(b"two\n").expect("writes");
        log.reopen().expect("reopens");
        log.make_writer().write_all(b"three\n").expect("writes");
        assert_eq!(
            std::fs::read_to_string(&rotated).expect("old"),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("new"), "three\n");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
