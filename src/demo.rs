//! `concierge demo`: the whole service on one machine, driven by a scripted conversation.
//!
//! Starts (or reuses) NATS, the Channex simulator, the poller, two workers and the
//! scheduler with the example rules in `rules/` and `templates/`, then plays a script — FAQ
//! questions, a Booking.com "thanks", a staff takeover of a delayed reply, an Airbnb inquiry
//! whose alert falls due within seconds, a stale thread — and prints a timeline of events and
//! audit records as they happen, then a summary. Exits non-zero if an expected outcome did
//! not happen within its time limit.
//!
//! It must not depend on anything outside the process but `nats-server`: with `NATS_URL`
//! set it uses that server under a throwaway prefix (and deletes its streams at the end),
//! otherwise it starts a private one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Timelike, Utc};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, PropertyConfig, ScheduleConfig, Secret};
use crate::events::{Event, EventType};
use crate::sim::{Sim, SimOptions};
use crate::store::audit::{ActionKind, AuditRecord, Outcome, Reason};
use crate::store::nats::{Infra, PrivateNatsServer};

const PROPERTY: &str = "casa-azul";
const API_KEY: &str = "demo-api-key";

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

#[derive(Default)]
struct Timeline {
    records: Vec<AuditRecord>,
    events: Vec<Event>,
}

struct Clock(Instant);

impl Clock {
    fn stamp(&self) -> String {
        format!("+{:>5.1}s", self.0.elapsed().as_secs_f64())
    }
}

fn say(clock: &Clock, line: impl AsRef<str>) {
    println!("{} {}", clock.stamp(), line.as_ref());
}

fn one_line(s: &str, n: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > n {
        format!("{}…", flat.chars().take(n).collect::<String>())
    } else {
        flat
    }
}

fn demo_config(base_url: &str, nats_url: &str, prefix: &str) -> Config {
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
    // Quiet hours are an example rule: keep them away from "now" so the demo's replies are
    // immediate whatever the time of day (the rule's own fixtures test the quiet case).
    let lisbon: chrono_tz::Tz = chrono_tz::Europe::Lisbon;
    let local_hour = Utc::now().with_timezone(&lisbon).hour();
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
        cron: "*/5 * * * * *".into(),
        timezone: "Europe/Lisbon".into(),
        property_ids: vec![PROPERTY.to_string()],
    });
    c
}

