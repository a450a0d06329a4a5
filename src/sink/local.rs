//! The file sink: writes rendered bytes atomically (temporary file, fsync, rename, fsync of
//! the folder) and never replaces a file with other bytes (SPEC §5).
//!
//! Paths come only from bucket times and checkpoint numbers, never from record content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Committer;
pub use super::{SinkError, Written};

pub struct FileSink {
    root: PathBuf,
    /// Staged and not committed: temporary file and final path, or `None` for an object
    /// that was there already with the same bytes.
    staged: Vec<Option<(PathBuf, PathBuf)>>,
    /// Folders the staged files go to, each synced once at commit.
    dirs: Vec<PathBuf>,
}

/// The folders below the root that the job writes.
pub const FOLDERS: [&str; 4] = ["time_kpi", "country_kpi", "rejected", "gaps"];

impl FileSink {
    /// Opens the output folder, and removes the temporary files a killed job left there
    /// (each is rewritten whole before any rename, so none is ever needed again).
    pub fn new(root: &Path) -> Result<FileSink, SinkError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SinkError::Io { path, source }
        };
        fs::create_dir_all(root).map_err(io_err(root))?;
        for folder in FOLDERS {
            let dir = root.join(folder);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            let mut removed = 0u64;
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                    removed += 1;
                }
            }
            if removed > 0 {
                tracing::info!(
                    folder,
                    removed,
                    "removed temporary files a stopped job left"
                );
            }
        }
        Ok(FileSink {
            root: root.into(),
            staged: Vec::new(),
            dirs: Vec::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `rel` (a path below the root made by this crate) with `bytes`, atomically.
    pub fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<Written, SinkError> {
        self.stage(rel, bytes)?;
        Ok(self.commit()?[0])
    }
}

/// Each object is a file, written atomically: staging writes a temporary file beside it;
/// committing makes every staged file durable at once (one `syncfs` per folder's file
/// system on Linux, one fsync per file elsewhere), then renames each into place, then syncs
/// each folder touched once. A rendering step that writes many files (a backfill of a
/// realistic stream) pays durability once, not once per file; each file is either absent
/// or complete, because no rename happens before its bytes are on disk.
impl Committer for FileSink {
    fn stage(&mut self, rel: &str, bytes: &[u8]) -> Result<(), SinkError> {
        let path = self.root.join(rel);
        let io_err = |source| SinkError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(existing) if existing == *bytes => {
                self.staged.push(None);
                return Ok(());
            }
            Ok(_) => return Err(SinkError::Conflict { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let dir = path
            .parent()
            .expect("a relative path below the root has a parent");
        if !self.dirs.iter().any(|d| d == dir) {
            fs::create_dir_all(dir).map_err(io_err)?;
            self.dirs.push(dir.to_owned());
        }
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().expect("a file name").to_string_lossy()
        ));
        let mut f = open_new_0644(&tmp).map_err(io_err)?;
        f.write_all(bytes).map_err(io_err)?;
        self.staged.push(Some((tmp, path)));
        Ok(())
    }

    fn commit(&mut self) -> Result<Vec<Written>, SinkError> {
        let staged = std::mem::take(&mut self.staged);
        let dirs = std::mem::take(&mut self.dirs);
        make_durable(&staged, &dirs)?;
        crate::failpoint!("sink.after_tmp_before_rename");
        let mut outcome = Vec::with_capacity(staged.len());
        let mut renamed = 0;
        for s in staged {
            let Some((tmp, path)) = s else {
                outcome.push(Written::AlreadyThere);
                continue;
            };
            if renamed > 0 {
                crate::failpoint!("render.between_files");
            }
            fs::rename(&tmp, &path).map_err(|source| SinkError::Io {
                path: path.clone(),
                source,
            })?;
            renamed += 1;
            outcome.push(Written::New);
        }
        for dir in &dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| SinkError::Io {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(outcome)
    }

    fn exists(&self, rel: &str) -> Result<bool, SinkError> {
        Ok(self.root.join(rel).exists())
    }
}

/// The staged temporary files' bytes on disk before any is renamed.
#[cfg(target_os = "linux")]
fn make_durable(staged: &[Option<(PathBuf, PathBuf)>], dirs: &[PathBuf]) -> Result<(), SinkError> {
    use std::os::fd::AsRawFd;
    if staged.iter().all(Option::is_none) {
        return Ok(());
    }
    // One syncfs per folder: the folders are usually one file system, and a second call
    // finds nothing dirty; a folder mounted elsewhere is synced too.
    for dir in dirs {
        let io_err = |source| SinkError::Io {
            path: dir.clone(),
            source,
        };
        let d = File::open(dir).map_err(io_err)?;
        // SAFETY: `d` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn make_durable(staged: &[Option<(PathBuf, PathBuf)>], _dirs: &[PathBuf]) -> Result<(), SinkError> {
    for (tmp, _) in staged.iter().flatten() {
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|source| SinkError::Io {
                path: tmp.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Creates a new temporary file: never opens an existing one, and never follows a link at
/// its name (so nothing can make the job write through a link planted there). A file or
/// link left at the name is removed first: the name is the job's own.
fn open_new_0644(p: &Path) -> io::Result<File> {
    match create_new_0644(p) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(p)?;
            create_new_0644(p)
        }
        other => other,
    }
}

#[cfg(unix)]
fn create_new_0644(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(p)
}

#[cfg(not(unix))]
fn create_new_0644(p: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_refuses_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path()).unwrap();
        assert_eq!(s.write("time_kpi/a.json", b"x\n").unwrap(), Written::New);
        assert_eq!(
            s.write("time_kpi/a.json", b"x\n").unwrap(),
            Written::AlreadyThere
        );
        assert!(matches!(
            s.write("time_kpi/a.json", b"y\n"),
            Err(SinkError::Conflict { .. })
        ));
        assert_eq!(
            fs::read(dir.path().join("time_kpi/a.json")).unwrap(),
            b"x\n"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("time_kpi")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("time_kpi/a.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777 & !0o022, 0o644 & !0o022);
        }
    }

    #[test]
    fn a_batch_writes_every_file_and_skips_identical_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path()).unwrap();
        s.write("a/1.json", b"one\n").unwrap();
        let got = s
            .write_all(&[
                ("a/1.json".into(), b"one\n".to_vec()),
                ("a/2.json".into(), b"two\n".to_vec()),
                ("b/3.json".into(), b"three\n".to_vec()),
            ])
            .unwrap();
        assert_eq!(got, [Written::AlreadyThere, Written::New, Written::New]);
        assert_eq!(fs::read(dir.path().join("b/3.json")).unwrap(), b"three\n");
        let conflict = s.write_all(&[("a/2.json".into(), b"other\n".to_vec())]);
        assert!(matches!(conflict, Err(SinkError::Conflict { .. })));
    }

    /// Regression (issue 9): the temporary file was opened without O_EXCL|O_NOFOLLOW, so a
    /// link planted at its name made the job write through it.
    #[cfg(unix)]
    #[test]
    fn a_link_at_the_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path()).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::create_dir_all(dir.path().join("time_kpi")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("time_kpi/.a.json.tmp")).unwrap();
        s.write("time_kpi/a.json", b"rows\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            fs::read(dir.path().join("time_kpi/a.json")).unwrap(),
            b"rows\n"
        );
        assert!(!fs::symlink_metadata(dir.path().join("time_kpi/a.json"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn stale_temporary_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "time_kpi/.x.json.tmp",
            "rejected/.r.jsonl.tmp",
            "gaps/.g.json.tmp",
        ] {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"half").unwrap();
        }
        fs::write(dir.path().join("time_kpi/keep.json"), b"x\n").unwrap();
        FileSink::new(dir.path()).unwrap();
        let mut left: Vec<String> = FOLDERS
            .iter()
            .flat_map(|f| fs::read_dir(dir.path().join(f)).into_iter().flatten())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["keep.json"]);
    }

    #[test]
    fn a_stale_temporary_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/.f.json.tmp"), b"half").unwrap();
        s.write("d/f.json", b"whole\n").unwrap();
        assert_eq!(fs::read(dir.path().join("d/f.json")).unwrap(), b"whole\n");
    }
}
