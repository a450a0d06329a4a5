//! Sinks: where committed results go, after the checkpoint that commits them.
//!
//! A [`Committer`] writes named objects in two phases (stage, then commit), idempotent by
//! content: an object already there with the same bytes counts as written, other bytes
//! are a conflict (exit 4). [`local::FileSink`] is the output folder;
//! [`memory::MemoryCommitter`] keeps objects in memory (tests, the fuzz target). The
//! [`Outbox`] owns what the checkpoints committed and the sinks have not written yet
//! (complete buckets, rejected records), renders it ([`render`]) into named objects, and
//! keeps its own record of what it wrote ([`Delivered`]), which the store drops with the
//! next checkpoint or at once ([`crate::state::Store::record_delivered`]): the engine never
//! learns what was written.

pub mod local;
pub mod memory;
pub mod object;
pub mod parquet;
pub mod render;

use crate::aggregate::partial::WindowAgg;
use crate::aggregate::ClosedBucket;
use crate::record::RejectedRecord;
use crate::source::Gap;
use crate::state::Delivered;
use render::{render_rejected, Family};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write {path}: {source}; check free space and permissions of the output folder, then restart (the checkpoint is intact and the file is written again)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists with other bytes than this job computed; the output folder holds another run's files: give the job its own --out folder")]
    Conflict { path: PathBuf },
    #[error("{object} already exists with other bytes than this job computed; the prefix holds another run's objects: give the job its own --out prefix")]
    ObjectConflict { object: String },
    #[error("cannot encode {object}: {source}")]
    Encode {
        object: String,
        source: parquet::EncodeError,
    },
    #[error(transparent)]
    Store(#[from] object::StoreError),
}

/// Where the job writes (`--out`): a local folder, or a prefix of a bucket in object
/// storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutLocation {
    Folder(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl OutLocation {
    /// A path, `file:///path`, or `s3://BUCKET[/PREFIX]`.
    pub fn parse(text: &str) -> Result<OutLocation, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(OutLocation::Folder(text.into()));
        };
        match scheme {
            "file" if rest.starts_with('/') => Ok(OutLocation::Folder(rest.into())),
            "file" => Err(format!("{text:?}: a file URL names an absolute path (file:///var/lib/retail-kpi/out)")),
            "s3" | "s3a" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("{text:?} names no bucket: s3://BUCKET/PREFIX"));
                }
                Ok(OutLocation::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            _ => Err(format!(
                "{text:?}: the output is a folder, file:///PATH or s3://BUCKET/PREFIX (the {scheme}:// scheme is not built in)"
            )),
        }
    }
}

impl fmt::Display for OutLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutLocation::Folder(p) => write!(f, "{}", p.display()),
            OutLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            OutLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Which encodings of the KPI files are written (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Json,
    Parquet,
    Both,
}

/// One encoding of a KPI file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Parquet,
}

impl Format {
    pub fn encodings(self) -> &'static [Encoding] {
        match self {
            Format::Json => &[Encoding::Json],
            Format::Parquet => &[Encoding::Parquet],
            Format::Both => &[Encoding::Json, Encoding::Parquet],
        }
    }
}

impl Encoding {
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Parquet => "parquet",
        }
    }

    /// A bucket's file of `family` in this encoding; empty when it has no row.
    pub fn encode(
        self,
        family: Family,
        windows: &[(i64, &WindowAgg)],
    ) -> Result<Vec<u8>, parquet::EncodeError> {
        match self {
            Encoding::Json => Ok(render::render_bucket(family, windows)),
            Encoding::Parquet => parquet::encode_bucket(family, windows),
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    /// Present already with the same bytes: a restart between its commit and the record
    /// of it.
    AlreadyThere,
}

/// A two-phase writer of named objects (`time_kpi/2020-09-18T10-50.json`, ...).
pub trait Committer {
    /// Phase one: `bytes` are made durable where no reader sees them yet. An object
    /// already visible under `name` with the same bytes is noted as written; with other
    /// bytes it is [`SinkError::Conflict`] and nothing is staged.
    fn stage(&mut self, name: &str, bytes: &[u8]) -> Result<(), SinkError>;

    /// Phase two: every staged object becomes visible under its name, each atomically.
    /// Says, per object in the order staged, whether it is new or was there already.
    fn commit(&mut self) -> Result<Vec<Written>, SinkError>;

    /// Whether an object is visible under `name`.
    fn exists(&self, name: &str) -> Result<bool, SinkError>;

    /// Stages and commits several objects.
    fn write_all(&mut self, objects: &[(String, Vec<u8>)]) -> Result<Vec<Written>, SinkError> {
        for (name, bytes) in objects {
            self.stage(name, bytes)?;
        }
        self.commit()
    }

    /// Writes `name` unless an object of that name is there already, whatever it holds
    /// (a gap found again after a restart keeps its first record).
    fn write_if_absent(&mut self, name: &str, bytes: &[u8]) -> Result<Written, SinkError> {
        if self.exists(name)? {
            return Ok(Written::AlreadyThere);
        }
        self.stage(name, bytes)?;
        Ok(self.commit()?[0])
    }
}

/// The name and bytes of a gap record (SPEC §6, `--on-data-loss continue`).
pub fn gap_object(gap: &Gap) -> (String, Vec<u8>) {
    let last = gap
        .last_missing
        .map_or_else(|| "unknown".to_owned(), |l| l.to_string());
    let name = format!(
        "gaps/{}-{}-{}-{last}.json",
        gap.topic, gap.partition, gap.first_missing
    );
    let mut bytes = serde_json::to_vec(gap).expect("a gap serialises");
    bytes.push(b'\n');
    (name, bytes)
}

/// Committed outputs not written yet, and the record of those written since the store
/// last heard of it.
#[derive(Debug, Default)]
pub struct Outbox {
    buckets: BTreeMap<i64, Vec<(i64, WindowAgg)>>,
    rejected: BTreeMap<u64, Vec<RejectedRecord>>,
    delivered: Delivered,
    format: Format,
}

/// What one [`Outbox::write_step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// KPI files written that were not there yet.
    pub new_kpi_files: u64,
    /// Objects handed to the committer (0: nothing was due).
    pub objects: usize,
}

