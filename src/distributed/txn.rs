//! The transactional side of an aggregate process: its producer, the check of group
//! membership that guards the offsets a transaction commits, and a watchdog for the
//! librdkafka calls that do not honour their timeout.

use super::{ClusterConfig, DistributedError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{Producer, ThreadedProducer};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `transaction.timeout.ms` (a property given with -X wins).
pub(super) const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// Longest wait of one transaction call. Short: while the loop waits here it does not
/// poll the consumer, so it cannot take part in a rebalance, and a rebalance in progress is
/// what makes the group's offset commit wait. A call that runs out aborts and rewinds.
pub(super) const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How much longer than its own timeout a transactional call of librdkafka may take
/// before the process gives up on it (see [`Watchdog`]).
const HUNG_AFTER: Duration = Duration::from_secs(20);

/// Ends the process when a transactional call of librdkafka does not return. Some do not
/// honour their timeout: `send_offsets_to_transaction` waits without end while its group
/// coordinator is down or moving (librdkafka issue 5456, open in the version this job
/// links; seen here when a broker restarted under a process just resumed from a pause).
/// The call holds the loop, so neither the stop request nor the give-up rule can act; a
/// hung client cannot be repaired from outside. Exiting is safe: nothing of the open
/// transaction is committed (the brokers abort it, or the next start with the same
/// transactional id does), and a supervisor starts the process again.
pub(super) struct Watchdog {
    armed: Arc<Mutex<Option<(Instant, &'static str)>>>,
}

impl Watchdog {
    pub(super) fn start() -> Result<Watchdog, DistributedError> {
        let armed = Arc::new(Mutex::new(None::<(Instant, &'static str)>));
        let weak = Arc::downgrade(&armed);
        std::thread::Builder::new()
            .name("txn-watchdog".into())
            .spawn(move || {
                // Ends when the watchdog is dropped.
                while let Some(armed) = weak.upgrade() {
                    let due = *armed.lock().unwrap_or_else(|p| p.into_inner());
                    drop(armed);
                    if let Some((_, what)) = due.filter(|(d, _)| Instant::now() > *d) {
                        tracing::error!("the Kafka client's `{what}` did not return within its timeout plus {HUNG_AFTER:?} (a librdkafka defect when a coordinator is down or moving): the process exits (code 5) so that its supervisor starts it again; nothing of the open transaction is committed");
                        std::process::exit(5);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
            .map_err(|e| DistributedError::Setup(format!("starting a thread: {e}")))?;
        Ok(Watchdog { armed })
    }

    /// Runs `call`, a librdkafka call with timeout `limit`, under watch.
    pub(super) fn watch<T>(
        &self,
        what: &'static str,
        limit: Duration,
        call: impl FnOnce() -> T,
    ) -> T {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now() + limit + HUNG_AFTER, what));
        let out = call();
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        out
    }
}

/// The process's transactional producer, its transactions initialised: any transaction a
/// previous producer with this id left open is aborted, and that producer fenced.
pub(super) fn transactional_producer(
    c: &ClusterConfig,
    transactional_id: &str,
    watchdog: &Watchdog,
) -> Result<ThreadedProducer<super::Quiet>, DistributedError> {
    let producer: ThreadedProducer<super::Quiet> = c
        .client(&[
            ("transactional.id", transactional_id),
            // A process killed inside a transaction holds the partials topic's readers and
            // its partitions' next owner until the brokers abort it after this long.
            ("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS),
            ("compression.type", "lz4"),
            ("message.max.bytes", "8388608"),
        ])
        .create_with_context(super::Quiet)
        .map_err(DistributedError::kafka(
            c,
            "creating the transactional producer",
        ))?;
    watchdog
        .watch("init_transactions", c.timeout, || {
            producer.init_transactions(c.timeout)
        })
        .map_err(DistributedError::kafka(c, "initialising transactions"))?;
    Ok(producer)
}

/// Whether the consumer is a member of its group now: it has a member id and a
/// generation. The group coordinator checks the member id and generation of a
/// transaction's offsets, but takes offsets sent with no member id and generation -1 as
/// those of a client outside any group, and commits them unchecked. librdkafka's group
/// metadata is exactly that between the moment a session ends (a process paused past its
/// session timeout, cut off from the coordinator) and the moment the application serves
/// the revocation of the lost partitions; a transaction sent then would commit the stale
/// offsets of partitions that moved.
pub(super) fn in_group<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> bool {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live handle of `consumer`, borrowed for this call; the metadata
    // is a copy this function owns and frees, and its member id is read before that.
    unsafe {
        let md = rd::rd_kafka_consumer_group_metadata(rk);
        if md.is_null() {
            return false;
        }
        let member = rd::rd_kafka_consumer_group_metadata_member_id(md);
        let has_member = !member.is_null() && *member != 0;
        let generation = rd::rd_kafka_consumer_group_metadata_generation_id(md);
        rd::rd_kafka_consumer_group_metadata_destroy(md);
        has_member && generation >= 0
    }
}
