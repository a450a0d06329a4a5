//! The file sink: writes rendered bytes atomically (temporary file, fsync, rename, fsync of
//! the folder) and never replaces a file with other bytes (SPEC §5).
//!
//! Paths come only from bucket times and checkpoint numbers, never from record content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write {path}: {source}; check free space and permissions of the output folder, then restart (the checkpoint is intact and the file is written again)")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} already exists with other bytes than this job computed; the output folder holds another run's files: give the job its own --out folder")]
    Conflict { path: PathBuf },
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    /// Present already with the same bytes: a restart between rename and its record.
    AlreadyThere,
}

pub struct FileSink {
    root: PathBuf,
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
        Ok(FileSink { root: root.into() })
    }

    /// Writes `rel` atomically unless a file of that name is there already, whatever it
    /// holds (a gap found again after a restart keeps its first record).
    pub fn write_if_absent(&self, rel: &str, bytes: &[u8]) -> Result<Written, SinkError> {
        if self.root.join(rel).exists() {
            return Ok(Written::AlreadyThere);
        }
        self.write(rel, bytes)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `rel` (a path below the root made by this crate) with `bytes`, atomically.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<Written, SinkError> {
        Ok(self.write_batch(&[(rel.to_owned(), bytes.to_vec())])?[0])
    }

    /// Writes several files, each atomically: every temporary file is written and synced,
    /// then each is renamed into place, then each folder touched is synced once. A
    /// checkpoint that completes many buckets (a backfill) pays one folder sync per folder
    /// instead of one per file; each file is still either absent or complete.
    pub fn write_batch(&self, files: &[(String, Vec<u8>)]) -> Result<Vec<Written>, SinkError> {
        let mut outcome = Vec::with_capacity(files.len());
        let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (rel, bytes) in files {
            let path = self.root.join(rel);
            let io_err = |source| SinkError::Io {
                path: path.clone(),
                source,
            };
            match fs::read(&path) {
                Ok(existing) if existing == *bytes => {
                    outcome.push(Written::AlreadyThere);
                    continue;
                }
                Ok(_) => return Err(SinkError::Conflict { path }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
            let dir = path
                .parent()
                .expect("a relative path below the root has a parent");
            if !dirs.iter().any(|d| d == dir) {
                fs::create_dir_all(dir).map_err(io_err)?;
                dirs.push(dir.to_owned());
            }
            let tmp = dir.join(format!(
                ".{}.tmp",
                path.file_name().expect("a file name").to_string_lossy()
            ));
            let mut f = open_new_0644(&tmp).map_err(io_err)?;
            f.write_all(bytes).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
            pending.push((tmp, path));
            outcome.push(Written::New);
        }
        crate::failpoint!("sink.after_tmp_before_rename");
        for (i, (tmp, path)) in pending.iter().enumerate() {
            if i > 0 {
                crate::failpoint!("render.between_files");
            }
            fs::rename(tmp, path).map_err(|source| SinkError::Io {
                path: path.clone(),
                source,
            })?;
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
        let s = FileSink::new(dir.path()).unwrap();
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
        let s = FileSink::new(dir.path()).unwrap();
        s.write("a/1.json", b"one\n").unwrap();
        let got = s
            .write_batch(&[
                ("a/1.json".into(), b"one\n".to_vec()),
                ("a/2.json".into(), b"two\n".to_vec()),
                ("b/3.json".into(), b"three\n".to_vec()),
            ])
            .unwrap();
        assert_eq!(got, [Written::AlreadyThere, Written::New, Written::New]);
        assert_eq!(fs::read(dir.path().join("b/3.json")).unwrap(), b"three\n");
        let conflict = s.write_batch(&[("a/2.json".into(), b"other\n".to_vec())]);
        assert!(matches!(conflict, Err(SinkError::Conflict { .. })));
    }

    /// Regression (issue 9): the temporary file was opened without O_EXCL|O_NOFOLLOW, so a
    /// link planted at its name made the job write through it.
    #[cfg(unix)]
    #[test]
    fn a_link_at_the_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSink::new(dir.path()).unwrap();
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
        let s = FileSink::new(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/.f.json.tmp"), b"half").unwrap();
        s.write("d/f.json", b"whole\n").unwrap();
        assert_eq!(fs::read(dir.path().join("d/f.json")).unwrap(), b"whole\n");
    }
}
