//! The operations files of `deploy/` (deploy/README.md): the alerting rules, their unit
//! tests and the scrape config pass promtool (of the version `scripts/promtool` pins); the
//! dashboard's queries parse; every metric the dashboard and the rules name is one the job
//! exports; the sample settings file passes `config check`; the systemd unit passes
//! `systemd-analyze verify`.
//!
//! promtool is built from the Go module proxy on first use (minutes: scripts/test and
//! `scripts/promtool install` do it beforehand, see deploy/README.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::process::{owned_command, run_script};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

/// The repository (the root package's folder).
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `scripts/promtool ARGS` in the repository; panics with its output when it fails.
fn promtool(args: &[&str]) -> String {
    let mut cmd = owned_command(repo("scripts/promtool"));
    cmd.args(args).current_dir(ROOT);
    run_script(cmd, "scripts/promtool", args).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn promtool_accepts_rules_and_config() {
    // Builds promtool unless it is in the cache; prints nothing on standard output.
    let out = promtool(&["install"]);
    assert_eq!(
        out, "",
        "`scripts/promtool install` printed on standard output"
    );
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["test", "rules", "deploy/prometheus/alerts_test.yml"],
        ["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let out = promtool(&args);
        println!("promtool {}:\n{out}", args.join(" "));
    }
}

/// Every `expr` of the dashboard's panels (rows included), in order.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| {
                    panic!("a target of panel {:?} has no expr", p["title"].as_str())
                });
                out.push(expr.to_owned());
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[test]
fn dashboard_queries_parse() {
    let text = read("deploy/grafana/retail-kpi.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(d["schemaVersion"].as_u64().is_some(), "no schemaVersion");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["DS_PROMETHEUS", "job", "instance"] {
        assert!(vars.contains(&v), "no dashboard variable {v}: {vars:?}");
    }
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 20, "only {} queries found", exprs.len());
    // Each query as a recording rule, Grafana's variables replaced by what they stand for:
    // promtool parses every one.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$job", "retail-kpi")
            .replace("$instance", ".+");
        assert!(!e.contains('$'), "a Grafana variable left in {e}");
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(&e).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard_rules.yml");
    std::fs::write(&file, &rules).unwrap();
    promtool(&["install"]);
    let path = file.to_str().expect("a UTF-8 temporary path");
    let out = promtool(&["check", "rules", path]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );
}

/// The metric names `text` mentions: `retail_kpi_…` and `process_…` (a run of `a-z` and
/// `_` after the prefix), where the prefix does not continue another word.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["retail_kpi_", "process_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix).map(|i| i + from) {
            from = i + prefix.len();
            let word_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
            if i > 0 && word_char(bytes[i - 1]) {
                continue;
            }
            let end = text[from..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .map_or(text.len(), |j| j + from);
            names.insert(text[i..end].to_owned());
            from = end;
        }
    }
    names
}

#[test]
fn every_metric_named_in_deploy_is_exported() {
    let m = retail_kpi::ops::metrics::Metrics::new(10);
    // A partition with a known lag, so that the per-partition family has a member.
    m.observe_source(&[0], Some(&BTreeMap::from([(0u32, 5u64)])));
    let text = m.render();

    // `# TYPE name type` of every family.
    let types: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?))
        })
        .collect();
    for (name, ty) in &types {
        assert!(
            !(*ty == "gauge" && name.ends_with("_total")),
            "gauge {name} ends in _total (a counter's suffix):\n{text}"
        );
    }
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let is_histogram = |base: &str| types.get(base) == Some(&"histogram");

    let mut named = BTreeMap::new();
    for file in [
        "deploy/grafana/retail-kpi.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let names = metric_names(&read(file));
        assert!(names.len() >= 5, "only {names:?} found in {file}");
        for n in names {
            named.entry(n).or_insert(file);
        }
    }

    let mut missing = Vec::new();
    for (name, file) in &named {
        let name: &str = name.as_str();
        // A histogram's series are named after it: strip their suffix from its base name.
        let name: &str = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(*s)
                    .filter(|base: &&str| is_histogram(base))
            })
            .unwrap_or(name);
        let exported = samples.iter().any(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with('{')
                    || rest.starts_with(' ')
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| is_histogram(name) && rest.starts_with(s))
            })
        });
        if !exported {
            missing.push(format!("{name} (in {file})"));
        }
    }
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}\nexported:\n{text}"
    );
}

/// The keys set at the top level of a settings file (before its first table).
fn top_level_keys(toml: &str) -> Vec<String> {
    toml.lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_owned()))
        .collect()
}

#[test]
fn sample_settings_pass_config_check() {
    let path = repo("deploy/retail-kpi.toml");
    let mut cmd = owned_command(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("RETAIL_KPI_") || k.starts_with("AWS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(["config", "check", "--config"]).arg(&path);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "config check --config {} failed ({}):\n{stdout}\n{stderr}",
        path.display(),
        out.status
    );
    // The brokers of the sample do not exist: config check must not try them (it would
    // wait out connect_timeout, 30 s, and exit 5).
    assert!(took < Duration::from_secs(15), "config check took {took:?}");
    // Every key the file sets is taken from it, and the Kafka password is masked.
    let keys = top_level_keys(&read("deploy/retail-kpi.toml"));
    assert!(keys.len() >= 20, "only {keys:?} found in the sample");
    for key in &keys {
        let shown = stdout.lines().any(|l| {
            l.starts_with(&format!("{key} = ")) && l.trim_end().ends_with("# settings file")
        });
        assert!(
            shown,
            "`{key}` is not shown from the settings file:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("\"sasl.password\" = \"********\""),
        "the password is not masked:\n{stdout}"
    );
    assert!(!stdout.contains("CHANGE-ME") && !stderr.contains("CHANGE-ME"));
}

#[test]
fn systemd_unit_verifies() {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "systemd-analyze is missing: this test verifies the unit with it; install it (Debian: apt-get install systemd; scripts/test does)"
    );
    // `verify` checks that ExecStart's program exists and is executable: the unit names
    // /usr/local/bin/retail-kpi, so a copy of it points at the binary under test.
    let unit = read("deploy/systemd/retail-kpi.service");
    const INSTALLED: &str = "ExecStart=/usr/local/bin/retail-kpi ";
    let mut rewritten = 0;
    let copy: String = unit
        .lines()
        .map(|l| match l.strip_prefix(INSTALLED) {
            Some(rest) => {
                rewritten += 1;
                format!("ExecStart={BIN} {rest}\n")
            }
            None => format!("{l}\n"),
        })
        .collect();
    assert_eq!(
        rewritten, 1,
        "the unit has no (or several) `{INSTALLED}...` lines"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retail-kpi.service");
    std::fs::write(&file, copy).unwrap();
    let out = owned_command("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings (an unknown key, a bad value) come on standard error with exit 0: none is
    // allowed either.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {} ({}):\n{}{stderr}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}
