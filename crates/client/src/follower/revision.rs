//! Where a follower keeps the last revision it delivered, so a restart resumes instead of
//! re-reading a snapshot: the [`RevisionStore`] trait and a file implementation.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// Loads and saves the revision a [`crate::RevocationFollower`] resumes after.
///
/// The follower saves a revision only once the consumer has handled every event up to it, and
/// never in the middle of a snapshot; so a saved revision is always a safe place to resume.
pub trait RevisionStore {
    /// The saved revision, or `None` when there is none. A store that cannot be read should
    /// also answer `None`: the follower then re-reads a snapshot, which is always correct.
    fn load(&mut self) -> Option<u64>;

    /// Saves `revision`, replacing the previous one.
    ///
    /// # Errors
    /// The revision could not be saved; the follower reports it and carries on.
    fn save(&mut self, revision: u64) -> std::io::Result<()>;
}

/// No store: the revision lives in memory only, and every start begins with a snapshot.
impl<S: RevisionStore> RevisionStore for Option<S> {
    fn load(&mut self) -> Option<u64> {
        self.as_mut().and_then(RevisionStore::load)
    }

    fn save(&mut self, revision: u64) -> std::io::Result<()> {
        self.as_mut().map_or(Ok(()), |s| s.save(revision))
    }
}

/// The revision as decimal text in a file (mode 0600), replaced atomically: written to
/// `<file>.tmp`, then renamed over the file, so a crash leaves the old or the new value and
/// never a torn one. Not fsynced: a revision lost to a power cut only means events are
/// delivered again (consumers apply revocations idempotently), and a garbled file means a
/// snapshot; neither loses a revocation.
#[derive(Debug, Clone)]
pub struct RevisionFile {
    path: PathBuf,
}

impl RevisionFile {
    /// A store at `path`; nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tmp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.path.with_file_name(name)
    }
}

impl RevisionStore for RevisionFile {
    fn load(&mut self) -> Option<u64> {
        std::fs::read_to_string(&self.path)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn save(&mut self, revision: u64) -> std::io::Result<()> {
        let tmp = self.tmp_path();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        // `mode` applies only when the file is created; a leftover temp file keeps its mode.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(format!("{revision}\n").as_bytes())?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_replaces_and_tolerates_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rev");
        let mut file = RevisionFile::new(&path);
        assert_eq!(file.load(), None);
        file.save(42).expect("save");
        assert_eq!(file.load(), Some(42));
        file.save(43).expect("save again");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "43\n");
        assert!(!file.tmp_path().exists(), "the temp file is renamed away");
        std::fs::write(&path, "garbage").expect("write");
        assert_eq!(file.load(), None);
        let mut none: Option<RevisionFile> = None;
        assert_eq!(none.load(), None);
        none.save(1).expect("nothing to save");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RevisionFile::new(dir.path().join("rev"));
        // A leftover temp file from a crash, world-readable.
        std::fs::write(file.tmp_path(), "1").expect("write");
        std::fs::set_permissions(file.tmp_path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        file.save(7).expect("save");
        let mode = std::fs::metadata(file.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
