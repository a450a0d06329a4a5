//! The state store over time, through the real binary: the committed schema-1 fixture is
//! migrated and continued to the same bytes as a run that never stopped; `state migrate`
//! with and without `--dry-run`; damaged stores are refused and kept; and storage faults on
//! real file systems (small tmpfs mounts: full, then read-only) stop the job with its
//! documented exit code, leave the store intact, and a restart ends byte-identical.
//!
//! The storage tests mount tmpfs and so need root (CAP_SYS_ADMIN), as CI has; without it
//! they fail and say so rather than skip.

use retail_kpi::state::{StateError, Store};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use test_support::harness;
use test_support::process::owned_command;

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v1");
/// Exit codes of README "Exit codes".
const EXIT_STATE: i32 = 3;
const EXIT_OUTPUT: i32 = 4;
/// Bound on every wait for the job; far above what any step here takes.
const DEADLINE: Duration = Duration::from_secs(120);

fn bin() -> Command {
    let mut c = owned_command(BIN);
    c.env_remove("RETAIL_KPI_FAILPOINT");
    c
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn generate(args: &[&str]) -> Vec<u8> {
    ok(
        bin().arg("generate").args(args).output().unwrap(),
        "generate",
    )
    .stdout
}

/// FNV-1a, 64 bits: a fingerprint of the fixture's input, independent of the crate.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The input the fixture was made from (tests/fixtures/README.md); the fixture's store
/// holds the first 800 of these 1,200 lines.
fn fixture_input() -> Vec<u8> {
    let input = generate(&[
        "--count",
        "1200",
        "--seed",
        "11",
        "--rate",
        "30",
        "--late-fraction",
        "0.02",
        "--bad-fraction",
        "0.02",
    ]);
    // Printed by the schema-1 build's generator when the fixture was made.
    assert_eq!(
        (input.len(), fnv1a(&input)),
        (516_039, 0x07fe_16a8_80dc_b192),
        "`generate` no longer writes the fixture's input: the fixture's offsets would point \
         at other records. Keep the generator's output for a seed stable (or commit the input)"
    );
    input
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Every file of a folder: name -> bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `run --input FILE` from `cwd`, so that the rejected records' `topic` is the same name in
/// every run that reads the file.
fn run_file(cwd: &Path, input: &str, out: &Path, state: &Path) -> Output {
    bin()
        .current_dir(cwd)
        .args(["run", "--input", input, "--out"])
        .arg(out)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap()
}

fn inspect(state: &Path) -> serde_json::Value {
    let o = ok(
        bin()
            .args(["state", "inspect", "--json", "--state"])
            .arg(state)
            .output()
            .unwrap(),
        "state inspect",
    );
    serde_json::from_slice(&o.stdout).expect("state inspect --json prints JSON")
}

fn migrate(state: &Path, dry_run: bool) -> String {
    let mut c = bin();
    c.args(["state", "migrate", "--state"]).arg(state);
    if dry_run {
        c.arg("--dry-run");
    }
    String::from_utf8(ok(c.output().unwrap(), "state migrate").stdout).unwrap()
}

fn backups_beside(state: &Path) -> Vec<PathBuf> {
    let name = state.file_name().unwrap().to_str().unwrap().to_owned();
    let mut v: Vec<PathBuf> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{name}.backup-v1-"))
        })
        .collect();
    v.sort();
    v
}

/// Every rejected line of an output folder, sorted: the same records, each once, with the
/// same bytes, whichever checkpoint filed them.
fn rejected_lines(out: &Path) -> Vec<String> {
    harness::rejected(out); // panics on a record written twice
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out.join("rejected")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        lines.extend(text.lines().map(str::to_owned));
    }
    lines.sort();
    lines
}

fn assert_same_kpi_files(expected: &Path, got: &Path) {
    let (a, b) = (harness::kpi_files(expected), harness::kpi_files(got));
    assert!(a.len() >= 4, "too few files to compare: {}", a.len());
    assert!(a == b, "output differs:\n{}", harness::diff(&a, &b));
}

/// The fixture, in a fresh folder with its input beside it as `invoices.jsonl`, and the
/// output of an uninterrupted run of today's binary on a fresh store.
struct FixtureRun {
    dir: tempfile::TempDir,
}

