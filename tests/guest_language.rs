//! The guest's language and reply attachments end to end: the real poller detects the
//! language, the worker renders the language's template from the shipped files, the
//! executor uploads and sends attachments to the simulator over real HTTP, with the ledger
//! and audit log on a private nats-server.
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use concierge::config::Config;
use concierge::events::{Event, EventType, Sender};
use concierge::roles::executor::CrashPoint;
use concierge::roles::poller::Poller;
use concierge::roles::worker::Worker;
use concierge::sim::SimServer;
use concierge::store::audit::{ActionKind, Outcome, Reason};
use concierge::store::nats::Infra;

const PROP: &str = "prop-lang";

struct Rig {
    _nats: concierge::store::nats::PrivateNatsServer,
    infra: Infra,
    sim: SimServer,
    config: Config,
    poller: Poller,
    _dir: Option<tempfile::TempDir>,
}

/// A rig on `rules`/`templates` folders (their `attachments/` is next to `templates`).
async fn rig(rules: PathBuf, templates: PathBuf, dir: Option<tempfile::TempDir>) -> Rig {
    let (nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    config.rules.dir = rules;
    config.rules.templates_dir = templates;
    let vars = serde_json::json!({"wifi_name": "CasaAzul", "wifi_password": "sardinhas",
                                  "checkin_time": "15:00", "checkout_time": "11:00"});
    config.properties.insert(
        PROP.into(),
        concierge::config::PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: vars.as_object().cloned().unwrap_or_default(),
            dry_run: false,
        },
    );
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    Rig {
        _nats: nats,
        infra,
        sim,
        config,
        poller,
        _dir: dir,
    }
}

/// The shipped rules and templates (and attachments) of this repository.
async fn shipped() -> Rig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    rig(root.join("rules"), root.join("templates"), None).await
}

/// A rule that answers "wifi" with the wifi template and `files` attached.
async fn with_attachments(files: &[(&str, &[u8])]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (rules, templates) = (dir.path().join("rules"), dir.path().join("templates"));
    let attachments = dir.path().join("attachments");
    for d in [&rules, &templates, &attachments] {
        std::fs::create_dir_all(d).unwrap();
    }
    let rule = r#"if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["wifi"]) {
    reply("wifi", #{ attachments: ["guide.pdf"] });
}
"#;
    std::fs::write(rules.join("10_wifi.rhai"), rule).unwrap();
    std::fs::write(templates.join("wifi.hbs"), "Wifi: {{vars.wifi_password}}").unwrap();
    for (name, bytes) in files {
        std::fs::write(attachments.join(name), bytes).unwrap();
    }
    rig(rules, templates, Some(dir)).await
}

impl Rig {
    /// A guest opens a thread and writes `text`; returns the thread and the poller's event.
    async fn guest_says(&mut self, name: &str, text: &str) -> (String, Event) {
        let thread = self.sim.sim.open_thread(PROP, "BookingCom", name, true);
        self.sim.sim.guest_message(&thread, text);
        (thread.clone(), self.poll_guest_event(&thread).await)
    }

    async fn poll_guest_event(&mut self, thread: &str) -> Event {
        self.poller.poll_once(Some(PROP)).await.unwrap();
        common::stored_events(&self.infra.js, "concierge")
            .await
            .into_iter()
            .rev()
            .find(|e| {
                e.event_type == EventType::ThreadNewMessage
                    && e.thread_id() == Some(thread)
                    && e.message
                        .as_ref()
                        .is_some_and(|m| m.sender == Sender::Guest)
            })
            .expect("the guest's message event")
    }

    async fn worker(&self) -> (Worker, Arc<concierge::content::LiveRules>) {
        let channex = concierge::wiring::channex_client(&self.config).unwrap();
        concierge::wiring::worker(&self.config, &self.infra, channex)
            .await
            .unwrap()
    }

    /// Texts sent to `thread` through the API (attachment messages carry none).
    fn texts_to(&self, thread: &str) -> Vec<String> {
        self.sim
            .sim
            .sent_by_api()
            .into_iter()
            .filter(|(t, text)| t == thread && !text.is_empty())
            .map(|(_, text)| text)
            .collect()
    }

    fn uploads(&self) -> usize {
        self.sim
            .sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/attachments"))
            .count()
    }

