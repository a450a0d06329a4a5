//! Reading an output folder back: KPI files, rejected records, a readable difference.

use std::collections::BTreeMap;
use std::path::Path;

/// Every KPI file below `out` (time_kpi/, country_kpi/): relative path -> bytes.
pub fn kpi_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for family in ["time_kpi", "country_kpi"] {
        let dir = out.join(family);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            assert!(
                !name.starts_with('.'),
                "temporary file left behind: {family}/{name}"
            );
            files.insert(format!("{family}/{name}"), std::fs::read(e.path()).unwrap());
        }
    }
    files
}

/// KPI files in place: temporary files (a file being written, or left by a killed run) are
/// not counted.
pub fn finished_kpi_files(out: &Path) -> usize {
    ["time_kpi", "country_kpi"]
        .iter()
        .filter_map(|f| std::fs::read_dir(out.join(f)).ok())
        .flatten()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

/// Every rejected record below `out/rejected`: (partition, offset) -> reason. Panics if a
/// record is there twice.
pub fn rejected(out: &Path) -> BTreeMap<(u32, i64), String> {
    let mut all = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(out.join("rejected")) else {
        return all;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(
            !name.starts_with('.'),
            "temporary file left behind: rejected/{name}"
        );
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_i64().unwrap(),
            );
            let reason = v["reason"].as_str().unwrap().to_owned();
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{line}"
            );
            assert!(v["raw"].is_string(), "{line}");
            if let Some(prev) = all.insert(key, reason) {
                panic!("rejected record {key:?} written twice (first as {prev}): {line}");
            }
        }
    }
    all
}

/// A short, readable difference of two file sets for assertion messages.
pub fn diff(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> String {
    let mut out = String::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let xl: Vec<&str> = std::str::from_utf8(x).unwrap_or("?").lines().collect();
                let yl: Vec<&str> = std::str::from_utf8(y).unwrap_or("?").lines().collect();
                let first = xl
                    .iter()
                    .zip(&yl)
                    .position(|(p, q)| p != q)
                    .unwrap_or(xl.len().min(yl.len()));
                out.push_str(&format!(
                    "{k}: differs at line {first}:\n  left:  {}\n  right: {}\n",
                    xl.get(first).unwrap_or(&"<none>"),
                    yl.get(first).unwrap_or(&"<none>")
                ));
            }
            (Some(_), None) => out.push_str(&format!("{k}: only left\n")),
            (None, Some(_)) => out.push_str(&format!("{k}: only right\n")),
            (None, None) => {}
        }
        if out.len() > 4000 {
            break;
        }
    }
    out
}
