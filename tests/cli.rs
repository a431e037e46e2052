//! The real binary: exit codes, config errors, `rules check|test`, `follow-ups`, secrets.
mod common;

use std::process::{Command, Output};
use std::time::Duration;

fn concierge(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concierge"));
    cmd.args(args).env_remove("CONCIERGE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run concierge")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec!["run"],
        vec!["demo"],
        vec!["sim"],
        vec!["rules", "check"],
        vec!["rules", "test"],
        vec!["audit"],
        vec!["audit", "explain"],
        vec!["replay"],
        vec!["follow-ups", "list"],
        vec!["follow-ups", "cancel"],
        vec!["purge"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let out = concierge(&args, &[]);
        assert!(out.status.success(), "{sub:?}: {}", text(&out));
        assert!(text(&out).contains("Usage:"), "{sub:?}");
    }
}

#[test]
fn invalid_config_names_key_and_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concierge.toml");
    std::fs::write(
        &path,
        "[channex]\napi_key = \"k\"\nrequests_per_minute = \"many\"\n",
    )
    .unwrap();
    let out = concierge(&["--config", path.to_str().unwrap(), "run"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("channex.requests_per_minute"), "{t}");
    assert!(t.contains(path.to_str().unwrap()), "{t}");

    // A missing API key for `run` is a config error too; the key itself is never echoed.
    std::fs::write(
        &path,
        "[channex]\nbase_url = \"https://x.example/api/v1/\"\n",
    )
    .unwrap();
    let out = concierge(&["--config", path.to_str().unwrap(), "run"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("channex.api_key"));

    let out = concierge(
        &["--config", path.to_str().unwrap(), "run"],
        &[
            ("CONCIERGE_CHANNEX_POLL_INTERVAL", "often"),
            ("CHANNEX_API_KEY", "SECRET-KEY-123"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains("CONCIERGE_CHANNEX_POLL_INTERVAL"), "{t}");
    assert!(!t.contains("SECRET-KEY-123"), "{t}");
}

#[test]
fn rules_check_reports_every_problem_with_file_and_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        rules.join("10_ok.rhai"),
        "if message.sender == \"guest\" { reply(\"hello\"); }\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("20_broken.rhai"),
        "let x = 1;\nlet y = ;\nreply(\"x\");\n",
    )
    .unwrap();
    std::fs::write(templates.join("hello.hbs"), "Hello {{vars.not_there}}\n").unwrap();
    let out = concierge(
        &[
            "rules",
            "check",
            "--dir",
            rules.to_str().unwrap(),
            "--templates",
            templates.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("20_broken.rhai:2"), "{t}");
    assert!(t.contains("hello"), "{t}");
    assert!(t.contains("not_there"), "{t}");

    // The shipped examples are clean.
    let root = env!("CARGO_MANIFEST_DIR");
    let out = concierge(
        &[
            "rules",
            "check",
            "--dir",
            &format!("{root}/rules"),
            "--templates",
            &format!("{root}/templates"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn rules_test_runs_fixtures_and_counts() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = concierge(
        &[
            "rules",
            "test",
            "--dir",
            &format!("{root}/rules"),
            "--templates",
            &format!("{root}/templates"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" passed, 0 failed"), "{}", text(&out));

    // A fixture expecting the wrong plan fails with a diff and exit code 1.
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path();
    let wrong = r#"{"name": "wifi question is answered with parking (wrong on purpose)",
      "now": "2024-07-01T12:00:00Z",
      "event": {"id": "e1", "type": "thread.new_message", "occurred_at": "2024-07-01T12:00:00Z",
        "property": {"id": "p1", "name": "Casa", "timezone": "Europe/Lisbon",
          "vars": {"wifi_name": "n", "wifi_password": "p", "parking": "street"}},
        "thread": {"id": "t1", "title": "Ana", "provider": "booking_com", "is_closed": false,
          "message_count": 1, "booking_id": "b1", "awaiting_reply": true},
        "message": {"id": "m1", "text": "What is the wifi password?", "sender": "guest",
          "attachments": [], "inserted_at": "2024-07-01T12:00:00Z"}},
      "expect": [{"action": "reply", "template": "faq_parking"}]}"#;
    std::fs::write(fixtures.join("wrong.json"), wrong).unwrap();
    let out = concierge(
        &[
            "rules",
            "test",
            "--dir",
            &format!("{root}/rules"),
            "--templates",
            &format!("{root}/templates"),
            "--fixtures",
            fixtures.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("0 passed, 1 failed"), "{t}");
    assert!(
        t.contains("faq_wifi"),
        "the diff shows what was planned: {t}"
    );
}

#[tokio::test]
async fn follow_ups_list_and_cancel_against_nats() {
    let (_nats, infra, cfg) = common::nats_infra().await;
    let store = concierge::store::timers::FollowUps::new(infra.followups.clone());
    store
        .arm(&concierge::store::timers::FollowUpTimer {
            thread_id: "thread-1".into(),
            booking_id: None,
            property_id: "p1".into(),
            name: "inquiry_alert".into(),
            due_at: "2031-01-01T10:00:00Z".parse().unwrap(),
            data: Default::default(),
            armed_at: chrono::Utc::now(),
            armed_by_event: "e1".into(),
            stay: None,
        })
        .await
        .unwrap();
    let env = [("NATS_URL", cfg.url.as_str())];
    let out = concierge(&["follow-ups", "list"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("thread-1") && t.contains("inquiry_alert") && t.contains("1 pending"),
        "{t}"
    );
    let out = concierge(&["follow-ups", "cancel", "thread-1", "inquiry_alert"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(store.list().await.unwrap().is_empty());
    let out = concierge(&["follow-ups", "cancel", "thread-1", "inquiry_alert"], &env);
    assert_eq!(out.status.code(), Some(1), "cancelling nothing is an error");
}

/// Issue #11, defect 5: a config error never shows a secret, whatever the error.
#[test]
fn config_errors_never_show_a_secret_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cases = [
        "[channex]\napi_key = \"sk_live_SUPERSECRET123\n",
        "[alerts]\nwebhook_url = https://hooks.example/services/SUPERSECRET123\n",
    ];
    for bad in cases {
        std::fs::write(&path, bad).unwrap();
        let out = concierge(&["--config", path.to_str().unwrap(), "run"], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let t = text(&out);
        assert!(t.contains(path.to_str().unwrap()), "{t}");
        assert!(t.contains("line 2"), "{t}");
        assert!(!t.contains("SUPERSECRET123"), "{t}");
    }
    // A NATS URL with user:password@ is never printed, even when it cannot be used.
    std::fs::write(
        &path,
        "[channex]\napi_key = \"k\"\n[nats]\nurl = \"nats://alice:hunter2pw@127.0.0.1:notaport\"\n",
    )
    .unwrap();
    let out = concierge(&["--config", path.to_str().unwrap(), "run"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("NATS"), "{t}");
    assert!(!t.contains("hunter2pw"), "{t}");
}

/// Issue #11, defect 7: nonsense durations exit 2 naming the key; a bad cron is one line.
#[test]
fn nonsense_durations_and_bad_cron_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concierge.toml");
    for (section, key) in [("worker", "ack_wait"), ("poller", "lease_ttl")] {
        std::fs::write(
            &path,
            format!("[channex]\napi_key = \"k\"\n[{section}]\n{key} = \"0s\"\n"),
        )
        .unwrap();
        let out = concierge(&["--config", path.to_str().unwrap(), "run"], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("{section}.{key}")),
            "{}",
            text(&out)
        );
    }
    std::fs::write(
        &path,
        "[channex]\napi_key = \"k\"\n[[schedules]]\nname = \"nightly\"\ncron = \"0 25 * * *\"\n",
    )
    .unwrap();
    let out = concierge(&["--config", path.to_str().unwrap(), "run"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(t.trim().lines().count(), 1, "{t}");
    assert!(
        t.contains("\"0 25 * * *\"") && t.contains("\"nightly\""),
        "{t}"
    );
}

/// A running `concierge demo --serve`: its stdout lines (drained to the end by a task) and
/// its stderr (the logs, collected until it exits).
struct DemoServe {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    logs: tokio::task::JoinHandle<String>,
}

fn spawn_demo_serve() -> DemoServe {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(["demo", "--serve"])
        .env_remove("NATS_URL")
        .env_remove("CONCIERGE_CONSOLE_TOKEN")
        .env_remove("CONCIERGE_CONFIG")
        .env("CONCIERGE_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting concierge demo --serve");
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut reader = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let logs = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    DemoServe { child, lines, logs }
}

impl DemoServe {
    /// The `console:` URL and `token:` of the first banner (within 60 s).
    async fn banner(&mut self) -> (String, String) {
        let (mut url, mut token) = (None, None);
        let mut seen = Vec::new();
        while url.is_none() || token.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no console banner within 60 s:\n{}", seen.join("\n")))
                .unwrap_or_else(|| {
                    panic!("the demo ended before its banner:\n{}", seen.join("\n"))
                });
            let trimmed = line.trim().to_string();
            if let Some(u) = trimmed.strip_prefix("console:") {
                url = Some(u.trim().to_string());
            }
            if let Some(t) = trimmed.strip_prefix("token:") {
                token = Some(t.trim().to_string());
            }
            seen.push(line);
        }
        (url.unwrap_or_default(), token.unwrap_or_default())
    }

    /// Ctrl-C (SIGINT), then its exit status (within 30 s), the rest of stdout and the logs.
    async fn interrupt(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let pid = self.child.id().expect("the demo's pid").to_string();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the demo stops within 30 s of Ctrl-C")
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.lines.recv()).await
        {
            rest.push(line);
        }
        (exit, rest, self.logs.await.unwrap_or_default())
    }
}

/// `concierge demo --serve` prints the console's URL and a random token before the script;
/// the URL answers 200 with the token as Bearer (login page / 401 without), the token never
/// reaches the logs, and Ctrl-C (SIGINT) stops the demo cleanly (exit 0).
#[tokio::test]
async fn demo_serve_prints_a_console_url_that_answers_with_the_token() {
    let mut demo = spawn_demo_serve();
    let (url, token) = demo.banner().await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(token.len() >= 32, "a random token: {token}");

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200, "GET {url} with the token");
    let body = page.text().await.unwrap();
    assert!(
        body.contains("<html") || body.contains("<!DOCTYPE"),
        "{body}"
    );
    let anonymous = http.get(&url).send().await.unwrap();
    assert!(
        matches!(anonymous.status().as_u16(), 401 | 303),
        "GET {url} without the token: {}",
        anonymous.status()
    );

    let (exit, rest, logs) = demo.interrupt().await;
    assert_eq!(exit.code(), Some(0), "{}\n{logs}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.contains("demo stopped (Ctrl-C)")),
        "{}",
        rest.join("\n")
    );
    assert!(
        !logs.contains(&token),
        "the console token is in the logs:\n{logs}"
    );
}