impl FixtureRun {
    fn new() -> FixtureRun {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("invoices.jsonl"), fixture_input()).unwrap();
        copy_dir(Path::new(FIXTURE), &dir.path().join("state"));
        let r = FixtureRun { dir };
        ok(
            run_file(
                r.path(),
                "invoices.jsonl",
                &r.at("out-fresh"),
                &r.at("state-fresh"),
            ),
            "the uninterrupted run",
        );
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn at(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Today's binary on the whole input with the (copied) fixture as its state.
    fn resume(&self, failpoint: Option<&str>) -> Output {
        let mut c = bin();
        c.current_dir(self.path())
            .args(["run", "--input", "invoices.jsonl", "--out"])
            .arg(self.at("out"))
            .arg("--state")
            .arg(self.at("state"));
        if let Some(f) = failpoint {
            c.env("RETAIL_KPI_FAILPOINT", f);
        }
        c.output().unwrap()
    }

    fn assert_same_as_uninterrupted(&self) {
        assert_same_kpi_files(&self.at("out-fresh"), &self.at("out"));
        assert_eq!(
            rejected_lines(&self.at("out-fresh")),
            rejected_lines(&self.at("out"))
        );
        let (fresh, resumed) = (inspect(&self.at("state-fresh")), inspect(&self.at("state")));
        assert_eq!(resumed["schema_version"], fresh["schema_version"]);
        assert_eq!(
            resumed["counters"], fresh["counters"],
            "the counters carried over by the migration plus those of the rest of the input"
        );
    }
}

#[test]
fn the_v1_fixture_is_migrated_and_continues_to_the_same_bytes() {
    let r = FixtureRun::new();
    let o = ok(r.resume(None), "the run on the schema-1 fixture");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("state store migrated"), "{log}");
    assert_eq!(backups_beside(&r.at("state")).len(), 1, "one backup");
    r.assert_same_as_uninterrupted();
}

#[cfg(feature = "failpoints")]
#[test]
fn a_migration_killed_before_its_commit_is_redone_on_restart() {
    use std::os::unix::process::ExitStatusExt;
    let r = FixtureRun::new();
    let o = r.resume(Some("migrate.before_commit"));
    assert_eq!(
        o.status.signal(),
        Some(9),
        "the failpoint must stop the job dead: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(inspect(&r.at("state"))["schema_version"], 1);
    ok(r.resume(None), "the restart");
    assert_eq!(
        backups_beside(&r.at("state")).len(),
        2,
        "each attempt backs the store up"
    );
    r.assert_same_as_uninterrupted();
}

#[test]
fn state_migrate_dry_run_changes_nothing_then_migrate_backs_up_and_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    copy_dir(Path::new(FIXTURE), &state);
    let before = snapshot(&state);

    let plan = migrate(&state, true);
    for want in [
        "would migrate from schema version 1 to 3",
        "would back it up first to",
        "0002 counters_as_keys",
        "0003 window_rows",
        "dry run: nothing changed",
    ] {
        assert!(plan.contains(want), "{want:?} not in:\n{plan}");
    }
    assert!(snapshot(&state) == before, "a dry run changed the store");
    assert!(backups_beside(&state).is_empty());
    let v = inspect(&state);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(
        v["pending_migrations"],
        serde_json::json!(["0002_counters_as_keys", "0003_window_rows"])
    );
    assert!(snapshot(&state) == before, "inspect changed the store");

    let done = migrate(&state, false);
    assert!(
        done.contains("migrated from schema version 1 to 3"),
        "{done}"
    );
    let backups = backups_beside(&state);
    assert_eq!(backups.len(), 1, "{done}");
    assert!(
        done.contains(&format!(
            "backup of the old store: {}",
            backups[0].canonicalize().unwrap().display()
        )),
        "{done}"
    );
    let v = inspect(&state);
    assert_eq!(v["schema_version"], 3);
    // What the schema-1 binary's `state inspect` printed for the fixture when it was made
    // (tests/fixtures/README.md): the migration must carry it over unchanged.
    assert_eq!(v["checkpoint_seq"], 1);
    assert_eq!(v["partitions"][0]["next_offset"], 800);
    assert_eq!(
        v["partitions"][0]["max_event_time"],
        "2020-09-18T10:25:49.600Z"
    );
    assert_eq!(v["closed_before"], "2020-09-18T10:24:00Z");
    assert_eq!(v["open_windows"]["count"], 2);
    assert_eq!(v["closed_windows_not_rendered"], 24);
    assert_eq!(v["buckets_due"].as_array().unwrap().len(), 2);
    assert_eq!(v["rejected_files_due"][0]["records"], 34);
    assert_eq!(
        v["counters"],
        serde_json::json!({
            "read": 800, "accepted": 766, "replayed_skipped": 0, "windows_closed": 24,
            "buckets_rendered": 0,
            "rejected": {"too_large": 0, "invalid_utf8": 5, "invalid_json": 5,
                         "invalid_invoice": 5, "future_timestamp": 0, "late": 19,
                         "window_closed": 0},
        })
    );
    // The backup is the old store, as the old build left it.
    let old = inspect(&backups[0]);
    assert_eq!(old["schema_version"], 1);

    let again = migrate(&state, false);
    assert!(again.contains("nothing to migrate"), "{again}");
    assert_eq!(backups_beside(&state).len(), 1);
}

