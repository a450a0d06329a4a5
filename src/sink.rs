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

impl FileSink {
    pub fn new(root: &Path) -> Result<FileSink, SinkError> {
        fs::create_dir_all(root).map_err(|source| SinkError::Io {
            path: root.into(),
            source,
        })?;
        Ok(FileSink { root: root.into() })
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
            let mut f = open_0644(&tmp).map_err(io_err)?;
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

#[cfg(unix)]
fn open_0644(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(p)
}

#[cfg(not(unix))]
fn open_0644(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
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