pub async fn run(keep_running: bool) -> anyhow::Result<()> {
    let clock = Clock(Instant::now());
    println!("concierge demo — the service end to end against a Channex simulator\n");

    // NATS: the one given by NATS_URL (throwaway prefix), or a private server.
    let external = std::env::var("NATS_URL").ok().filter(|u| !u.is_empty());
    let mut _private: Option<PrivateNatsServer> = None;
    let (nats_url, prefix) = match external {
        Some(url) => {
            let prefix = format!("demo{}", std::process::id());
            say(
                &clock,
                format!("using NATS at {url} (prefix {prefix}, removed afterwards)"),
            );
            (url, prefix)
        }
        None => {
            let server = PrivateNatsServer::start().context("starting a private nats-server")?;
            say(
                &clock,
                format!("started a private nats-server -js at {}", server.url),
            );
            let url = server.url.clone();
            _private = Some(server);
            (url, "concierge".to_string())
        }
    };

    let sim_server = Sim::start(SimOptions::with_key(API_KEY))
        .await
        .context("starting the Channex simulator")?;
    let sim = sim_server.sim.clone();
    sim.add_property(PROPERTY, "Casa Azul", true);
    say(
        &clock,
        format!("Channex simulator at {}", sim_server.base_url),
    );

    // A thread that went quiet three weeks ago, before the service started.
    let stale = sim.open_thread(PROPERTY, "BookingCom", "Old Conversation", true);
    sim.guest_message(&stale, "Is the balcony door key on the hook?");
    sim.staff_message(&stale, "Yes, the blue one. Have a lovely stay!");
    sim.backdate_thread(&stale, chrono::Duration::days(21));

    let config = demo_config(&sim_server.base_url, &nats_url, &prefix);
    let infra = Infra::setup(&config.nats)
        .await
        .context("setting up JetStream")?;
    let (shutdown_tx, shutdown) = watch::channel(false);

    // The timeline: every event and audit record, printed as it lands.
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let mut subscription = infra
        .client
        .subscribe(format!("{prefix}.>"))
        .await
        .context("subscribing to the demo subjects")?;
    let printer = {
        let timeline = timeline.clone();
        let start = clock.0;
        let sim = sim.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let clock = Clock(start);
            let mut last_tick: Option<String> = None;
            while let Some(msg) = subscription.next().await {
                let subject = msg.subject.as_str();
                if subject.starts_with(&format!("{prefix}.events.")) {
                    if let Ok(ev) = serde_json::from_slice::<Event>(&msg.payload) {
                        // One line per tick, not one per thread.
                        let tick_key = ev.id.rsplit_once(':').map(|(k, _)| k.to_string());
                        let repeated_tick =
                            ev.event_type == EventType::ScheduleTick && tick_key == last_tick;
                        if ev.event_type == EventType::ScheduleTick {
                            last_tick = tick_key;
                        }
                        if !repeated_tick {
                            say(&clock, describe_event(&ev, &sim));
                        }
                        if let Ok(mut t) = timeline.lock() {
                            t.events.push(ev);
                        }
                    }
                } else if subject.starts_with(&format!("{prefix}.audit.")) {
                    if let Ok(r) = serde_json::from_slice::<AuditRecord>(&msg.payload) {
                        if r.reason != Some(Reason::OwnMessage) {
                            let title = r
                                .thread_id
                                .as_deref()
                                .and_then(|t| sim.thread(t))
                                .map(|t| t.title)
                                .unwrap_or_default();
                            say(&clock, describe_record(&r, &title));
                        }
                        if let Ok(mut t) = timeline.lock() {
                            t.records.push(r);
                        }
                    }
                } else if subject.starts_with(&format!("{prefix}.alerts.")) {
                    let text = serde_json::from_slice::<Value>(&msg.payload)
                        .ok()
                        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
                        .unwrap_or_default();
                    say(
                        &clock,
                        format!("   🔔 STAFF ALERT: {}", one_line(&text, 140)),
                    );
                }
            }
        })
    };

    // The service: poller, scheduler, two workers sharing one durable consumer.
    let channex = crate::wiring::channex_client(&config)?;
    let (nudge_tx, nudge_rx) = mpsc::channel(4);
    let mut roles = tokio::task::JoinSet::new();
    {
        let poller = crate::wiring::poller(&config, &infra, channex.clone(), None);
        let shutdown = shutdown.clone();
        roles.spawn(async move {
            poller
                .run(shutdown, nudge_rx)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    {
        let scheduler = crate::wiring::scheduler(&config, &infra, channex.clone());
        let shutdown = shutdown.clone();
        roles.spawn(async move { scheduler.run(shutdown).await.map_err(anyhow::Error::from) });
    }
    let mut watchers = Vec::new();
    for _ in 0..2 {
        let (worker, live) = crate::wiring::worker(&config, &infra, channex.clone()).await?;
        watchers.push(live);
        let shutdown = shutdown.clone();
        let js = infra.js.clone();
        let prefix = prefix.clone();
        roles.spawn(async move {
            worker
                .run(&js, &prefix, shutdown)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    say(
        &clock,
        "poller, scheduler and 2 workers running with the example rules\n",
    );
    // Let the first poll record its baseline (history is not replayed).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let wait =
        |what: &'static str, limit: Duration, pred: Box<dyn Fn(&Timeline) -> bool + Send>| {
            let timeline = timeline.clone();
            async move {
                let deadline = Instant::now() + limit;
                loop {
                    if timeline.lock().map(|t| pred(&t)).unwrap_or(false) {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        bail!("demo expectation not met within {limit:?}: {what}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
    let has = |thread: String, action: ActionKind, outcome: Outcome| {
        Box::new(move |t: &Timeline| {
            t.records.iter().any(|r| {
                r.thread_id.as_deref() == Some(thread.as_str())
                    && r.action == Some(action)
                    && r.outcome == outcome
            })
        }) as Box<dyn Fn(&Timeline) -> bool + Send>
    };
    let _ = nudge_tx;

    let result: anyhow::Result<()> = async {
        println!(
            "— 1. The housekeeping schedule (every 5 s here) closes a thread idle for 3 weeks"
        );
        wait(
            "stale thread closed",
            Duration::from_secs(20),
            has(stale.clone(), ActionKind::CloseThread, Outcome::Executed),
        )
        .await?;

        println!("\n— 2. A Booking.com guest asks for the wifi, then says thanks");
        let maria = sim.open_thread(PROPERTY, "BookingCom", "Maria Santos", true);
        sim.guest_message(&maria, "Hi! What's the wifi password please?");
        wait(
            "wifi auto-reply",
            Duration::from_secs(15),
            has(maria.clone(), ActionKind::Reply, Outcome::Executed),
        )
        .await?;
        sim.guest_message(&maria, "Thanks so much!");
        wait(
            "no_reply_needed on the thanks",
            Duration::from_secs(15),
            has(maria.clone(), ActionKind::NoReplyNeeded, Outcome::Executed),
        )
        .await?;

        println!("\n— 3. An Airbnb guest asks about parking");
        let john = sim.open_thread(PROPERTY, "Airbnb", "John Miller", true);
        sim.guest_message(&john, "Hello! Is there parking near the apartment?");
        wait(
            "parking auto-reply",
            Duration::from_secs(15),
            has(john.clone(), ActionKind::Reply, Outcome::Executed),
        )
        .await?;

        println!(
            "\n— 4. A question no FAQ covers: a delayed holding reply, but staff answers first"
        );
        let lena = sim.open_thread(PROPERTY, "BookingCom", "Lena Fischer", true);
        sim.guest_message(&lena, "Could you recommend a good restaurant for Saturday?");
        wait(
            "delayed reply armed",
            Duration::from_secs(15),
            has(lena.clone(), ActionKind::FollowUp, Outcome::Executed),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        sim.staff_message(
            &lena,
            "Hi Lena! Try Taberna da Rua das Flores, ask for Miguel.",
        );
        say(&clock, "   (staff member answered Lena by hand)");
        wait(
            "delayed reply cancelled by the staff answer",
            Duration::from_secs(20),
            has(lena.clone(), ActionKind::CancelFollowUp, Outcome::Executed),
        )
        .await?;

        println!("\n— 5. An Airbnb inquiry: alert staff before the response deadline");
        let deadline = Utc::now() + chrono::Duration::hours(2) + chrono::Duration::seconds(8);
        let checkin = (Utc::now() + chrono::Duration::days(10))
            .format("%Y-%m-%d")
            .to_string();
        let checkout = (Utc::now() + chrono::Duration::days(13))
            .format("%Y-%m-%d")
            .to_string();
        let (andrew, _) = sim.add_inquiry(
            PROPERTY, "Andrew", deadline, &checkin, &checkout, 3, "412.50", "EUR",
        );
        say(
            &clock,
            format!(
                "   (inquiry deadline {}; the 2-hour alert falls due in ~8 s)",
                deadline.format("%H:%M:%S UTC")
            ),
        );
        wait(
            "inquiry follow-up armed",
            Duration::from_secs(15),
            has(andrew.clone(), ActionKind::FollowUp, Outcome::Executed),
        )
        .await?;
        wait(
            "staff alert for the inquiry",
            Duration::from_secs(25),
            has(andrew.clone(), ActionKind::Alert, Outcome::Executed),
        )
        .await?;

        Ok(())
    }
    .await;

    // Let trailing records land, then stop everything gracefully.
    tokio::time::sleep(Duration::from_millis(800)).await;
    if keep_running && result.is_ok() {
        say(
            &clock,
            "demo script done; services keep running (Ctrl-C to stop)",
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = shutdown_tx.send(true);
    while let Some(joined) = tokio::time::timeout(Duration::from_secs(10), roles.join_next())
        .await
        .ok()
        .flatten()
    {
        if let Ok(Err(e)) = joined {
            tracing::warn!(error = %format!("{e:#}"), "role ended with an error");
        }
    }
    printer.abort();
    drop(watchers);

    print_summary(&timeline, &sim);
    if _private.is_none() {
        for stream in [
            crate::store::nats::events_stream(&prefix),
            crate::store::nats::audit_stream(&prefix),
        ] {
            let _ = infra.js.delete_stream(&stream).await;
        }
        for bucket in [
            infra.names.threads_bucket(),
            infra.names.ledger_bucket(),
            infra.names.followups_bucket(),
            infra.names.leases_bucket(),
        ] {
            let _ = infra.js.delete_key_value(&bucket).await;
        }
    }
    sim_server.shutdown().await;
    match result {
        Ok(()) => {
            println!(
                "\ndemo finished in {:.1}s: every expected outcome happened",
                clock.0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn describe_event(ev: &Event, sim: &Sim) -> String {
    let who = ev
        .thread
        .as_ref()
        .map(|t| format!("{} ({})", t.title, t.provider))
        .unwrap_or_default();
    match (&ev.message, ev.event_type.as_str()) {
        (Some(m), "thread.new_message") => {
            let sender = if m.sender == "property" {
                if sim.sent_by_api().iter().any(|(_, text)| text == &m.text) {
                    "concierge"
                } else {
                    "staff"
                }
            } else {
                m.sender.as_str()
            };
            format!("📨 {who} · {sender}: \"{}\"", one_line(&m.text, 90))
        }
        (_, "inquiry.received") => {
            let i = ev.inquiry.clone().unwrap_or_default();
            format!(
                "📨 {who} · inquiry from {} for {}–{} (respond by {})",
                i.guest_name.unwrap_or_default(),
                i.checkin_date.unwrap_or_default(),
                i.checkout_date.unwrap_or_default(),
                i.non_response_at
                    .map(|t| t.format("%H:%M:%S UTC").to_string())
                    .unwrap_or_default()
            )
        }
        (_, "follow_up.due") => format!(
            "⏰ {who} · follow-up \"{}\" is due",
            ev.follow_up.as_ref().map(|f| f.name.as_str()).unwrap_or("")
        ),
        (_, "schedule.tick") => format!(
            "🕘 schedule \"{}\" tick: one event per open thread",
            ev.schedule.as_ref().map(|s| s.name.as_str()).unwrap_or("")
        ),
        (_, other) => format!("📨 {who} · {other}"),
    }
}

fn describe_record(r: &AuditRecord, thread_title: &str) -> String {
    let what = match (&r.action, &r.template) {
        (Some(a), Some(t)) => format!("{a}({t})"),
        (Some(a), None) => a.to_string(),
        _ => "-".into(),
    };
    let mut line = format!(
        "   ↳ {:<14} {:<18} {:<26} → {}",
        one_line(thread_title, 14),
        r.rule.as_deref().unwrap_or("-"),
        what,
        r.outcome
    );
    if let Some(reason) = &r.reason {
        line.push_str(&format!(" ({reason})"));
    }
    if let Some(text) = r
        .text
        .as_deref()
        .filter(|_| r.action == Some(ActionKind::Reply))
    {
        line.push_str(&format!(": \"{}\"", one_line(text, 80)));
    }
    if let Some(err) = r
        .error
        .as_deref()
        .filter(|_| r.outcome == Outcome::Failed || r.outcome == Outcome::RuleError)
    {
        line.push_str(&format!(" — {}", one_line(err, 80)));
    }
    line
}

fn print_summary(timeline: &Arc<Mutex<Timeline>>, sim: &Sim) {
    let Ok(t) = timeline.lock() else { return };
    println!("\n==================== summary ====================");
    println!(
        "events: {}   audit records: {}",
        t.events.len(),
        t.records.len()
    );
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &t.records {
        *counts.entry(r.outcome.as_str()).or_default() += 1;
    }
    println!(
        "outcomes: {}",
        counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    println!("\nwhat each guest saw:");
    for id in sim.thread_ids() {
        let Some(thread) = sim.thread(&id) else {
            continue;
        };
        println!(
            "  {} ({}){}",
            thread.title,
            thread.provider,
            if thread.is_closed { " [closed]" } else { "" }
        );
        let mut msgs = sim.messages(&id);
        msgs.sort_by_key(|m| m.inserted_at);
        for m in msgs {
            if m.is_inquiry() {
                println!("     system: inquiry");
                continue;
            }
            println!("     {:<8} {}", m.sender.as_str(), one_line(&m.text, 100));
        }
    }
    let replies_per_thread = sim.sent_by_api();
    let mut seen = std::collections::HashSet::new();
    let duplicates = replies_per_thread
        .iter()
        .filter(|(thread, text)| {
            !seen.insert((thread.clone(), crate::roles::executor::normalise_text(text)))
        })
        .count();
    println!(
        "\nauto-replies sent: {}   duplicates: {duplicates}",
        replies_per_thread.len()
    );
}
