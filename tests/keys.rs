//! The one KV key encoding (`concierge::base::keys`): injective and reversible by property,
//! and used by the ledger, the follow-up timers, the poller's snapshots and the leases
//! against a real KV bucket (names that differ only in `.` / `_` / `=` no longer share a
//! key, and names with CR/LF, spaces, `*`, `>` are stored and read back).
mod common;

use chrono::{TimeZone, Utc};
use concierge::base::keys::{decode, encode, is_key_alphabet};
use concierge::store::ledger::Ledger;
use concierge::store::timers::{FollowUpTimer, FollowUps};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decode_inverts_encode_and_the_output_is_one_kv_token(raw in any::<String>()) {
        let token = encode(&raw);
        prop_assert!(!token.is_empty());
        prop_assert!(is_key_alphabet(&token), "{token}");
        prop_assert!(!token.contains('.'), "{token}");
        prop_assert_eq!(decode(&token), Ok(raw));
    }

    #[test]
    fn encode_is_injective(a in any::<String>(), b in any::<String>()) {
        prop_assume!(a != b);
        prop_assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn near_collisions_stay_apart(
        stem in "[a-z]{0,6}",
        seps in prop::collection::vec(prop::sample::select(vec![".", "_", "=", "-", " ", "/", "=2E", "\r\n", "*", ">"]), 2),
    ) {
        let (a, b) = (format!("{stem}{}x", seps[0]), format!("{stem}{}x", seps[1]));
        prop_assert_eq!(a == b, encode(&a) == encode(&b));
    }

    #[test]
    fn plain_ids_are_unchanged(id in "[A-Za-z0-9_/-]{1,64}") {
        prop_assert_eq!(encode(&id), id);
    }
}

#[tokio::test]
async fn cooldowns_of_templates_differing_in_dot_and_underscore_do_not_collide() {
    let (_nats, infra, _) = common::nats_infra().await;
    let ledger = Ledger::new(
        infra.ledger.clone(),
        "w1",
        std::time::Duration::from_secs(30),
    );
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    ledger.mark_sent("t1", "faq.wifi", at).await.unwrap();
    assert_eq!(ledger.last_sent("t1", "faq.wifi").await.unwrap(), Some(at));
    assert_eq!(
        ledger.last_sent("t1", "faq_wifi").await.unwrap(),
        None,
        "a different template's cooldown"
    );
    // Odd ids are stored and read back under their own key.
    ledger.mark_own_message("m 1\r\n*>").await.unwrap();
    assert!(ledger.is_own_message("m 1\r\n*>").await.unwrap());
    assert!(!ledger.is_own_message("m_1____").await.unwrap());
}

#[tokio::test]
async fn follow_up_timers_with_odd_names_round_trip_through_kv() {
    let (_nats, infra, _) = common::nats_infra().await;
    let timers = FollowUps::new(infra.followups.clone());
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let timer = |name: &str| FollowUpTimer {
        thread_id: "t.1".into(),
        booking_id: None,
        property_id: "p1".into(),
        name: name.into(),
        due_at: at,
        data: Default::default(),
        armed_at: at,
        armed_by_event: "e1".into(),
        stay: None,
    };
    for name in ["delayed.reply", "delayed_reply", "delayed=2Ereply", "a b>*"] {
        timers.arm(&timer(name)).await.unwrap();
    }
    let mut names: Vec<String> = timers
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a b>*", "delayed.reply", "delayed=2Ereply", "delayed_reply"]
    );
    assert!(timers.cancel("t.1", "delayed.reply").await.unwrap());
    assert!(timers.get("t.1", "delayed_reply").await.unwrap().is_some());
}
