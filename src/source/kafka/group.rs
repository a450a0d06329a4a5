//! The job's advisory consumer-group offsets: their commits, and what becomes of them.
//!
//! The job keeps its offsets in its own store; it commits them to a consumer group only so
//! that lag tools (kafka-consumer-groups, Burrow) can read them. A failed commit changes
//! no result, but it went unsaid: an asynchronous `rd_kafka_commit` has no reply queue, so
//! its outcome reached neither the commit callback nor the log above debug level, and the
//! group's lag stayed behind for good. Another consumer that is an active member of the
//! same group is enough: every commit of the job then fails with "Unknown member".

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::TopicPartitionList;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How soon after the last commit offsets whose commit failed are sent again (at the
/// earliest: only once that commit was answered). Without retries an idle job, which
/// commits nothing new, left the group behind until the next record.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// The source's side of the advisory commits: sends them, and sends the last offsets again
/// while the group's last answer was a failure.
#[derive(Default)]
pub(crate) struct Committer {
    last: Option<(TopicPartitionList, Instant)>,
}

impl Committer {
    /// Commits `offsets` without waiting; the answer comes through the consumer's polls.
    pub(crate) fn commit<C: ConsumerContext + AsRef<GroupCommits>>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: TopicPartitionList,
    ) {
        send(consumer, &offsets);
        self.last = Some((offsets, Instant::now()));
    }

    /// Sends the last offsets again if the last answer was a failure, no commit awaits
    /// its answer (through an outage they would pile up in librdkafka), and
    /// [`RETRY_EVERY`] has passed since they were sent. Called on every poll.
    pub(crate) fn retry<C: ConsumerContext + AsRef<GroupCommits>>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) {
        let group: &GroupCommits = (**consumer.context()).as_ref();
        if !group.failing() || group.awaited.load(Ordering::Relaxed) > 0 {
            return;
        }
        if let Some((offsets, sent)) = &mut self.last {
            if sent.elapsed() >= RETRY_EVERY {
                send(consumer, offsets);
                *sent = Instant::now();
            }
        }
    }
}

/// One commit request, with its answer posted on the consumer's own queue: the consumer's
/// polls hand it to [`ConsumerContext::commit_callback`], and so to
/// [`GroupCommits::report`]. A request librdkafka refuses outright is logged at debug.
fn send<C: ConsumerContext + AsRef<GroupCommits>>(
    consumer: &BaseConsumer<C>,
    offsets: &TopicPartitionList,
) {
    let group: &GroupCommits = (**consumer.context()).as_ref();
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` lives as long as `consumer`; the queue handle taken here is released
    // below, and the commit keeps a reference of its own to the queue for its answer.
    // `offsets` is only read (librdkafka copies it).
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            // No consumer group (no group.id): nothing to commit to.
            return;
        }
        let err = rd::rd_kafka_commit_queue(rk, offsets.ptr(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    let code = RDKafkaErrorCode::from(err);
    if code == RDKafkaErrorCode::NoError {
        group.awaited.fetch_add(1, Ordering::Relaxed);
    } else {
        tracing::debug!("group offset commit not sent: {code}");
    }
}

/// Reports the outcomes of the advisory commits to one group: the first failure of a run
/// of failures as a warning with what to do, the end of the run once.
#[derive(Debug, Default)]
pub(crate) struct GroupCommits {
    /// The consumer group the job commits to.
    group: String,
    /// Commits failed since the last that succeeded.
    failed_in_a_row: AtomicU64,
    /// Commits sent whose answer has not come yet.
    awaited: AtomicU64,
}

impl GroupCommits {
    pub(crate) fn new(group: &str) -> GroupCommits {
        GroupCommits {
            group: group.into(),
            failed_in_a_row: AtomicU64::new(0),
            awaited: AtomicU64::new(0),
        }
    }

    /// Whether the last answer was a failure.
    fn failing(&self) -> bool {
        self.failed_in_a_row.load(Ordering::Relaxed) > 0
    }

    /// One commit's outcome: librdkafka's overall result, and each partition's.
    pub(crate) fn report(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // Saturating: an answer to a commit not sent through `send` (none today) must not
        // wrap the count.
        let _ = self
            .awaited
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let error = match result {
            Err(e) => Some(e.rdkafka_error_code()),
            Ok(()) => offsets
                .elements()
                .iter()
                .find_map(|p| p.error().err())
                .map(|e| e.rdkafka_error_code()),
        };
        match error {
            None => {
                let failed = self.failed_in_a_row.swap(0, Ordering::Relaxed);
                if failed > 0 {
                    tracing::info!(
                        group = %self.group,
                        "advisory offset commits to consumer group `{}` succeed again, after {failed} failed",
                        self.group
                    );
                }
            }
            Some(code) => {
                let n = self.failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                let why = code.map_or_else(|| "unknown error".into(), |c| c.to_string());
                if n == 1 {
                    tracing::warn!(
                        group = %self.group,
                        "advisory offset commit to consumer group `{}` failed ({why}): the job's results and its own lag metric are unaffected, but lag read from the group (kafka-consumer-groups, Burrow) stays behind; {}",
                        self.group,
                        what_to_do(code)
                    );
                } else {
                    tracing::debug!(group = %self.group, failed = n, "advisory offset commit failed again ({why})");
                }
            }
        }
    }
}

/// The user's move for a failed commit.
fn what_to_do(code: Option<RDKafkaErrorCode>) -> &'static str {
    match code {
        Some(
            RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::StaleMemberEpoch,
        ) => "another consumer is an active member of that group: give this job a group of its own (--group-id)",
        Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
            "the job's credentials may not commit to that group: allow them Read on it, or choose another with --group-id"
        }
        _ => "the offsets are sent again until a commit succeeds",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;

    #[test]
    fn failing_from_a_failed_answer_until_a_good_one_and_answers_counted() {
        let g = GroupCommits::new("g");
        let none = TopicPartitionList::new();
        g.awaited.store(2, Ordering::Relaxed);
        let refused = || {
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::UnknownMemberId,
            ))
        };
        g.report(refused(), &none);
        assert!(g.failing());
        assert_eq!(g.awaited.load(Ordering::Relaxed), 1);
        g.report(refused(), &none);
        assert!(g.failing());
        g.report(Ok(()), &none);
        assert!(!g.failing());
        // An answer more than was sent leaves the count at 0.
        assert_eq!(g.awaited.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn each_refusal_says_what_to_do() {
        assert!(what_to_do(Some(RDKafkaErrorCode::UnknownMemberId)).contains("--group-id"));
        assert!(what_to_do(Some(RDKafkaErrorCode::GroupAuthorizationFailed)).contains("Read"));
        assert!(what_to_do(Some(RDKafkaErrorCode::NotCoordinator)).contains("again"));
    }
}