impl Outbox {
    /// The outbox as the store gave it back: due buckets and rejected records, and the
    /// count of buckets written so far.
    pub fn restore(
        buckets: Vec<ClosedBucket>,
        rejected: Vec<(u64, Vec<RejectedRecord>)>,
        buckets_rendered: u64,
    ) -> Outbox {
        Outbox {
            buckets: buckets.into_iter().collect(),
            rejected: rejected.into_iter().collect(),
            delivered: Delivered {
                buckets_rendered,
                ..Delivered::default()
            },
            format: Format::Json,
        }
    }

    /// The encodings of the KPI files written from now on.
    pub fn with_format(mut self, format: Format) -> Outbox {
        self.format = format;
        self
    }

    /// Outputs of a checkpoint just committed: its complete buckets, and its rejected
    /// records filed under its number.
    pub fn add(&mut self, buckets: Vec<ClosedBucket>, seq: u64, rejected: Vec<RejectedRecord>) {
        self.buckets.extend(buckets);
        if !rejected.is_empty() {
            self.rejected.insert(seq, rejected);
        }
    }

    /// Whether committed outputs are still to be written.
    pub fn has_due(&self) -> bool {
        !self.buckets.is_empty() || !self.rejected.is_empty()
    }

    /// Complete buckets not written yet.
    pub fn buckets_due(&self) -> usize {
        self.buckets.len()
    }

    /// Writes at most `max_objects` due objects (about half of them KPI buckets of two
    /// files per encoding each, then rejected files) in one stage-and-commit round.
    pub fn write_step(
        &mut self,
        committer: &mut dyn Committer,
        max_objects: usize,
    ) -> Result<Step, SinkError> {
        let max_objects = max_objects.max(1);
        let mut names = 0usize;
        let encodings = self.format.encodings();
        let buckets: Vec<i64> = self
            .buckets
            .keys()
            .take(max_objects.div_ceil(2 * encodings.len()))
            .copied()
            .collect();
        for b in &buckets {
            let windows: Vec<(i64, &WindowAgg)> =
                self.buckets[b].iter().map(|(s, w)| (*s, w)).collect();
            for family in Family::BOTH {
                for encoding in encodings {
                    let object = family.object(*b, *encoding);
                    let bytes =
                        encoding
                            .encode(family, &windows)
                            .map_err(|source| SinkError::Encode {
                                object: object.clone(),
                                source,
                            })?;
                    if !bytes.is_empty() {
                        committer.stage(&object, &bytes)?;
                        names += 1;
                    }
                }
            }
        }
        let kpi_objects = names;
        let mut seqs = Vec::new();
        for (seq, records) in &self.rejected {
            if names >= max_objects {
                break;
            }
            committer.stage(
                &format!("rejected/ckpt-{seq:012}.jsonl"),
                &render_rejected(records),
            )?;
            names += 1;
            seqs.push(*seq);
        }
        if buckets.is_empty() && seqs.is_empty() {
            return Ok(Step::default());
        }
        let written = committer.commit()?;
        let new_kpi_files = written[..kpi_objects]
            .iter()
            .filter(|w| **w == Written::New)
            .count() as u64;
        for b in buckets {
            self.buckets.remove(&b);
            self.delivered.buckets.push(b);
            self.delivered.buckets_rendered += 1;
        }
        for s in seqs {
            self.rejected.remove(&s);
            self.delivered.rejected.push(s);
        }
        Ok(Step {
            new_kpi_files,
            objects: names,
        })
    }

    /// The record of what was written since the last call, for the store; the count of
    /// buckets written goes on.
    pub fn take_delivered(&mut self) -> Delivered {
        Delivered {
            buckets: std::mem::take(&mut self.delivered.buckets),
            rejected: std::mem::take(&mut self.delivered.rejected),
            buckets_rendered: self.delivered.buckets_rendered,
        }
    }

    /// Whether something was written that the store has not recorded yet.
    pub fn has_unrecorded(&self) -> bool {
        !self.delivered.buckets.is_empty() || !self.delivered.rejected.is_empty()
    }
}
