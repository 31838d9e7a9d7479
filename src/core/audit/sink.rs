//! The audit log sink: one JSON object per line, appended to a file (created 0600) or written
//! to stdout. Each line goes out in one `write(2)` before the caller answers its client, so a
//! line is in the kernel (and survives a crash of this process) by the time the client hears
//! back; a failed write is returned to the caller, which fails the request instead of losing
//! the line. What a line contains is decided by [`super::AuditEvent`].

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDestination {
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl std::str::FromStr for AuditDestination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("expected a file path or - for stdout".into()),
            "-" => Ok(Self::Stdout),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

enum Sink {
    Stdout,
    File(File),
}

/// A handle on the audit log; clones share one sink. The default writes nothing.
#[derive(Clone, Default)]
pub struct AuditLog(Option<Arc<Mutex<Sink>>>);

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuditLog")
            .field(&if self.0.is_some() { "on" } else { "off" })
            .finish()
    }
}

/// Two handles are equal when they share one sink (or both are off): configurations compare
/// by where their lines go, not by what was written.
impl PartialEq for AuditLog {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for AuditLog {}

impl AuditLog {
    /// No audit log: the default.
    pub const OFF: Self = Self(None);

    /// Opens the destination: a file is created with mode 0600 if missing and appended to.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn open(destination: &AuditDestination) -> io::Result<Self> {
        let sink = match destination {
            AuditDestination::Stdout => Sink::Stdout,
            AuditDestination::File(path) => Sink::File(open_private_append(path)?),
        };
        Ok(Self(Some(Arc::new(Mutex::new(sink)))))
    }

    /// Whether lines are written at all.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Writes one record as a JSON line. A no-op when the log is off.
    ///
    /// # Errors
    /// Encoding or writing failed; the line is not in the log.
    pub fn write(&self, record: &impl serde::Serialize) -> io::Result<()> {
        let Some(sink) = &self.0 else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        // The lock keeps lines whole and in order; nothing panics while holding it.
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            // One write of the whole line with O_APPEND: lines never interleave, even with
            // another process (the keyring CLI) appending to the same file.
            Sink::File(file) => file.write_all(&line),
        }
    }
}

/// Opens `path` for appending, creating it 0600; warns when an existing file is readable by
/// others (the operator chose that, so it is left alone).
pub fn open_private_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the audit log is accessible to other users");
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&AuditDestination::File(path.clone())).unwrap();
        log.write(&serde_json::json!({"a": 1})).unwrap();
        // A second open (a restart) appends after the first line.
        let again = AuditLog::open(&AuditDestination::File(path.clone())).unwrap();
        again.write(&serde_json::json!({"b": "two"})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":\"two\"}\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            "-".parse::<AuditDestination>(),
            Ok(AuditDestination::Stdout)
        );
        assert!(!AuditLog::default().is_enabled());
        assert!(AuditLog::default().write(&1).is_ok());
    }
}
