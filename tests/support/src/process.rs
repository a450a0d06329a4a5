//! Children of the tests and waits on a condition.
//!
//! Every job, producer, broker script and nested test process goes through
//! [`owned_command`], so that a test run killed hard leaves nothing running. A test waits
//! for what it needs (a file, a log line, a metric, an exit) with a deadline, through
//! [`wait_until`] and its relatives, rather than sleeping and hoping.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often [`wait_until`] looks at its condition.
pub const POLL: Duration = Duration::from_millis(50);

/// A command for a child of the test that dies with it: in a process group of its own, and
/// sent SIGKILL by the kernel when the test thread that spawned it is gone (a test process
/// killed hard included), so that no job or producer is left to write into a later run's
/// cluster. Standard input is /dev/null unless the caller sets another: a process group in
/// the background must not read the terminal.
pub fn owned_command(program: impl AsRef<OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    c.process_group(0).stdin(Stdio::null());
    // SAFETY: prctl, getppid and _exit are async-signal-safe; nothing is allocated here.
    unsafe {
        let parent = libc::getpid();
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    c
}

/// Waits for a child with a deadline, so that a stuck process fails instead of hanging.
pub fn wait_deadline(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let stacks = stacks_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}{stacks}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The threads' stacks of a stuck process, when gdb is installed (it is not in CI unless
/// added): where it hangs is what such a failure needs. Empty otherwise.
fn stacks_of(pid: u32) -> String {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => format!(
            "\nstacks of process {pid}:\n{}",
            String::from_utf8_lossy(&o.stdout)
        ),
        _ => String::new(),
    }
}

/// Sends signal `sig` to the child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Polls `cond` every `every` until it holds; returns the instant it was seen to hold, or
/// None once `deadline` has passed.
pub fn poll_until(
    deadline: Instant,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Instant> {
    loop {
        if cond() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `cond` every [`POLL`] until it holds; panics naming `what` once `within` has
/// passed. The condition may panic itself (a child that exited, say) to fail sooner.
pub fn wait_until(within: Duration, what: &str, cond: impl FnMut() -> bool) {
    wait_until_every(within, POLL, what, cond);
}

/// [`wait_until`], looking every `every`: for a condition that costs a broker request.
pub fn wait_until_every(within: Duration, every: Duration, what: &str, cond: impl FnMut() -> bool) {
    if poll_until(Instant::now() + within, every, cond).is_none() {
        panic!("timed out after {within:?}: {what}");
    }
}

/// Waits until the file `log` (where `child` writes its standard error) holds `needle` at
/// least `count` times; panics with the log if the child exits first.
pub fn wait_log(child: &mut Child, log: &Path, needle: &str, count: usize, within: Duration) {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    let what = format!("{count} × `{needle}` in {}", log.display());
    wait_until(within, &what, || {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the child exited ({st}) before {what}:\n{}", read());
        }
        read().matches(needle).count() >= count
    });
}

/// Every port handed to a server of this test process (Kafka clusters, S3 servers), so
/// that two tests never get one twice.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A base drawn from `bases` whose ports (`ports_of(base)`) no server of this process was
/// given and nothing listens on now; they are marked as given. The project's scripts
/// check them again when they start their server.
pub fn free_ports(bases: std::ops::Range<u16>, ports_of: impl Fn(u16) -> Vec<u16>) -> u16 {
    use rand::Rng;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let base = rng.gen_range(bases.clone());
        let ports = ports_of(base);
        let free = ports.iter().all(|&p| {
            !handed_out.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            handed_out.extend(ports);
            return base;
        }
    }
    panic!("no free ports in {bases:?}");
}

/// Runs one of the project's scripts (`name`, for the message); Err carries its output.
pub fn run_script(mut cmd: Command, name: &str, args: &[&str]) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{name} {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
