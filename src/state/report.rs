//! What `state inspect --json` and `/api/v1/state` show of a store: one description, so
//! the command and the endpoint never disagree.

use super::{StateError, Store, SCHEMA_VERSION};
use crate::event_time::{bucket_name, format_instant, NANOS_PER_SEC};
use crate::record::Reason;
use crate::source::SourceIdentity;
use serde_json::{json, Map, Value};

/// The store's committed state as JSON. A store older than this build is described by its
/// version and the migrations it waits for, with what to do.
pub fn describe(store: &Store) -> Result<Value, StateError> {
    let version = store.version();
    if version < SCHEMA_VERSION {
        let plan = store.plan()?;
        let pending: Vec<String> = plan
            .steps
            .iter()
            .map(|s| format!("{:04}_{}", s.version, s.name))
            .collect();
        return Ok(json!({
            "schema_version": version,
            "supported_schema_version": SCHEMA_VERSION,
            "pending_migrations": pending,
            "advice": format!(
                "older than this build's schema version {SCHEMA_VERSION}: run `retail-kpi state migrate --state {}` (or start the job) to migrate it, then inspect it",
                store.path().display()
            ),
        }));
    }
    let r = store.load()?;
    let instant = |t: Option<i128>| {
        t.map(|n| {
            let secs = n.div_euclid(NANOS_PER_SEC) as i64;
            chrono::DateTime::from_timestamp(secs, n.rem_euclid(NANOS_PER_SEC) as u32)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default()
        })
    };
    let counters = &r.counters;
    let rejected: Map<String, Value> = Reason::ALL
        .iter()
        .map(|reason| {
            (
                reason.code().to_owned(),
                counters.rejected[reason.index()].into(),
            )
        })
        .collect();
    Ok(json!({
        "schema_version": version,
        "checkpoint_seq": r.seq,
        "partitions": r.partitions.iter().map(|(p, s)| json!({
            "partition": p, "next_offset": s.next_offset, "max_event_time": instant(s.max_event_time),
        })).collect::<Vec<_>>(),
        "closed_before": (r.closed_before != i64::MIN).then(|| format_instant(r.closed_before)),
        "open_windows": {
            "count": r.open.len(),
            "first": r.open.first().map(|w| format_instant(w.0)),
            "last": r.open.last().map(|w| format_instant(w.0)),
        },
        "closed_windows_not_rendered": r.closed.len(),
        "buckets_due": r.ready_buckets.iter().map(|b| bucket_name(*b)).collect::<Vec<_>>(),
        "rejected_files_due": r.pending_rejected.iter().map(|(s, v)| json!({"checkpoint": s, "records": v.len()})).collect::<Vec<_>>(),
        "settings": r.settings.map(|set| set.describe().into_iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<Map<_, _>>()),
        "source": match &r.source {
            None => Value::Null,
            Some(SourceIdentity::Kafka { topic, topic_id }) => json!({"kafka": {"topic": topic, "topic_id": topic_id}}),
            Some(SourceIdentity::File { bytes, hash }) => json!({"file": {"bytes_read": bytes, "xxh3_128": format!("{hash:032x}")}}),
            Some(SourceIdentity::Partials { topic, next_offset, input_topic, end_offsets }) => json!({"partials": {"topic": topic, "next_offset": next_offset, "input_topic": input_topic, "end_offsets": end_offsets}}),
        },
        "counters": {
            "read": counters.read, "accepted": counters.accepted, "rejected": rejected,
            "replayed_skipped": counters.replayed_skipped, "windows_closed": counters.windows_closed,
            "buckets_rendered": counters.buckets_rendered,
        },
    }))
}
