//! Log lines on standard error, human or JSON, with the secrets of librdkafka properties
//! masked in every line.

use super::*;
pub use retail_kpi::ops::settings::LogFormat;

/// Secret values of librdkafka properties, hidden in every log line and error message.
pub static REDACTOR: OnceLock<Redactor> = OnceLock::new();

pub fn redact(text: &str) -> String {
    REDACTOR
        .get()
        .map_or_else(|| text.to_owned(), |r| r.redact(text))
}

pub fn init_logs(format: LogFormat) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let writer = match REDACTOR.get() {
        Some(r) if !r.is_empty() => BoxMakeWriter::new(move || RedactedLine {
            buf: Vec::with_capacity(256),
            redactor: r,
        }),
        _ => BoxMakeWriter::new(std::io::stderr),
    };
    // Colours only for a person at a terminal, never in a file or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Human => b.init(),
        // Flat fields: `message` and each field at the top level of the line, as log
        // collectors index them.
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

/// One formatted log event, written to standard error with the secrets masked when it is
/// dropped (the formatter writes each event through a writer of its own).
pub struct RedactedLine {
    pub buf: Vec<u8>,
    pub redactor: &'static Redactor,
}

impl Write for RedactedLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let text = self.redactor.redact(&String::from_utf8_lossy(&self.buf));
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
}
