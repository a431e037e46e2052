//! The demo's configuration: one property (Casa Azul, Lisbon) on the simulator, the example
//! rules and templates, short intervals so the script runs in seconds, and a housekeeping
//! schedule every 5 seconds. Must not read the environment (the CLI passes what it needs).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Map, Value};

use crate::config::{Config, PropertyConfig, ScheduleConfig, Secret};

pub const PROPERTY: &str = "casa-azul";
pub const API_KEY: &str = "demo-api-key";

/// Where the example rules live: next to the binary's sources when run from a checkout,
/// else `./rules`.
fn examples_dir(name: &str) -> PathBuf {
    let from_manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    if from_manifest.is_dir() {
        from_manifest
    } else {
        PathBuf::from(name)
    }
}

/// The demo's configuration; `now` places the example quiet hours away from the demo.
pub fn demo_config(base_url: &str, nats_url: &str, prefix: &str, now: DateTime<Utc>) -> Config {
    let mut c = Config::default();
    c.channex.base_url = base_url.to_string();
    c.channex.api_key = Secret::new(API_KEY);
    c.channex.property_ids = vec![PROPERTY.to_string()];
    c.channex.poll_interval = Duration::from_millis(700);
    c.nats.url = nats_url.to_string();
    c.nats.prefix = prefix.to_string();
    c.rules.dir = examples_dir("rules");
    c.rules.templates_dir = examples_dir("templates");
    c.worker.retry_delay = Duration::from_secs(1);
    c.worker.ack_wait = Duration::from_secs(10);
    // The claim timeout (ack_wait) must outlast one send (executor::claim).
    c.channex.timeout = Duration::from_secs(5);
    c.worker.shutdown_timeout = Duration::from_secs(5);
    c.poller.lease_ttl = Duration::from_secs(2);
    c.alerts.log = false;
    // Bookings are read (booking block, booking.changed) for the stay scene.
    c.poller.bookings = true;
    // Quiet hours are an example rule: keep them away from "now" so the demo's replies are
    // immediate whatever the time of day (the rule's own fixtures test the quiet case).
    let lisbon: chrono_tz::Tz = chrono_tz::Europe::Lisbon;
    let local_hour = now.with_timezone(&lisbon).hour();
    let quiet_start = format!("{:02}:00", (local_hour + 6) % 24);
    let quiet_end = format!("{:02}:00", (local_hour + 8) % 24);
    let vars: Map<String, Value> = json!({
        "wifi_name": "CasaAzul-Guest",
        "wifi_password": "sardinhas2024",
        "checkin_time": "15:00",
        "checkout_time": "11:00",
        "parking": "Free street parking on Rua das Flores; the garage code is 4512.",
        "address": "Rua das Flores 12, 1200-195 Lisboa",
        "directions": "From Baixa-Chiado metro, walk 5 minutes up Rua Garrett and turn left.",
        "early_checkin": "Early check-in from 12:00 is possible for 20 EUR when the room is ready.",
        "host_name": "Inês",
        "quiet_start": quiet_start,
        "quiet_end": quiet_end,
        "close_after_days": 14,
        "inquiry_alert_before_hours": 2,
        "delayed_reply_minutes": 0.1,
        // The day-before-arrival message goes out a few seconds into the demo (stay scene).
        "checkin_message_time": (now + super::stay::CHECKIN_MESSAGE_AFTER)
            .with_timezone(&lisbon)
            .format("%H:%M:%S")
            .to_string(),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    c.properties.insert(
        PROPERTY.to_string(),
        PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars,
            dry_run: false,
        },
    );
    c.schedules.push(ScheduleConfig {
        name: "housekeeping".into(),
        // Every 5 seconds for the demo; a real host would use e.g. "0 9 * * *".
        cron: "*/5 * * * * *".parse().expect("a valid cron literal"),
        timezone: "Europe/Lisbon".into(),
        property_ids: vec![PROPERTY.to_string()],
    });
    c
}
