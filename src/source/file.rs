//! The JSON-lines source: one line is one record, partition 0, offset = 0-based line number
//! (SPEC §1). Lines are split on `\n` only; the newline that ends the file starts no record.
//!
//! Standard input and named pipes are waited on with a bound (`poll(2)`), never with a
//! read that blocks for good: a job fed by a pipe that stays open must still see SIGTERM,
//! and a line that arrives in pieces is kept until its newline comes.

use crate::record::{SourceRecord, RAW_KEPT_BYTES};
use crate::source::{Poll, Positions, Source, SourceError, SourceIdentity, SourceMismatch};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use xxhash_rust::xxh3::Xxh3;

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
    #[error("the input {name} is not the one the state store read: {why}. Its first {lines} lines ({bytes} bytes) were read and counted before; a file may only grow. Give the job the input it was reading, or move the state folder aside (and use a new output folder) to count this input from its start")]
    Changed {
        name: String,
        lines: i64,
        bytes: u64,
        why: String,
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
    /// The fingerprint the store recorded at `skip_below`, checked when the reading gets
    /// there again.
    expected: Option<(u64, u128)>,
    /// The start of a line that did not fit in the reader's buffer, at most `keep` bytes.
    buf: Vec<u8>,
    /// Bytes of the line in progress (more than `buf` holds when it is too large).
    line_len: u64,
    /// Most bytes of one line kept in memory: a line longer than the record limit is a
    /// too-large record whatever follows, and only its start goes to the rejected sink.
    keep: usize,
    /// Bytes of the complete lines read so far, and their hash.
    consumed: u64,
    hasher: Xxh3,
    /// The hash including the line in progress, while one is.
    pending: Option<Xxh3>,
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
        let mut s = FileSource {
            name: name.to_owned(),
            reader: BufReader::with_capacity(1 << 20, reader),
            wait_fd: None,
            line: 0,
            skip_below: 0,
            expected: None,
            buf: Vec::with_capacity(4096),
            line_len: 0,
            keep: 0,
            consumed: 0,
            hasher: Xxh3::new(),
            pending: None,
            done: false,
        };
        s.set_record_limit(crate::decode::invoice::Limits::default().max_record_bytes);
        s
    }

    /// The record limit (`max_record_bytes`): a longer line is read no further into
    /// memory than the limit and the rejected sink need.
    pub fn set_record_limit(&mut self, max_record_bytes: usize) {
        self.keep = max_record_bytes.saturating_add(1).max(RAW_KEPT_BYTES);
    }

    fn changed(&self, why: String) -> SourceError {
        let (bytes, _) = self.expected.unwrap_or_default();
        Box::new(FileSourceError::Changed {
            name: self.name.clone(),
            lines: self.skip_below,
            bytes,
            why,
        })
    }

    /// At the committed line again: the bytes up to it must be those the store read.
    fn check_fingerprint(&self) -> Result<(), SourceError> {
        let Some((bytes, hash)) = self.expected else {
            return Ok(());
        };
        if self.consumed != bytes {
            return Err(self.changed(format!(
                "its first {} lines are now {} bytes long",
                self.skip_below, self.consumed
            )));
        }
        if self.hasher.digest128() != hash {
            return Err(self.changed("those bytes differ".into()));
        }
        Ok(())
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume(&mut self, committed: &Positions) -> Result<(), SourceError> {
        self.skip_below = committed.get(&0).copied().flatten().unwrap_or(0);
        if self.skip_below == 0 {
            self.check_fingerprint()?;
        }
        Ok(())
    }

    fn verify(&mut self, recorded: Option<&SourceIdentity>) -> Result<(), SourceError> {
        match recorded {
            Some(SourceIdentity::File { bytes, hash }) => {
                self.expected = Some((*bytes, *hash));
                Ok(())
            }
            Some(SourceIdentity::Kafka { topic, .. }) => Err(Box::new(SourceMismatch(format!(
                "the state store was written by a job reading Kafka topic `{topic}`, not a file; give the job that topic, or a new state folder for {}",
                self.name
            )))),
            Some(SourceIdentity::Partials { topic, .. }) => Err(Box::new(SourceMismatch(format!(
                "the state store belongs to a merge process reading partials topic `{topic}`, not a job reading a file; give a new state folder for {}",
                self.name
            )))),
            None => Ok(()),
        }
    }

    fn identity(&self) -> Option<SourceIdentity> {
        Some(SourceIdentity::File {
            bytes: self.consumed,
            hash: self.hasher.digest128(),
        })
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
            let emit = self.line >= self.skip_below;
            // `used`: bytes of the reader's buffer this line ends with; `line_bytes`: the
            // whole line's bytes with its newline.
            let used;
            let line_bytes;
            if avail.is_empty() {
                self.done = true;
                let Some(pending) = self.pending.take() else {
                    break;
                };
                // A last line without its newline is still a record.
                self.hasher = pending;
                used = 0;
                line_bytes = self.line_len;
                if emit {
                    sink(record(self.line, &self.buf, self.line_len));
                    n += 1;
                }
            } else if let Some(i) = memchr::memchr(b'\n', avail) {
                used = i + 1;
                line_bytes = self.line_len + used as u64;
                match self.pending.take() {
                    None => {
                        // The whole line is in the reader's buffer: no copy.
                        self.hasher.update(&avail[..used]);
                        if emit {
                            sink(record(self.line, &avail[..i], i as u64));
                            n += 1;
                        }
                    }
                    Some(mut pending) => {
                        pending.update(&avail[..used]);
                        self.hasher = pending;
                        let room = self.keep.saturating_sub(self.buf.len());
                        self.buf.extend_from_slice(&avail[..i.min(room)]);
                        self.line_len += i as u64;
                        if emit {
                            sink(record(self.line, &self.buf, self.line_len));
                            n += 1;
                        }
                    }
                }
            } else {
                // Part of a line: keep its start (up to `keep` bytes) until the rest comes.
                let len = avail.len();
                let room = self.keep.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&avail[..len.min(room)]);
                self.pending
                    .get_or_insert_with(|| self.hasher.clone())
                    .update(avail);
                self.line_len += len as u64;
                self.reader.consume(len);
                continue;
            }
            self.consumed += line_bytes;
            self.line += 1;
            self.reader.consume(used);
            self.buf.clear();
            self.line_len = 0;
            if self.line == self.skip_below {
                self.check_fingerprint()?;
            }
            if self.done {
                break;
            }
        }
        if self.done && self.line < self.skip_below && self.expected.is_some() {
            return Err(self.changed(format!("it now ends after {} lines", self.line)));
        }
        Ok(if self.done && n == 0 {
            Poll::End
        } else {
            Poll::Records(n)
        })
    }
}

/// A line as a record: `kept` is all of it, or its start when `len` is more.
fn record(line: i64, kept: &[u8], len: u64) -> SourceRecord<'_> {
    SourceRecord {
        partition: 0,
        offset: line,
        timestamp_ms: None,
        value: kept,
        full_len: (len > kept.len() as u64).then_some(len),
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
        let committed = std::collections::BTreeMap::from([(0, Some(skip))]);
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
