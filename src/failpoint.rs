//! Crash points for the crash-recovery tests: with the `failpoints` feature, a build stops
//! dead (SIGKILL to itself, as `kill -9` would) at the named point. Release builds without
//! the feature compile the points out entirely.
//!
//! `RETAIL_KPI_FAILPOINT=name` stops at the first hit of `name`; `name@N` at the N-th.

/// Marks a point where a crash must be survivable.
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    };
}

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("RETAIL_KPI_FAILPOINT").ok()?;
        Some(match v.split_once('@') {
            Some((n, k)) => (n.to_owned(), k.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((n, k)) = target {
        if n == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *k {
            eprintln!("failpoint {name}: stopping dead");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