/// A migrated copy of the fixture (so that it has table files, as a store that ran for a
/// while has), damaged by `damage`: the library and the binary must refuse it as corrupt,
/// say so, and leave every file as it was.
fn assert_damage_is_refused(what: &str, damage: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    copy_dir(Path::new(FIXTURE), &state);
    migrate(&state, false);
    assert!(
        snapshot(&state).keys().any(|n| n.ends_with(".sst")),
        "the migrated store has table files"
    );
    damage(&state);
    let before = snapshot(&state);

    for e in [
        Store::open(&state).err(),
        Store::open_read_only(&state).err(),
    ] {
        let msg = e.as_ref().map(ToString::to_string).unwrap_or_default();
        assert!(
            matches!(e, Some(StateError::Corrupt { .. })),
            "{what}: expected Corrupt, got {e:?}"
        );
        assert!(
            msg.contains("is corrupt") && msg.contains("never reset") && msg.contains("backup"),
            "{what}: {msg}"
        );
    }
    let o = run_file(dir.path(), "/dev/null", &dir.path().join("out"), &state);
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_STATE), "{what}: {log}");
    assert!(log.contains("is corrupt"), "{what}: {log}");
    assert!(
        snapshot(&state) == before,
        "{what}: the damaged store was changed"
    );
}

fn garble(path: &Path, from: usize, len: usize) {
    let mut b = std::fs::read(path).unwrap();
    assert!(b.len() >= from + len, "{} is too short", path.display());
    for x in &mut b[from..from + len] {
        *x ^= 0xff;
    }
    std::fs::write(path, b).unwrap();
}

fn manifest(state: &Path) -> PathBuf {
    let names = snapshot(state);
    let name = names
        .keys()
        .find(|n| n.starts_with("MANIFEST-"))
        .expect("a MANIFEST");
    state.join(name)
}

#[test]
fn a_store_without_current_is_refused_not_recreated() {
    assert_damage_is_refused("CURRENT deleted", |s| {
        std::fs::remove_file(s.join("CURRENT")).unwrap()
    });
}

#[test]
fn a_current_naming_a_missing_manifest_is_refused() {
    assert_damage_is_refused("CURRENT garbled", |s| {
        std::fs::write(s.join("CURRENT"), "MANIFEST-999999\n").unwrap()
    });
}

#[test]
fn a_garbled_manifest_is_refused() {
    assert_damage_is_refused("MANIFEST garbled", |s| {
        let m = manifest(s);
        let len = std::fs::metadata(&m).unwrap().len() as usize;
        garble(&m, len / 3, 40);
    });
}

/// RocksDB reads a MANIFEST cut short as one whose last write a crash tore, and would
/// forget (and, opened for writing, delete) the table files the lost part named.
#[test]
fn a_manifest_cut_short_is_refused_and_its_table_files_kept() {
    assert_damage_is_refused("MANIFEST cut in half", |s| {
        let m = manifest(s);
        let b = std::fs::read(&m).unwrap();
        std::fs::write(&m, &b[..b.len() / 2]).unwrap();
    });
}

#[test]
fn garbled_table_files_are_refused() {
    assert_damage_is_refused("table files garbled", |s| {
        for name in snapshot(s).keys().filter(|n| n.ends_with(".sst")) {
            garble(&s.join(name), 0, 64);
        }
    });
}

// ---- storage faults on real file systems ----

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match o {
            Ok(o) if o.status.success() => Tmpfs { dir },
            Ok(o) => panic!(
                "the storage-fault tests mount a small tmpfs and so need root (CAP_SYS_ADMIN), \
                 as CI has; mounting one failed here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "the storage-fault tests mount a small tmpfs and need mount(8) and root: {e}"
            ),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Writes a filler file until the file system is full; returns it.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5au8; 64 << 10];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                return path;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Still busy (a job this test could not stop): detach it, so that it goes
            // away once the last file is closed.
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// An input and its output from an uninterrupted run on ordinary disks.
struct Baseline {
    dir: tempfile::TempDir,
    input: Vec<u8>,
}

