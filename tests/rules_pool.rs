//! `RuleEngine::evaluate_in_pool` (issue #11, defect 2): a rule burning its whole wall-time
//! budget runs on the blocking pool, so a task sharing the async thread keeps ticking. The
//! worker-level version of this is in `rules_worker.rs`. Must not depend on NATS.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use concierge::content::load_rules;
use concierge::events::Event;
use concierge::plan::rules::{EvalContext, RuleEngine, RuleLimits};
use serde_json::json;

fn event() -> Event {
    serde_json::from_value(json!({
        "id": "e1", "type": "schedule.tick", "occurred_at": "2024-07-01T03:00:00Z",
        "property": {"id": "p1", "timezone": "Europe/Lisbon"}, "schedule": {"name": "daily"}
    }))
    .expect("valid event")
}

#[test]
fn a_slow_rule_does_not_stall_the_async_runtime() {
    // One runtime thread: evaluating on it would freeze the heartbeat for the whole run.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let engine = RuleEngine::new(RuleLimits {
        max_operations: u64::MAX / 2,
        max_wall_time: Duration::from_millis(300),
        ..RuleLimits::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("10_slow.rhai"),
        "let s = 0;\nloop { s += 1; }\n",
    )
    .expect("write");
    let (set, problems) = load_rules(&engine, dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    let engine = Arc::new(engine);
    let now: DateTime<Utc> = "2024-07-01T10:00:00Z".parse().expect("time");
    // Ticks seen while the rule burns its 300 ms budget.
    let seen = rt.block_on(async {
        let counter = Arc::new(AtomicU32::new(0));
        let c = counter.clone();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        let e = engine
            .evaluate_in_pool(&set, &event(), &EvalContext { now })
            .await
            .expect("evaluation finished");
        heartbeat.abort();
        assert!(e.rules[0].error.is_some(), "{e:?}");
        counter.load(Ordering::Relaxed)
    });
    assert!(
        seen >= 5,
        "only {seen} heartbeat ticks during a 300 ms rule"
    );
}
