//! Progress of a bounded run (a file, or Kafka with `--until end`): a bar on a terminal, a
//! log line every few seconds otherwise. It reads the figures the job publishes for its
//! metrics (at most every 100 ms, never per record) from a thread of its own, so the job
//! loop does nothing for it.

use super::*;
use std::sync::mpsc;

/// The progress thread; dropping it (or [`Progress::finish`]) stops it.
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often a log line is written when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the bar is redrawn on a terminal.
const DRAW_EVERY: Duration = Duration::from_millis(250);

impl Progress {
    pub fn start(metrics: Arc<Metrics>) -> Progress {
        let (stop, stopped) = mpsc::channel::<()>();
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || report(&metrics, &stopped, terminal))
            .ok();
        Progress {
            stop: Some(stop),
            thread,
        }
    }

    pub fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Records per second between two readings `dt` apart.
pub fn rate(records: u64, prev: u64, dt: Duration) -> f64 {
    let secs = dt.as_secs_f64();
    if secs > 0.0 {
        records.saturating_sub(prev) as f64 / secs
    } else {
        0.0
    }
}

/// The time `left` records take at `per_second`; unknown while the rate is below one a
/// second (a stalled run has no honest estimate).
pub fn time_left(left: Option<u64>, per_second: f64) -> Option<Duration> {
    match left {
        Some(0) => Some(Duration::ZERO),
        Some(n) if per_second >= 1.0 => Some(Duration::from_secs_f64(n as f64 / per_second)),
        _ => None,
    }
}

fn eta_text(eta: Option<Duration>) -> String {
    eta.map_or_else(
        || "-".into(),
        |d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
    )
}

fn report(metrics: &Metrics, stopped: &mpsc::Receiver<()>, terminal: bool) {
    let every = if terminal { DRAW_EVERY } else { LOG_EVERY };
    let bar = terminal.then(|| indicatif::ProgressBar::new(0));
    // A bar needs a total: Kafka's records left give one; a file's length in records is
    // not known, so a file run shows a spinner.
    let bar_style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records  {msg}",
    )
    .expect("a valid template");
    let spinner_style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {pos} records  {msg}",
    )
    .expect("a valid template");
    let mut styled: Option<bool> = None;
    let mut prev = (std::time::Instant::now(), metrics.health().records_read);
    // The rate shown is smoothed over the last few readings, so the bar's ETA does not
    // jump with every batch.
    let mut smooth: Option<f64> = None;
    // Wakes every `every`; ends when the job is done (the sender is dropped).
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let h = metrics.health();
        let now = std::time::Instant::now();
        let raw = rate(h.records_read, prev.1, now - prev.0);
        prev = (now, h.records_read);
        let per_second = match smooth {
            Some(s) if terminal => 0.8 * s + 0.2 * raw,
            _ => raw,
        };
        smooth = Some(per_second);
        let left = h.consumer_lag_records;
        let eta = time_left(left, per_second);
        let records = h.records_read;
        let watermark = h.watermark.as_deref().unwrap_or("-inf");
        match &bar {
            Some(b) => {
                if styled != Some(left.is_some()) {
                    b.set_style(if left.is_some() {
                        bar_style.clone()
                    } else {
                        spinner_style.clone()
                    });
                    styled = Some(left.is_some());
                }
                b.set_length(records + left.unwrap_or(0));
                b.set_position(records);
                b.set_message(format!(
                    "{per_second:.0}/s  watermark {watermark}  left {}  eta {}",
                    left.map_or("-".into(), |n| n.to_string()),
                    eta_text(eta)
                ));
            }
            None => tracing::info!(
                records,
                records_per_second = format!("{per_second:.0}"),
                watermark,
                records_left = left,
                eta = %eta_text(eta),
                "progress"
            ),
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left() {
        assert_eq!(rate(3_000, 1_000, Duration::from_secs(2)), 1_000.0);
        assert_eq!(rate(5, 0, Duration::ZERO), 0.0);
        assert_eq!(
            time_left(Some(10_000), 1_000.0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(time_left(Some(7), 0.5), None);
        assert_eq!(time_left(Some(0), 0.0), Some(Duration::ZERO));
        assert_eq!(time_left(None, 100.0), None);
    }
}
