//! The JSON-lines source: one line is one record, partition 0, offset = 0-based line number
//! (SPEC §1). Lines are split on `\n` only; the newline that ends the file starts no record.
//!
//! Standard input and named pipes are waited on with a bound (`poll(2)`), never with a
//! read that blocks for good: a job fed by a pipe that stays open must still see SIGTERM,
//! and a line that arrives in pieces is kept until its newline comes.

use crate::engine::PartitionState;
use crate::record::SourceRecord;
use crate::source::{Poll, Source, SourceError};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("cannot open the input {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("reading the input {name} failed at line {line}: {source}")]
    Read {
        name: String,
        line: i64,
        source: io::Error,
    },
}

pub struct FileSource {
    name: String,
    reader: BufReader<Box<dyn Read + Send>>,
    /// A pipe or terminal to wait on with a bound before reading; `None` reads at once.
    wait_fd: Option<i32>,
    line: i64,
    /// Lines below this were committed by an earlier run.
    skip_below: i64,
    buf: Vec<u8>,
    done: bool,
}

impl FileSource {
    /// `-` reads standard input.
    pub fn open(path: &Path) -> Result<FileSource, FileSourceError> {
        let (reader, wait_fd): (Box<dyn Read + Send>, Option<i32>) = if path.as_os_str() == "-" {
            (Box::new(io::stdin()), Some(0))
        } else {
            let f = File::open(path).map_err(|source| FileSourceError::Open {
                path: path.into(),
                source,
            })?;
            let fd = wait_fd_of(&f);
            (Box::new(f), fd)
        };
        let mut s = FileSource::from_reader(&path.display().to_string(), reader);
        s.wait_fd = wait_fd;
        Ok(s)
    }

    pub fn from_reader(name: &str, reader: Box<dyn Read + Send>) -> FileSource {
        FileSource {
            name: name.to_owned(),
            reader: BufReader::with_capacity(1 << 20, reader),
            wait_fd: None,
            line: 0,
            skip_below: 0,
            buf: Vec::with_capacity(4096),
            done: false,
        }
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume(&mut self, committed: &BTreeMap<u32, PartitionState>) -> Result<(), SourceError> {
        self.skip_below = committed.get(&0).and_then(|s| s.next_offset).unwrap_or(0);
        Ok(())
    }

    fn partitions(&self) -> Vec<u32> {
        vec![0]
    }

    fn poll(
        &mut self,
        max: usize,
        sink: &mut dyn FnMut(SourceRecord<'_>),
    ) -> Result<Poll, SourceError> {
        if self.done {
            return Ok(Poll::End);
        }
        let read_err = |name: &str, line: i64, source| {
            Box::new(FileSourceError::Read {
                name: name.to_owned(),
                line,
                source,
            })
        };
        let mut n = 0;
        // Only the first wait of a poll may last; after that, what is there is handed over.
        let mut wait = POLL_WAIT;
        while n < max {
            if let Some(fd) = self.wait_fd {
                if self.reader.buffer().is_empty()
                    && !readable(fd, wait).map_err(|e| read_err(&self.name, self.line, e))?
                {
                    break;
                }
                wait = Duration::ZERO;
            }
            let avail = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(&self.name, self.line, e)),
            };
            let (value, used) = if avail.is_empty() {
                self.done = true;
                if self.buf.is_empty() {
                    break;
                }
                // A last line without its newline is still a record.
                (&self.buf[..], 0)
            } else if let Some(i) = memchr::memchr(b'\n', avail) {
                if self.buf.is_empty() {
                    (&avail[..i], i + 1)
                } else {
                    self.buf.extend_from_slice(&avail[..i]);
                    (&self.buf[..], i + 1)
                }
            } else {
                // Part of a line: keep it until the rest comes.
                let len = avail.len();
                self.buf.extend_from_slice(avail);
                self.reader.consume(len);
                continue;
            };
            if self.line >= self.skip_below {
                sink(SourceRecord {
                    partition: 0,
                    offset: self.line,
                    timestamp_ms: None,
                    value,
                });
                n += 1;
            }
            self.line += 1;
            self.reader.consume(used);
            self.buf.clear();
            if self.done {
                break;
            }
        }
        Ok(if self.done && n == 0 {
            Poll::End
        } else {
            Poll::Records(n)
        })
    }
}

/// How long one poll waits for a pipe to have data.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// A file that may have no data yet (a pipe, a terminal) is waited on; a regular file never.
#[cfg(unix)]
fn wait_fd_of(f: &File) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let regular = f.metadata().is_ok_and(|m| m.is_file());
    (!regular).then(|| f.as_raw_fd())
}

#[cfg(not(unix))]
fn wait_fd_of(_: &File) -> Option<i32> {
    None
}

/// Whether `fd` has data (or its end, or an error, which the read then reports) within
/// `wait`. A signal cuts the wait short, so that the job sees its stop flag at once.
#[cfg(unix)]
fn readable(fd: i32, wait: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, and its count.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r >= 0 {
        return Ok(r > 0);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn readable(_: i32, _: Duration) -> io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &'static [u8], skip: i64) -> Vec<(i64, Vec<u8>)> {
        let mut s = FileSource::from_reader("t", Box::new(input));
        let committed = BTreeMap::from([(
            0,
            PartitionState {
                next_offset: Some(skip),
                max_event_time: None,
            },
        )]);
        s.resume(&committed).unwrap();
        let mut got = Vec::new();
        while let Poll::Records(_) = s
            .poll(2, &mut |r| got.push((r.offset, r.value.to_vec())))
            .unwrap()
        {}
        got
    }

    #[test]
    fn splits_like_the_spec() {
        assert_eq!(
            lines(b"a\n\nb\n", 0),
            vec![(0, b"a".to_vec()), (1, vec![]), (2, b"b".to_vec())]
        );
        assert_eq!(
            lines(b"a\r\nb", 0),
            vec![(0, b"a\r".to_vec()), (1, b"b".to_vec())]
        );
        assert_eq!(lines(b"", 0), vec![]);
        assert_eq!(lines(b"\n", 0), vec![(0, vec![])]);
    }

    /// Hands out its bytes a few at a time, as a pipe may.
    struct Trickle(&'static [u8], usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_that_arrive_in_pieces_are_whole_records() {
        for step in [1, 2, 3, 7] {
            let mut s = FileSource::from_reader("t", Box::new(Trickle(b"ab\n\ncde\nf", step)));
            let mut got = Vec::new();
            while let Poll::Records(_) = s
                .poll(10, &mut |r| got.push((r.offset, r.value.to_vec())))
                .unwrap()
            {}
            assert_eq!(
                got,
                vec![
                    (0, b"ab".to_vec()),
                    (1, vec![]),
                    (2, b"cde".to_vec()),
                    (3, b"f".to_vec())
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn resumes_after_the_committed_line() {
        assert_eq!(lines(b"a\nb\nc\n", 2), vec![(2, b"c".to_vec())]);
    }
}
