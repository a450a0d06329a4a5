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
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Failed requests in a row after which the probe client is made anew: after a broker
/// paused and resumed, a client's requests kept timing out (or answered "Unknown
/// partition") for minutes, while a new client's were answered at once.
const PROBE_RETRIES: u32 = 2;

/// A partition's low and high watermarks, or why the brokers gave none.
pub(super) type End = (u32, Result<(i64, i64), KafkaError>);

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
    Ends {
        /// When the question was asked: a confirmation holds from then.
        asked: Instant,
        ends: Vec<End>,
    },
    /// `Ok(None)`: the metadata came, without the topic's partitions.
    Partitions(Result<Option<Vec<u32>>, KafkaError>),
}

/// The thread that asks, and the loop's end of it.
pub(super) struct Prober {
    ask: Option<Sender<(Instant, Ask)>>,
    answers: Receiver<Answer>,
    /// A question is out and its answer not taken yet.
    busy: bool,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the thread; its client is made at the first question, from `config`.
    pub(super) fn start(config: ClientConfig, topic: String) -> std::io::Result<Prober> {
        let (ask, questions) = channel::<(Instant, Ask)>();
        let (tell, answers) = channel();
        let thread = std::thread::Builder::new()
            .name("kafka-probe".into())
            .spawn(move || {
                let mut client = ProbeClient::new(config);
                for (asked, q) in questions {
                    if tell.send(client.answer(&topic, asked, q)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Prober {
            ask: Some(ask),
            answers,
            busy: false,
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
            .is_some_and(|s| s.send((Instant::now(), q)).is_ok());
        self.busy = sent;
        sent
    }

    /// The answer to the question out, if it came.
    pub(super) fn answer(&mut self) -> Option<Answer> {
        if !self.busy {
            return None;
        }
        match self.answers.try_recv() {
            Ok(a) => {
                self.busy = false;
                Some(a)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.busy = false;
                None
            }
        }
    }

    /// The watermarks of `partitions`, waited for: at start, and when records were found
    /// lost, where nothing can go on without them. A question still out is waited for
    /// first and its answer dropped: its kind is asked again at its next turn.
    pub(super) fn ends_now(&mut self, partitions: Vec<u32>, timeout: Duration) -> Vec<End> {
        if self.busy {
            let _ = self.answers.recv();
            self.busy = false;
        }
        let fallback: Vec<_> = partitions.iter().map(|p| (*p, Err(gone()))).collect();
        if !self.ask(Ask::Ends {
            partitions,
            timeout,
        }) {
            return fallback;
        }
        self.busy = false;
        match self.answers.recv() {
            Ok(Answer::Ends { ends, .. }) => ends,
            _ => fallback,
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

/// The probe thread's client, made when first needed and anew after failures.
struct ProbeClient {
    config: ClientConfig,
    client: Option<BaseConsumer<ProbeContext>>,
    failures: u32,
}

impl ProbeClient {
    fn new(mut config: ClientConfig) -> ProbeClient {
        config.set("statistics.interval.ms", "0");
        ProbeClient {
            config,
            client: None,
            failures: 0,
        }
    }

    fn answer(&mut self, topic: &str, asked: Instant, q: Ask) -> Answer {
        match q {
            Ask::Ends {
                partitions,
                timeout,
            } => {
                let mut ends = Vec::with_capacity(partitions.len());
                for p in partitions {
                    let r = self
                        .request(|c| c.fetch_watermarks(topic, p as i32, Timeout::After(timeout)));
                    let failed = r.is_err();
                    ends.push((p, r));
                    if failed {
                        break;
                    }
                }
                Answer::Ends { asked, ends }
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
