//! The running source's questions to the brokers (watermarks for the idle rule and the
//! data-loss checks, metadata for new partitions), asked by a client of their own on a
//! thread of their own.
//!
//! A request to a broker that does not answer waits for its time-out, and the job's loop
//! must not wait with it: when these requests ran on the loop's thread, a SIGTERM during
//! an outage was taken up only after the request in flight gave up (4 to 5 s). Now the loop
//! asks, goes on polling, and takes the answer at a later poll. One question is out at a
//! time, so the loop never piles up requests behind a broker that does not answer.

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Failed requests in a row after which the probe client is made anew: after a broker
/// paused and resumed, a client's requests kept timing out (or answered "Unknown
/// partition") for minutes, while a new client's were answered at once.
const PROBE_RETRIES: u32 = 2;

/// A partition's low and high watermarks, or why the brokers gave none, with when its
/// request was sent: a confirmation holds from then.
pub(super) type End = (u32, Instant, Result<(i64, i64), KafkaError>);

/// A question for the brokers.
pub(super) enum Ask {
    /// The low and high watermarks of these partitions, in this order, up to the first
    /// that gets no answer (the others would time out as well).
    Ends {
        partitions: Vec<u32>,
        timeout: Duration,
    },
    /// The topic's partitions.
    Partitions { timeout: Duration },
}

/// The brokers' answer to an [`Ask`].
pub(super) enum Answer {
    Ends(Vec<End>),
    /// `Ok(None)`: the metadata came, without the topic's partitions.
    Partitions(Result<Option<Vec<u32>>, KafkaError>),
}

/// The thread that asks, and the loop's end of it.
pub(super) struct Prober {
    ask: Option<Sender<(u64, Ask)>>,
    answers: Receiver<(u64, Answer)>,
    /// A question is out and its answer not taken yet.
    busy: bool,
    /// Answers to questions of an older epoch are dropped: [`Prober::ends_now`] moves it
    /// on, so that an answer from before it (a partition since moved) is never taken.
    epoch: u64,
    /// The thread ended (it panicked), said once.
    gone: bool,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the thread; its client is made at the first question, from `config`.
    pub(super) fn start(config: ClientConfig, topic: String) -> std::io::Result<Prober> {
        let (ask, questions) = channel::<(u64, Ask)>();
        let (tell, answers) = channel();
        let thread = std::thread::Builder::new()
            .name("kafka-probe".into())
            .spawn(move || {
                let mut client = ProbeClient::new(config);
                for (epoch, q) in questions {
                    if tell.send((epoch, client.answer(&topic, q))).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Prober {
            ask: Some(ask),
            answers,
            busy: false,
            epoch: 0,
            gone: false,
            thread: Some(thread),
        })
    }

    /// Asks `q` unless a question is out already; says whether it asked.
    pub(super) fn ask(&mut self, q: Ask) -> bool {
        if self.busy {
            return false;
        }
        let sent = self
            .ask
            .as_ref()
            .is_some_and(|s| s.send((self.epoch, q)).is_ok());
        if !sent {
            self.thread_gone();
        }
        self.busy = sent;
        sent
    }

    /// The answer to the question out, if it came.
    pub(super) fn answer(&mut self) -> Option<Answer> {
        if !self.busy {
            return None;
        }
        match self.answers.try_recv() {
            Ok((epoch, a)) => {
                self.busy = false;
                (epoch == self.epoch).then_some(a)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.busy = false;
                self.thread_gone();
                None
            }
        }
    }

    /// The watermarks of `partitions`, waited for (at most `timeout` per request): at
    /// start, and when records were found lost, where nothing can go on without them. A
    /// question still out is dropped: its kind is asked again at its next turn.
    pub(super) fn ends_now(&mut self, partitions: Vec<u32>, timeout: Duration) -> Vec<End> {
        let fallback = |e: KafkaError| {
            let at = Instant::now();
            let v: Vec<End> = partitions
                .iter()
                .map(|p| (*p, at, Err(e.clone())))
                .collect();
            v
        };
        // The question out is answered first (its answer is dropped by its epoch), then
        // one request per partition, each bounded by `timeout`.
        let requests = u32::try_from(partitions.len() + 1).unwrap_or(u32::MAX);
        let deadline = Instant::now() + timeout.saturating_mul(requests) + Duration::from_secs(1);
        self.epoch += 1;
        while self.busy {
            match self
                .answers
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(_) => self.busy = false,
                Err(RecvTimeoutError::Timeout) => return fallback(no_answer(timeout)),
                Err(RecvTimeoutError::Disconnected) => {
                    self.busy = false;
                    self.thread_gone();
                }
            }
        }
        if !self.ask(Ask::Ends {
            partitions: partitions.clone(),
            timeout,
        }) {
            return fallback(gone());
        }
        match self
            .answers
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok((_, Answer::Ends(ends))) => {
                self.busy = false;
                ends
            }
            Ok(_) => unreachable!("an Ends question is answered with Ends"),
            // Still busy: the late answer is taken and dropped by `answer`.
            Err(RecvTimeoutError::Timeout) => fallback(no_answer(timeout)),
            Err(RecvTimeoutError::Disconnected) => {
                self.busy = false;
                self.thread_gone();
                fallback(gone())
            }
        }
    }