    /// The property messages of `thread` that carry an attachment.
    async fn attachment_messages(&self, thread: &str) -> Vec<String> {
        let channex = concierge::wiring::channex_client(&self.config).unwrap();
        let page = channex
            .list_thread_messages_page(thread, 1, 100)
            .await
            .unwrap();
        page.items
            .into_iter()
            .filter(|m| m.sender == Sender::Property && !m.attachments.is_empty())
            .flat_map(|m| m.attachments)
            .collect()
    }
}

#[tokio::test]
async fn a_german_speaking_guest_gets_the_german_wifi_answer() {
    let mut rig = shipped().await;
    let (thread, event) = rig
        .guest_says(
            "Jonas",
            "Hallo zusammen! Wie ist das WLAN-Passwort hier in der Wohnung?",
        )
        .await;
    let language = |e: &Event| e.thread.as_ref().and_then(|t| t.language.clone());
    assert_eq!(language(&event).as_deref(), Some("de"));
    assert_eq!(
        event.message.as_ref().and_then(|m| m.language.as_deref()),
        Some("de")
    );
    let (worker, _live) = rig.worker().await;
    assert!(worker.process_event(&event, 1).await.is_final());
    let texts = rig.texts_to(&thread);
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].contains("Unser WLAN heißt") && texts[0].contains("Passwort lautet sardinhas"),
        "{texts:?}"
    );

    // "Danke!" is too short to tell: the thread keeps German.
    rig.sim.sim.guest_message(&thread, "Danke!");
    let thanks = rig.poll_guest_event(&thread).await;
    assert_eq!(language(&thanks).as_deref(), Some("de"));
}

#[tokio::test]
async fn an_unknown_or_undetectable_language_falls_back_to_the_default_template() {
    let mut rig = shipped().await;
    let (worker, _live) = rig.worker().await;
    // Swedish: detected, but no Swedish files ship.
    let (italian, event) = rig
        .guest_says(
            "Astrid",
            "Hej! Kan ni berätta vad lösenordet till wifi är? Tack så mycket",
        )
        .await;
    assert_eq!(
        event.thread.as_ref().and_then(|t| t.language.as_deref()),
        Some("sv")
    );
    assert!(worker.process_event(&event, 1).await.is_final());
    // Too short to tell.
    let (short, event) = rig.guest_says("Sam", "wifi pw?").await;
    assert_eq!(event.thread.as_ref().and_then(|t| t.language.clone()), None);
    assert!(worker.process_event(&event, 1).await.is_final());
    for thread in [italian, short] {
        let texts = rig.texts_to(&thread);
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(
            texts[0].starts_with("Hi! Our wifi network is \"CasaAzul\""),
            "{texts:?}"
        );
    }
}

const GUIDE: &[u8] = include_bytes!("../attachments/checkin-guide.pdf");

#[tokio::test]
async fn an_attachment_is_sent_once_across_a_crash_between_upload_and_send() {
    let mut rig = with_attachments(&[("guide.pdf", GUIDE)]).await;
    let (thread, event) = rig.guest_says("Maria", "What is the wifi?").await;

    let (crashing, _l) = rig.worker().await;
    let report = crashing
        .with_crash_point(CrashPoint::AfterUpload)
        .process_event(&event, 1)
        .await;
    assert!(!report.is_final(), "the attachment is still to be sent");
    assert_eq!(rig.texts_to(&thread).len(), 1, "the text went first");
    assert_eq!(rig.uploads(), 1);
    assert!(rig.attachment_messages(&thread).await.is_empty());

    // The redelivery: no second upload, one send; a further one changes nothing.
    let (fresh, _l2) = rig.worker().await;
    let report = fresh.process_event(&event, 2).await;

    assert!(report.is_final(), "{report:?}");
    assert!(fresh.process_event(&event, 3).await.is_final());
    assert_eq!(rig.uploads(), 1);
    assert_eq!(rig.texts_to(&thread).len(), 1);
    let sent = rig.attachment_messages(&thread).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let record = report
        .records
        .iter()
        .find(|r| r.action == Some(ActionKind::Attachment))
        .expect("an attachment record");
    assert_eq!(record.outcome, Outcome::Executed);
    assert_eq!(record.text.as_deref(), Some("guide.pdf"));
    assert!(record.channex_message_id.is_some());
    assert!(sent[0].contains("/attachments/"), "{sent:?}");
}

