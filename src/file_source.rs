//! The JSON-lines source: one line is one record, partition 0, offset = 0-based line number
//! (SPEC §1). Lines are split on `\n` only; the newline that ends the file starts no record.

use crate::engine::PartitionState;
use crate::record::SourceRecord;
use crate::source::{Poll, Source, SourceError};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

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
    reader: Box<dyn BufRead + Send>,
    line: i64,
    /// Lines below this were committed by an earlier run.
    skip_below: i64,
    buf: Vec<u8>,
    done: bool,
}

impl FileSource {
    /// `-` reads standard input.
    pub fn open(path: &Path) -> Result<FileSource, FileSourceError> {
        let reader: Box<dyn Read + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(|source| FileSourceError::Open {
                path: path.into(),
                source,
            })?)
        };
        Ok(FileSource::from_reader(&path.display().to_string(), reader))
    }

    pub fn from_reader(name: &str, reader: Box<dyn Read + Send>) -> FileSource {
        FileSource {
            name: name.to_owned(),
            reader: Box::new(BufReader::with_capacity(1 << 20, reader)),
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
        let mut n = 0;
        while n < max {
            self.buf.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| {
                    Box::new(FileSourceError::Read {
                        name: self.name.clone(),
                        line: self.line,
                        source,
                    })
                })?;
            if read == 0 {
                self.done = true;
                break;
            }
            let value = match self.buf.last() {
                Some(b'\n') => &self.buf[..self.buf.len() - 1],
                _ => &self.buf[..],
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
        }
        Ok(if self.done && n == 0 {
            Poll::End
        } else {
            Poll::Records(n)
        })
    }
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

    #[test]
    fn resumes_after_the_committed_line() {
        assert_eq!(lines(b"a\nb\nc\n", 2), vec![(2, b"c".to_vec())]);
    }
}
