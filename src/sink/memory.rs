//! A [`Committer`] that keeps its objects in memory, with the same rules as the output
//! folder: for the tests and the fuzz target, and the proof that the job depends on the
//! sink boundary alone.

use super::{Committer, SinkError, Written};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct MemoryCommitter {
    /// Visible objects: name -> bytes.
    pub objects: BTreeMap<String, Vec<u8>>,
    staged: Vec<(String, Option<Vec<u8>>)>,
    /// Commits so far (a test of "nothing written twice" counts them).
    pub commits: u64,
}

impl MemoryCommitter {
    pub fn new() -> MemoryCommitter {
        MemoryCommitter::default()
    }
}

impl Committer for MemoryCommitter {
    fn stage(&mut self, name: &str, bytes: &[u8]) -> Result<(), SinkError> {
        match self.objects.get(name) {
            Some(have) if have == bytes => self.staged.push((name.to_owned(), None)),
            Some(_) => return Err(SinkError::Conflict { path: name.into() }),
            None => self.staged.push((name.to_owned(), Some(bytes.to_vec()))),
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<Vec<Written>, SinkError> {
        self.commits += 1;
        Ok(std::mem::take(&mut self.staged)
            .into_iter()
            .map(|(name, bytes)| match bytes {
                Some(b) => {
                    self.objects.insert(name, b);
                    Written::New
                }
                None => Written::AlreadyThere,
            })
            .collect())
    }

    fn exists(&self, name: &str) -> Result<bool, SinkError> {
        Ok(self.objects.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_count_as_written_and_other_bytes_conflict() {
        let mut m = MemoryCommitter::new();
        let w = m
            .write_all(&[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())])
            .unwrap();
        assert_eq!(w, [Written::New, Written::New]);
        assert_eq!(
            m.write_all(&[("a".into(), b"1".to_vec())]).unwrap(),
            [Written::AlreadyThere]
        );
        assert!(matches!(
            m.stage("a", b"other"),
            Err(SinkError::Conflict { .. })
        ));
        assert_eq!(m.objects["a"], b"1");
        assert_eq!(
            m.write_if_absent("b", b"else").unwrap(),
            Written::AlreadyThere
        );
        assert_eq!(m.objects["b"], b"2");
    }
}