#[tokio::test]
async fn a_crash_after_the_attachment_was_sent_is_resolved_by_reading_the_thread() {
    let mut rig = with_attachments(&[("guide.pdf", GUIDE)]).await;
    rig.config.worker.ack_wait = std::time::Duration::from_secs(1); // claim timeout
    rig.config.channex.timeout = std::time::Duration::from_millis(500);
    let (thread, event) = rig.guest_says("Maria", "What is the wifi?").await;
    let (crashing, _l) = rig.worker().await;
    let report = crashing
        .with_crash_point(CrashPoint::AfterAttachmentSend)
        .process_event(&event, 1)
        .await;
    assert!(!report.is_final());
    assert_eq!(rig.attachment_messages(&thread).await.len(), 1);

    // Another process takes the stale claim over and finds the file in the thread.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (fresh, _l2) = rig.worker().await;
    let report = fresh.process_event(&event, 2).await;
    assert!(report.is_final(), "{report:?}");
    assert_eq!(
        rig.attachment_messages(&thread).await.len(),
        1,
        "not sent twice"
    );
    assert_eq!(rig.uploads(), 1);
    let record = report
        .records
        .iter()
        .find(|r| r.action == Some(ActionKind::Attachment))
        .expect("an attachment record");
    assert_eq!(record.reason, Some(Reason::VerifiedAfterInterruption));
}

#[tokio::test]
async fn one_upload_is_reused_by_replies_with_the_same_file() {
    let mut rig = with_attachments(&[("guide.pdf", GUIDE)]).await;
    let (worker, _live) = rig.worker().await;
    let (first, event) = rig.guest_says("Ana", "wifi please").await;
    assert!(worker.process_event(&event, 1).await.is_final());
    let (second, event) = rig.guest_says("Rui", "the wifi?").await;
    assert!(worker.process_event(&event, 1).await.is_final());
    assert_eq!(rig.uploads(), 1);
    let (a, b) = (
        rig.attachment_messages(&first).await,
        rig.attachment_messages(&second).await,
    );
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a, b, "the same Channex attachment");
}

#[tokio::test]
async fn a_reply_whose_attachment_is_missing_sends_nothing_and_says_why() {
    let mut rig = with_attachments(&[]).await;
    let (thread, event) = rig.guest_says("Ana", "wifi please").await;
    let (worker, _live) = rig.worker().await;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final());
    assert!(rig.texts_to(&thread).is_empty());
    assert_eq!(rig.uploads(), 0);
    let record = &report.records[0];
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(record.reason, Some(Reason::AttachmentMissing));
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.contains("guide.pdf")),
        "{record:?}"
    );
}

#[tokio::test]
async fn live_reload_covers_the_attachments_folder_and_template_variants() {
    use concierge::content::LiveRules;
    use concierge::plan::rules::RuleEngine;
    let dir = tempfile::tempdir().unwrap();
    let (rules, templates) = (dir.path().join("rules"), dir.path().join("templates"));
    let attachments = dir.path().join("attachments");
    for d in [&rules, &templates, &attachments] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (live, _reports) = LiveRules::watch(&rules, &templates, Arc::new(RuleEngine::default()));
    let size = |pid: &str| {
        live.current()
            .attachments
            .resolve("guide.pdf", pid)
            .map(|f| f.size)
    };
    // Watched folders take well under a second; the periodic rescan (5 s) is the backstop.
    let within = std::time::Duration::from_secs(15);

    std::fs::write(attachments.join("guide.pdf"), b"v1").unwrap();
    common::eventually("the new file", within, || async { size("p1") == Some(2) }).await;
    std::fs::create_dir_all(attachments.join("p1")).unwrap();
    std::fs::write(attachments.join("p1").join("guide.pdf"), b"casa v1").unwrap();
    common::eventually("the property's override", within, || async {
        size("p1") == Some(7)
    })
    .await;
    assert_eq!(size("p2"), Some(2));
    std::fs::remove_file(attachments.join("guide.pdf")).unwrap();
    common::eventually("the deleted file gone", within, || async {
        size("p2").is_none()
    })
    .await;

    // Language variants of templates reload like any template.
    std::fs::write(templates.join("wifi.hbs"), "Wifi").unwrap();
    std::fs::write(templates.join("wifi.de.hbs"), "WLAN").unwrap();
    let file_for = |lang: &str| {
        live.current()
            .templates
            .resolve_in("wifi", "p1", Some(lang))
            .map(|f| f.file.clone())
    };
    common::eventually("the German variant", within, || async {
        file_for("de") == Some(templates.join("wifi.de.hbs"))
    })
    .await;
    assert_eq!(file_for("fr"), Some(templates.join("wifi.hbs")));
}
