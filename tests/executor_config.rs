//! Config rules behind the executor's guarantees (issue 11, defects 9 and 10): the claim
//! timeout must cover one send, and personal data may expire but never before the
//! guarantees that rest on it. Each violation names its key.
use concierge::config::{Config, ConfigError};

fn load(body: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concierge.toml");
    std::fs::write(&path, body).unwrap();
    Config::load(Some(&path), &[])
}

fn rejected_key(body: &str) -> String {
    match load(body) {
        Err(ConfigError::Key { key, .. }) => key,
        Err(other) => panic!("expected a key error, got {other}"),
        Ok(_) => panic!("accepted: {body}"),
    }
}

#[test]
fn ack_wait_must_outlast_the_channex_timeout_plus_the_skew_margin() {
    // 30 s timeout + 3.5 s margin > 35 s? No: 35 > 33.5, accepted.
    assert!(load("[worker]\nack_wait = \"35s\"\n").is_ok());
    assert_eq!(
        rejected_key("[worker]\nack_wait = \"30s\"\n"),
        "worker.ack_wait"
    );
    assert_eq!(
        rejected_key("[channex]\ntimeout = \"58s\"\n"),
        "worker.ack_wait"
    );
    assert!(load("[channex]\ntimeout = \"2s\"\n[worker]\nack_wait = \"5s\"\n").is_ok());
}

#[test]
fn retention_cannot_undercut_redelivery_cooldown_or_timers() {
    assert!(load("").is_ok(), "defaults keep every guarantee");
    assert_eq!(
        rejected_key("[nats]\nledger_max_age = \"7d\"\n"),
        "nats.ledger_max_age"
    );
    assert_eq!(
        rejected_key("[nats]\nledger_max_age = \"40d\"\nevents_max_age = \"60d\"\n"),
        "nats.ledger_max_age"
    );
    assert_eq!(
        rejected_key("[nats]\nfollowups_max_age = \"1d\"\n"),
        "nats.followups_max_age"
    );
    assert!(load("[nats]\nledger_max_age = \"60d\"\nfollowups_max_age = \"30d\"\n").is_ok());
}
