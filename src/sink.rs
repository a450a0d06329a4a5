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
        let path = self.root.join(rel);
        let io_err = |source| SinkError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(existing) if existing == bytes => return Ok(Written::AlreadyThere),
            Ok(_) => return Err(SinkError::Conflict { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let dir = path
            .parent()
            .expect("a relative path below the root has a parent");
        fs::create_dir_all(dir).map_err(io_err)?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().expect("a file name").to_string_lossy()
        ));
        {
            let mut f = open_0644(&tmp).map_err(io_err)?;
            f.write_all(bytes).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
        }
        crate::failpoint!("sink.after_tmp_before_rename");
        fs::rename(&tmp, &path).map_err(io_err)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        Ok(Written::New)
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
    fn a_stale_temporary_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSink::new(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/.f.json.tmp"), b"half").unwrap();
        s.write("d/f.json", b"whole\n").unwrap();
        assert_eq!(fs::read(dir.path().join("d/f.json")).unwrap(), b"whole\n");
    }
}