impl Baseline {
    fn new() -> Baseline {
        let input = generate(&[
            "--count",
            "2000",
            "--seed",
            "3",
            "--rate",
            "30",
            "--late-fraction",
            "0.02",
            "--bad-fraction",
            "0.02",
        ]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("invoices.jsonl"), &input).unwrap();
        ok(
            run_file(
                dir.path(),
                "invoices.jsonl",
                &dir.path().join("out-base"),
                &dir.path().join("state-base"),
            ),
            "the uninterrupted run",
        );
        Baseline { dir, input }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The first `n` lines and the rest.
    fn split(&self, n: usize) -> (&[u8], &[u8]) {
        let cut = self
            .input
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(n - 1)
            .map(|(i, _)| i + 1)
            .unwrap();
        self.input.split_at(cut)
    }

    /// The restart after the fault: the whole input as a file, then the same output as the
    /// uninterrupted run.
    fn restart_and_compare(&self, out: &Path, state: &Path) {
        ok(
            run_file(self.path(), "invoices.jsonl", out, state),
            "the restart",
        );
        assert_same_kpi_files(&self.path().join("out-base"), out);
        assert_eq!(
            harness::rejected(&self.path().join("out-base")),
            harness::rejected(out)
        );
    }
}

/// A job reading standard input, its log going to a file.
struct StdinJob {
    child: Child,
    log: PathBuf,
}

impl StdinJob {
    fn spawn(log: PathBuf, out: &Path, state: &Path) -> StdinJob {
        let child = bin()
            .args([
                "run",
                "--input",
                "-",
                "--checkpoint-interval",
                "20ms",
                "--out",
            ])
            .arg(out)
            .arg("--state")
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        StdinJob { child, log }
    }

