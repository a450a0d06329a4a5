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
    use retail_kpi::state::StateError;
    // Read-only: looking must not migrate, create or change a store. A running job holds
    // the store's lock; then a secondary instance reads what it committed, without taking
    // the lock or writing in the folder.
    let (store, running) = match Store::open_read_only(path) {
        Ok(s) => (s, false),
        Err(StateError::Locked { .. }) => (Store::open_secondary(path)?, true),
        Err(e) => return Err(e.into()),
    };
    let v = retail_kpi::state::report::describe(&store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    println!("state store      {}", path.display());
    if running {
        println!("job              running: this is its last committed checkpoint");
    }
    if let Some(advice) = v.get("advice") {
        println!(
            "schema version   {} ({})",
            v["schema_version"],
            text(advice)
        );
        let pending: Vec<String> = v["pending_migrations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        println!("pending          {}", pending.join(", "));
        return Ok(());
    }
    println!("schema version   {}", v["schema_version"]);
    println!("checkpoint       {}", v["checkpoint_seq"]);
    for p in v["partitions"].as_array().into_iter().flatten() {
        println!(
            "partition {:<6} next offset {:<12} M_p {}",
            p["partition"].to_string(),
            p["next_offset"]
                .as_i64()
                .map_or("-".into(), |o| o.to_string()),
            p["max_event_time"].as_str().unwrap_or("-inf")
        );
    }
    println!("closed before    {}", text(&v["closed_before"]));
    let open = &v["open_windows"];
    println!(
        "open windows     {} (first {}, last {})",
        open["count"],
        text(&open["first"]),
        text(&open["last"])
    );
    println!(
        "closed, unwritten windows {}",
        v["closed_windows_not_rendered"]
    );
    println!(
        "settings         {}",
        serde_json::to_string(&v["settings"])?
    );
    println!("source           {}", serde_json::to_string(&v["source"])?);
    println!(
        "buckets due      {}",
        v["buckets_due"].as_array().map_or(0, |a| a.len())
    );
    println!(
        "rejected files due {}",
        v["rejected_files_due"].as_array().map_or(0, |a| a.len())
    );
    println!(
        "counters         {}",
        serde_json::to_string(&v["counters"])?
    );
    Ok(())
}