    fn thread_gone(&mut self) {
        if !self.gone {
            self.gone = true;
            tracing::error!(
                "the Kafka probe thread ended: end offsets are no longer confirmed (no partition turns idle) and added partitions are not found; restart the job"
            );
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        // The thread ends after the request in flight; its client is destroyed there, not
        // left running into the process's exit.
        drop(self.ask.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a request gets when the probe thread is gone (it panicked).
fn gone() -> KafkaError {
    KafkaError::ClientCreation("the Kafka probe thread ended".into())
}

/// What a request gets when its answer did not come in time.
fn no_answer(timeout: Duration) -> KafkaError {
    KafkaError::ClientCreation(format!(
        "no answer from the Kafka probe within {timeout:?} per request"
    ))
}

/// The probe thread's client, made when first needed and anew after failures.
struct ProbeClient {
    config: ClientConfig,
    client: Option<BaseConsumer<ProbeContext>>,
    failures: u32,
}

impl ProbeClient {
    fn new(mut config: ClientConfig) -> ProbeClient {
        config.set("statistics.interval.ms", "0");
        // Not a group member: dropping a client that keeps failing must not wait for a
        // consumer-group close (a minute after a broker paused), which would hold the
        // answers the loop waits for.
        config.remove("group.id");
        ProbeClient {
            config,
            client: None,
            failures: 0,
        }
    }

    fn answer(&mut self, topic: &str, q: Ask) -> Answer {
        match q {
            Ask::Ends {
                partitions,
                timeout,
            } => {
                let mut ends = Vec::with_capacity(partitions.len());
                for p in partitions {
                    let asked = Instant::now();
                    let r = self
                        .request(|c| c.fetch_watermarks(topic, p as i32, Timeout::After(timeout)));
                    let failed = r.is_err();
                    ends.push((p, asked, r));
                    if failed {
                        break;
                    }
                }
                Answer::Ends(ends)
            }
            Ask::Partitions { timeout } => Answer::Partitions(
                self.request(|c| c.fetch_metadata(Some(topic), Timeout::After(timeout)))
                    .map(|md| super::partitions_of(&md, topic)),
            ),
        }
    }

    fn request<T>(
        &mut self,
        request: impl FnOnce(&BaseConsumer<ProbeContext>) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        if self.client.is_none() {
            self.client = Some(self.config.create_with_context(ProbeContext)?);
        }
        let result = request(self.client.as_ref().expect("made above"));
        match &result {
            Ok(_) => self.failures = 0,
            Err(e) => {
                self.failures += 1;
                if self.failures >= PROBE_RETRIES {
                    tracing::debug!("probe requests keep failing ({e}): a new probe client");
                    self.client = None;
                    self.failures = 0;
                }
            }
        }
        result
    }
}

/// The context of the probe client: its own errors are the main consumer's business
/// (outages are logged there), so they go to the debug log only.
struct ProbeContext;

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka (watermark probe): {error}: {reason}");
    }
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, msg: &str) {
        tracing::debug!(target: "librdkafka", "probe {fac}: {msg}");
    }
}
impl ConsumerContext for ProbeContext {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "broker" that accepts connections and never answers: every request to it waits
    /// for its time-out, as to a SIGSTOPped broker.
    fn silent_broker() -> (std::net::TcpListener, ClientConfig) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", l.local_addr().unwrap().to_string())
            .set("group.id", "probe-test")
            .set_log_level(RDKafkaLogLevel::Emerg);
        (l, c)
    }

    #[test]
    fn the_loop_never_waits_for_a_silent_broker() {
        let (_l, cfg) = silent_broker();
        let mut p = Prober::start(cfg, "t".into()).unwrap();
        let q = || Ask::Ends {
            partitions: vec![0, 1],
            timeout: Duration::from_millis(500),
        };
        assert!(p.ask(q()), "an idle probe takes a question");
        assert!(
            p.answer().is_none(),
            "no answer yet from a broker that does not answer"
        );
        assert!(!p.ask(q()), "one question out at a time");
        // The answer comes once the request times out; it says the broker failed, and
        // stops at the first partition (the others would time out as well).
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = loop {
            if let Some(a) = p.answer() {
                break a;
            }
            assert!(Instant::now() < deadline, "no answer within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        let Answer::Ends(ends) = answer else {
            panic!("an Ends question got another answer")
        };
        assert_eq!(ends.len(), 1, "stops at the first failure");
        assert_eq!(ends[0].0, 0);
        assert!(ends[0].2.is_err());
        assert!(p.ask(q()), "free again once its answer is taken");
    }

    #[test]
    fn a_question_out_is_dropped_by_a_waited_one() {
        let (_l, cfg) = silent_broker();
        let mut p = Prober::start(cfg, "t".into()).unwrap();
        assert!(p.ask(Ask::Partitions {
            timeout: Duration::from_millis(300)
        }));
        let ends = p.ends_now(vec![3], Duration::from_millis(300));
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].0, 3);
        assert!(ends[0].2.is_err(), "a silent broker gives no watermarks");
        // The Partitions answer of before was taken and dropped, not left for the loop.
        assert!(p.answer().is_none());
        assert!(p.ask(Ask::Partitions {
            timeout: Duration::from_millis(300)
        }));
    }
}