    /// Writes to the job's standard input. A job that already stopped on the fault under
    /// test closes the pipe: its exit status, checked next, says why.
    fn feed(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "feeding the job: {e}"
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the job has committed a checkpoint and written a KPI file from it.
    fn wait_for_a_file(&mut self, out: &Path) {
        let started = Instant::now();
        // Finished files only: a temporary one may be there while the job writes.
        let finished = || {
            std::fs::read_dir(out.join("time_kpi")).is_ok_and(|mut d| {
                d.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')))
            })
        };
        while !finished() {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("the job ended ({st}) before writing a file: {}", self.log());
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no file after {DEADLINE:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes standard input (or sends SIGTERM) and waits for the exit.
    fn finish(mut self, sigterm: bool) -> (ExitStatus, String) {
        if sigterm {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
        } else {
            drop(self.child.stdin.take());
        }
        let started = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, self.log());
            }
            if started.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("the job did not exit within {DEADLINE:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn assert_store_intact(state: &Path) {
    let v = inspect(state);
    assert_eq!(v["schema_version"], 3, "{v}");
    let next = v["partitions"][0]["next_offset"].as_i64().unwrap_or(0);
    assert!((1..=2000).contains(&next), "{v}");
}

#[test]
fn a_full_state_folder_stops_the_job_and_a_restart_after_freeing_space_catches_up() {
    let base = Baseline::new();
    let fs = Tmpfs::mount("4m");
    let (out, state) = (base.path().join("out"), fs.path().join("state"));
    let (first, rest) = base.split(1000);
    let mut job = StdinJob::spawn(base.path().join("job.log"), &out, &state);
    job.feed(first);
    job.wait_for_a_file(&out);
    let filler = fs.fill();
    job.feed(rest);
    let (st, log) = job.finish(false);
    assert_eq!(st.code(), Some(EXIT_STATE), "{log}");
    assert!(
        log.contains("state store") && log.contains("No space left on device"),
        "{log}"
    );
    // Intact, and readable while the disk is still full.
    assert_store_intact(&state);
    // A restart while the disk is still full is refused before RocksDB writes anything.
    let o = run_file(base.path(), "invoices.jsonl", &out, &state);
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_STATE), "{log}");
    assert!(log.contains("bytes free, less than the 1 MiB"), "{log}");
    assert_store_intact(&state);
    std::fs::remove_file(filler).unwrap();
    base.restart_and_compare(&out, &state);
}

#[test]
fn a_full_output_folder_stops_the_job_and_a_restart_after_freeing_space_catches_up() {
    let base = Baseline::new();
    let fs = Tmpfs::mount("8m");
    let (out, state) = (fs.path().join("out"), base.path().join("state"));
    let (first, rest) = base.split(1000);
    let mut job = StdinJob::spawn(base.path().join("job.log"), &out, &state);
    job.feed(first);
    job.wait_for_a_file(&out);
    let filler = fs.fill();
    job.feed(rest);
    let (st, log) = job.finish(false);
    assert_eq!(st.code(), Some(EXIT_OUTPUT), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert_store_intact(&state);
    std::fs::remove_file(filler).unwrap();
    base.restart_and_compare(&out, &state);
}

#[test]
fn a_read_only_state_folder_is_a_clear_error_and_a_restart_after_remounting_catches_up() {
    let base = Baseline::new();
    let fs = Tmpfs::mount("8m");
    let (out, state) = (base.path().join("out"), fs.path().join("state"));
    let (first, _) = base.split(1000);
    let mut job = StdinJob::spawn(base.path().join("job.log"), &out, &state);
    job.feed(first);
    job.wait_for_a_file(&out);
    let (st, log) = job.finish(true);
    assert!(st.success(), "SIGTERM stops the job cleanly: {log}");
    fs.remount("ro");
    let o = run_file(base.path(), "invoices.jsonl", &out, &state);
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_STATE), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert_store_intact(&state);
    fs.remount("rw");
    base.restart_and_compare(&out, &state);
}

#[test]
fn a_read_only_output_folder_is_a_clear_error_and_a_restart_after_remounting_catches_up() {
    let base = Baseline::new();
    let fs = Tmpfs::mount("8m");
    let (out, state) = (fs.path().join("out"), base.path().join("state"));
    let (first, _) = base.split(1000);
    let mut job = StdinJob::spawn(base.path().join("job.log"), &out, &state);
    job.feed(first);
    job.wait_for_a_file(&out);
    let (st, log) = job.finish(true);
    assert!(st.success(), "SIGTERM stops the job cleanly: {log}");
    fs.remount("ro");
    let o = run_file(base.path(), "invoices.jsonl", &out, &state);
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_OUTPUT), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert_store_intact(&state);
    fs.remount("rw");
    base.restart_and_compare(&out, &state);
}

/// Regression (issue 9): a store that lost its last checkpoints while still naming an
/// older one (a MANIFEST cut short at an edit boundary; files restored from an older copy)
/// opened as a valid, older store. The number of the last checkpoint committed is kept
/// beside it, and a store behind it is refused as corrupt, untouched.
#[test]
fn a_store_behind_its_last_committed_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gen = |count: &str, start: &str| {
        let o = owned_command(BIN)
            .args([
                "generate", "--count", count, "--seed", "4", "--start", start,
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        o.stdout
    };
    let input = d.join("in.jsonl");
    let mut bytes = gen("500", "2020-09-18 10:00:00");
    std::fs::write(&input, &bytes).unwrap();
    let (out, state) = (d.join("out"), d.join("state"));
    let o = run_file(d, input.to_str().unwrap(), &out, &state);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let older = d.join("older");
    copy_dir(&state, &older);
    bytes.extend(gen("500", "2020-09-18 12:00:00"));
    std::fs::write(&input, &bytes).unwrap();
    let o = run_file(d, input.to_str().unwrap(), &out, &state);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The store's own files go back to the first run's; the record of the last
    // checkpoint stays.
    for (name, _) in snapshot(&state) {
        if name != "retail-kpi.checkpoint" && name != "retail-kpi.lock" {
            let _ = std::fs::remove_file(state.join(&name));
        }
    }
    for (name, _) in snapshot(&older) {
        if name != "retail-kpi.checkpoint" && name != "retail-kpi.lock" {
            std::fs::copy(older.join(&name), state.join(&name)).unwrap();
        }
    }
    let before = snapshot(&state);
    let o = run_file(d, input.to_str().unwrap(), &out, &state);
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_STATE), "{log}");
    assert!(
        log.contains("is corrupt") && log.contains("was committed to it"),
        "{log}"
    );
    assert!(snapshot(&state) == before, "the store was changed");
    // Its RocksDB files gone altogether: not a reason to start over either.
    for (name, _) in snapshot(&state) {
        if name != "retail-kpi.checkpoint" && name != "retail-kpi.lock" {
            std::fs::remove_file(state.join(&name)).unwrap();
        }
    }
    let o = run_file(d, input.to_str().unwrap(), &out, &state);
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_STATE), "{log}");
    assert!(log.contains("RocksDB files are gone"), "{log}");
}
