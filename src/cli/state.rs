//! `retail-kpi state inspect` and `state migrate`.

use super::*;

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Show what a state store holds.
    Inspect {
        #[arg(long, env = "RETAIL_KPI_STATE")]
        state: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Back up an older store and migrate it to this build's schema version (a job does
    /// the same when it starts).
    Migrate {
        #[arg(long, env = "RETAIL_KPI_STATE")]
        state: PathBuf,
        /// Say what would be done, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The migrations a plan or a migration lists, one line each.
pub fn print_steps(m: &retail_kpi::state::Migrated, verb: &str) {
    for s in &m.steps {
        println!(
            "  {verb} {:04} {}: {} (keys written {}, deleted {}{})",
            s.version,
            s.name,
            s.summary,
            s.puts,
            s.deletes,
            if s.families_created.is_empty() {
                String::new()
            } else {
                format!(", families created {}", s.families_created.join(", "))
            }
        );
    }
}

pub fn migrate(path: &std::path::Path, dry_run: bool) -> anyhow::Result<()> {
    use retail_kpi::state::SCHEMA_VERSION;
    // Read-only first: a missing, newer, foreign or damaged store is refused untouched, and
    // a dry run is the plan and nothing else.
    let plan = Store::open_read_only(path)?.plan()?;
    if plan.steps.is_empty() {
        println!(
            "{}: schema version {} is this build's; nothing to migrate",
            path.display(),
            plan.from
        );
        return Ok(());
    }
    if dry_run {
        println!(
            "{}: would migrate from schema version {} to {SCHEMA_VERSION}",
            path.display(),
            plan.from
        );
        if let Some(b) = &plan.backup {
            println!("  would back it up first to {}", b.display());
        }
        print_steps(&plan, "would apply");
        println!("dry run: nothing changed");
        return Ok(());
    }
    let (_store, done) = Store::open_and_migrate(path)?;
    match done {
        Some(m) => {
            println!(
                "{}: migrated from schema version {} to {}",
                path.display(),
                m.from,
                m.to
            );
            if let Some(b) = &m.backup {
                println!("  backup of the old store: {}", b.display());
            }
            print_steps(&m, "applied");
        }
        // Another process migrated it between the two opens.
        None => println!(
            "{}: schema version {SCHEMA_VERSION} is this build's; nothing to migrate",
            path.display()
        ),
    }
    Ok(())
}

pub fn inspect(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use retail_kpi::state::SCHEMA_VERSION;
    // Read-only: looking must not migrate, create or change a store.
    let store = Store::open_read_only(path)?;
    let version = store.version();
    if version < SCHEMA_VERSION {
        // This build reads only its own layout; say what is there and what to do.
        let plan = store.plan()?;
        let pending: Vec<String> = plan
            .steps
            .iter()
            .map(|s| format!("{:04}_{}", s.version, s.name))
            .collect();
        let advice = format!(
            "older than this build's schema version {SCHEMA_VERSION}: run `retail-kpi state migrate --state {}` (or start the job) to migrate it, then inspect it",
            path.display()
        );
        if json {
            let v = serde_json::json!({
                "schema_version": version,
                "supported_schema_version": SCHEMA_VERSION,
                "pending_migrations": pending,
                "advice": advice,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("state store      {}", path.display());
            println!("schema version   {version} ({advice})");
            println!("pending          {}", pending.join(", "));
        }
        return Ok(());
    }
    let r = store.load()?;
    let fmt_t = |t: Option<i128>| {
        t.map(|n| {
            let secs = n.div_euclid(NANOS_PER_SEC) as i64;
            chrono::DateTime::from_timestamp(secs, n.rem_euclid(NANOS_PER_SEC) as u32)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default()
        })
    };
    let window = |s: i64| retail_kpi::event_time::format_instant(s);
    let counters = &r.counters;
    let rejected: serde_json::Map<String, serde_json::Value> = retail_kpi::record::Reason::ALL
        .iter()
        .map(|reason| {
            (
                reason.code().to_owned(),
                counters.rejected[reason.index()].into(),
            )
        })
        .collect();
    let v = serde_json::json!({
        "schema_version": version,
        "checkpoint_seq": r.seq,
        "partitions": r.partitions.iter().map(|(p, s)| serde_json::json!({
            "partition": p, "next_offset": s.next_offset, "max_event_time": fmt_t(s.max_event_time),
        })).collect::<Vec<_>>(),
        "closed_before": (r.closed_before != i64::MIN).then(|| window(r.closed_before)),
        "open_windows": {
            "count": r.open.len(),
            "first": r.open.first().map(|w| window(w.0)),
            "last": r.open.last().map(|w| window(w.0)),
        },
        "closed_windows_not_rendered": r.closed.len(),
        "buckets_due": r.ready_buckets.iter().map(|b| retail_kpi::event_time::bucket_name(*b)).collect::<Vec<_>>(),
        "rejected_files_due": r.pending_rejected.iter().map(|(s, v)| serde_json::json!({"checkpoint": s, "records": v.len()})).collect::<Vec<_>>(),
        "settings": r.settings.map(|set| set.describe().into_iter().map(|(k, v)| (k.to_owned(), serde_json::Value::from(v))).collect::<serde_json::Map<_, _>>()),
        "source": match &r.source {
            None => serde_json::Value::Null,
            Some(retail_kpi::source::SourceIdentity::Kafka { topic, topic_id }) => serde_json::json!({"kafka": {"topic": topic, "topic_id": topic_id}}),
            Some(retail_kpi::source::SourceIdentity::File { bytes, hash }) => serde_json::json!({"file": {"bytes_read": bytes, "xxh3_128": format!("{hash:032x}")}}),
        },
        "counters": {
            "read": counters.read, "accepted": counters.accepted, "rejected": rejected,
            "replayed_skipped": counters.replayed_skipped, "windows_closed": counters.windows_closed,
            "buckets_rendered": counters.buckets_rendered,
        },
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("state store      {}", path.display());
        println!("schema version   {version}");
        println!("checkpoint       {}", r.seq);
        for (p, s) in &r.partitions {
            println!(
                "partition {p:<6} next offset {:<12} M_p {}",
                s.next_offset.map_or("-".into(), |o| o.to_string()),
                fmt_t(s.max_event_time).unwrap_or_else(|| "-inf".into())
            );
        }
        println!(
            "closed before    {}",
            v["closed_before"].as_str().unwrap_or("-")
        );
        println!(
            "open windows     {} (first {}, last {})",
            r.open.len(),
            v["open_windows"]["first"].as_str().unwrap_or("-"),
            v["open_windows"]["last"].as_str().unwrap_or("-")
        );
        println!("closed, unwritten windows {}", r.closed.len());
        println!(
            "settings         {}",
            serde_json::to_string(&v["settings"])?
        );
        println!("source           {}", serde_json::to_string(&v["source"])?);
        println!("buckets due      {}", r.ready_buckets.len());
        println!("rejected files due {}", r.pending_rejected.len());
        println!(
            "counters         {}",
            serde_json::to_string(&v["counters"])?
        );
    }
    Ok(())
}
