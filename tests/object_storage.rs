//! Output to object storage (`--out s3://BUCKET/PREFIX`) against a real S3-compatible
//! server (SeaweedFS, started by `scripts/s3` on free ports): the objects are the bytes a
//! run into a local folder writes; a job killed during its uploads, and a server killed and
//! started again mid-run, still end with every object byte-identical; a wrong bucket, wrong
//! credentials and an unreachable endpoint stop the job with the output exit code and say
//! what to fix; secrets are masked.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use test_support::harness;
use test_support::process::{owned_command, signal, wait_deadline, wait_until_every};
use test_support::s3::S3Server;

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

/// Exit code of an output failure (README "Exit codes").
const OUTPUT: i32 = 4;

fn generate(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    let out = owned_command(BIN)
        .arg("generate")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "generate failed");
    let path = dir.join("in.jsonl");
    std::fs::write(&path, out.stdout).unwrap();
    path
}

/// `run --input` with the server's variables; the caller adds `--out` and more.
fn job(server: &S3Server, input: &Path, state: &Path) -> Command {
    let mut cmd = owned_command(BIN);
    cmd.args([
        "run",
        "--metrics-addr",
        "off",
        "--format",
        "both",
        "--input",
    ])
    .arg(input)
    .arg("--state")
    .arg(state)
    .envs(server.env())
    .env_remove("RETAIL_KPI_FAILPOINT")
    .stdin(Stdio::null());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// KPI files (relative name -> bytes) and rejected lines (sorted) of an output: which
/// checkpoint file a rejected record lands in depends on timing, its line does not.
type Outputs = (BTreeMap<String, Vec<u8>>, Vec<Vec<u8>>);

fn split(files: BTreeMap<String, Vec<u8>>) -> Outputs {
    let mut kpi = BTreeMap::new();
    let mut rejected = Vec::new();
    for (name, bytes) in files {
        if name.starts_with("rejected/") {
            rejected.extend(bytes.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
        } else {
            assert!(
                name.starts_with("time_kpi/") || name.starts_with("country_kpi/"),
                "unexpected object {name}"
            );
            kpi.insert(name, bytes);
        }
    }
    rejected.sort();
    (kpi, rejected)
}

fn folder(out: &Path) -> Outputs {
    let mut files = harness::kpi_files(out);
    if let Ok(entries) = std::fs::read_dir(out.join("rejected")) {
        for e in entries {
            let e = e.unwrap();
            let name = format!("rejected/{}", e.file_name().to_string_lossy());
            files.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    split(files)
}

fn same(got: &Outputs, want: &Outputs, what: &str) {
    assert!(
        got.0 == want.0,
        "{what}: KPI objects differ from the folder run:\n{}",
        harness::diff(&got.0, &want.0)
    );
    assert!(
        got.1 == want.1,
        "{what}: rejected lines differ ({} objects' lines, {} in the folder)",
        got.1.len(),
        want.1.len()
    );
}

/// The baseline: the same input into a local folder.
fn folder_run(dir: &Path, input: &Path, extra: &[&str]) -> Outputs {
    let out = dir.join("folder-out");
    let o = output(
        owned_command(BIN)
            .args([
                "run",
                "--metrics-addr",
                "off",
                "--format",
                "both",
                "--input",
            ])
            .arg(input)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .arg("--state")
            .arg(dir.join("folder-state")),
    );
    assert!(o.status.success(), "folder run: {}", stderr(&o));
    let files = folder(&out);
    assert!(
        files.0.keys().any(|k| k.ends_with(".parquet")) && !files.1.is_empty(),
        "the baseline has Parquet files and rejected records"
    );
    files
}

#[test]
fn objects_are_the_bytes_of_a_folder_run_and_errors_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path().join("s3"));
    let input = generate(
        dir.path(),
        &[
            "--count",
            "3000",
            "--rate",
            "30",
            "--seed",
            "4",
            "--late-fraction",
            "0.02",
            "--bad-fraction",
            "0.03",
        ],
    );
    let want = folder_run(dir.path(), &input, &[]);

    // A run to the bucket: the same bytes, and nothing else below the prefix.
    let o = output(
        job(&server, &input, &dir.path().join("st1"))
            .arg("--out")
            .arg(server.url("runs/one")),
    );
    assert!(o.status.success(), "run to S3: {}", stderr(&o));
    same(&split(server.objects("runs/one")), &want, "s3 run");

    // The same run again on a new state: every object is there with the same bytes.
    let o = output(
        job(&server, &input, &dir.path().join("st2"))
            .arg("--out")
            .arg(server.url("runs/one")),
    );
    assert!(o.status.success(), "second run: {}", stderr(&o));
    same(&split(server.objects("runs/one")), &want, "second run");

    // Other results under the same prefix: the exit-4 conflict, the object untouched.
    let o = output(
        job(&server, &input, &dir.path().join("st3"))
            .args(["--grace", "0s", "--out"])
            .arg(server.url("runs/one")),
    );
    assert_eq!(o.status.code(), Some(OUTPUT), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already exists with other bytes"),
        "{}",
        stderr(&o)
    );
    same(
        &split(server.objects("runs/one")),
        &want,
        "after the conflict",
    );

    // A store without conditional puts: the read-before-put fallback, same bytes.
    let settings = dir.path().join("fallback.toml");
    std::fs::write(
        &settings,
        "[object_store]\naws_conditional_put = \"disabled\"\n",
    )
    .unwrap();
    let o = output(
        job(&server, &input, &dir.path().join("st4"))
            .arg("--config")
            .arg(&settings)
            .arg("--out")
            .arg(server.url("runs/fallback")),
    );
    assert!(o.status.success(), "fallback run: {}", stderr(&o));
    same(
        &split(server.objects("runs/fallback")),
        &want,
        "fallback run",
    );
    // ... its read-before-put paths: the same bytes there already, then other bytes.
    let o = output(
        job(&server, &input, &dir.path().join("st5"))
            .arg("--config")
            .arg(&settings)
            .arg("--out")
            .arg(server.url("runs/fallback")),
    );
    assert!(o.status.success(), "fallback rerun: {}", stderr(&o));
    let o = output(
        job(&server, &input, &dir.path().join("st6"))
            .arg("--config")
            .arg(&settings)
            .args(["--grace", "0s", "--out"])
            .arg(server.url("runs/fallback")),
    );
    assert_eq!(o.status.code(), Some(OUTPUT), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already exists with other bytes"),
        "{}",
        stderr(&o)
    );
    same(
        &split(server.objects("runs/fallback")),
        &want,
        "fallback after the conflict",
    );

    // What goes wrong at the start, each with the output exit code and what to fix.
    let state = dir.path().join("st-err");
    // What, the variables changed, the URL, and what the error must say.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, &'a str);
    let cases: [Case; 3] = [
        (
            "missing bucket",
            vec![],
            "s3://no-such-bucket/x".into(),
            "the bucket does not exist",
        ),
        (
            "wrong secret",
            vec![("AWS_SECRET_ACCESS_KEY", "not-the-secret".into())],
            server.url("x"),
            "refused the credentials",
        ),
        (
            "unreachable endpoint",
            vec![("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into())],
            server.url("x"),
            "is the endpoint reachable",
        ),
    ];
    for (what, env, url, says) in cases {
        let _ = std::fs::remove_dir_all(&state);
        let o = output(job(&server, &input, &state).envs(env).args([
            "--out-retry-timeout",
            "2s",
            "--out",
            &url,
        ]));
        assert_eq!(o.status.code(), Some(OUTPUT), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{what}: {}", stderr(&o));
        for secret in [server.secret_key.as_str(), "not-the-secret"] {
            assert!(!stderr(&o).contains(secret), "{what}: a secret shows");
        }
    }

    // `config check` masks the secret of the environment and of the settings file.
    let settings = dir.path().join("secret.toml");
    std::fs::write(
        &settings,
        "[object_store]\naws_session_token = \"file-token-value\"\n",
    )
    .unwrap();
    let o = output(
        owned_command(BIN)
            .args(["config", "check", "--input", "x", "--state", "s", "--out"])
            .arg(server.url("x"))
            .arg("--config")
            .arg(&settings)
            .envs(server.env()),
    );
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(shown.contains("[object_store]"), "{shown}");
    assert!(shown.contains("aws_access_key_id"), "{shown}");
    assert!(!shown.contains(&server.secret_key), "{shown}");
    assert!(!shown.contains("file-token-value"), "{shown}");
    assert!(
        shown.contains("\"aws_secret_access_key\" = \"********\""),
        "{shown}"
    );
}

/// A backlog of many small objects: long enough to kill the job, or the server, while
/// objects are being uploaded.
const MANY_BUCKETS: &[&str] = &[
    "--count",
    "12000",
    "--rate",
    "10",
    "--seed",
    "6",
    "--bad-fraction",
    "0.01",
];

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_job_and_a_restarted_server_end_with_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path().join("s3"));
    let input = generate(dir.path(), MANY_BUCKETS);
    // A checkpoint every record batch: the buckets become due over the run, not at its end.
    let pace = ["--checkpoint-interval", "0s"];
    let want = folder_run(dir.path(), &input, &pace);
    let count = |prefix: &str| server.count(prefix);

    // SIGKILL while objects are being uploaded, then a restart on the same state.
    let state = dir.path().join("st-kill");
    let mut child = spawn(
        job(&server, &input, &state)
            .args(pace)
            .arg("--out")
            .arg(server.url("kill")),
        &dir.path().join("kill.log"),
    );
    wait_until_every(
        Duration::from_secs(120),
        Duration::from_millis(50),
        "the first objects",
        || count("kill") >= 20,
    );
    signal(&child, libc::SIGKILL);
    let st = wait_deadline(&mut child, Duration::from_secs(30), "the killed job");
    assert!(!st.success(), "the job ended before the kill: {st}");
    let before = count("kill");
    assert!(
        before < want.0.len(),
        "everything was there before the kill"
    );
    let o = output(
        job(&server, &input, &state)
            .args(pace)
            .arg("--out")
            .arg(server.url("kill")),
    );
    assert!(o.status.success(), "restart after the kill: {}", stderr(&o));
    same(&split(server.objects("kill")), &want, "after a kill");

    // The server SIGKILLed mid-run and started again. The input comes through a pipe, so
    // the job is still running when the server goes: half of it before the kill, the rest
    // while the server is down and starting again. The job rides through on retries (its
    // retry timeout is longer than the server's restart) and every object is whole.
    let lines: Vec<&[u8]> = std::fs::read(&input)
        .map(|b| b.leak() as &[u8])
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .collect();
    let (first, rest) = lines.split_at(lines.len() / 2);
    // The baseline of this part reads standard input too: rejected records name their
    // source, `-`.
    let stdin_want = {
        let out = dir.path().join("stdin-out");
        let o = owned_command(BIN)
            .args([
                "run",
                "--metrics-addr",
                "off",
                "--format",
                "both",
                "--input",
                "-",
            ])
            .args(pace)
            .arg("--out")
            .arg(&out)
            .arg("--state")
            .arg(dir.path().join("stdin-state"))
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "stdin folder run: {}", stderr(&o));
        folder(&out)
    };
    assert_eq!(
        stdin_want.0, want.0,
        "the KPI files do not depend on the source's name"
    );
    let mut child = spawn(
        job(&server, Path::new("-"), &dir.path().join("st-server"))
            .args(pace)
            .args(["--out-retry-timeout", "120s", "--out"])
            .arg(server.url("server"))
            .stdin(Stdio::piped()),
        &dir.path().join("server.log"),
    );
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(&first.concat()).unwrap();
    stdin.flush().unwrap();
    wait_until_every(
        Duration::from_secs(120),
        Duration::from_millis(100),
        "the first objects",
        || server.count("server") >= 20,
    );
    server.kill();
    let feeder = std::thread::spawn({
        let rest = rest.concat();
        move || {
            stdin.write_all(&rest).unwrap();
            // Dropping stdin ends the input.
        }
    });
    server.start_again();
    feeder.join().unwrap();
    let st = wait_deadline(&mut child, Duration::from_secs(300), "the job");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(st.success(), "the job did not ride through: {st}\n{log}");
    assert!(
        log.contains("retry"),
        "the job never saw the server gone:\n{log}"
    );
    same(
        &split(server.objects("server")),
        &stdin_want,
        "after a server restart",
    );
}
