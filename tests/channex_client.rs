//! The Channex client against the in-process simulator over real HTTP: every endpoint,
//! every error status, retries (429 with Retry-After, 5xx, timeouts, connection errors),
//! the non-idempotent send policy, pagination, attachment URLs, secrecy of the key, and
//! tolerance of malformed list items (served by a tiny axum app).

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use concierge::channex::{
    ApiKey, ChannexClient, ChannexError, ClientOptions, ErrorCode, OrderDirection, Provider,
    Sender, ThreadQuery,
};
use concierge::sim::{FaultConfig, Sim, SimOptions, SimServer};

const KEY: &str = "test-key-7f3a9c1d";

async fn sim() -> SimServer {
    Sim::start(SimOptions::with_key(KEY))
        .await
        .expect("start sim")
}

fn opts(base_url: &str) -> ClientOptions {
    let mut o = ClientOptions::new(base_url, ApiKey::new(KEY));
    o.requests_per_minute = 100_000;
    o.backoff_base = Duration::from_millis(20);
    o.backoff_max = Duration::from_secs(2);
    o.timeout = Duration::from_secs(5);
    o
}

fn client(server: &SimServer) -> ChannexClient {
    ChannexClient::new(opts(&server.base_url)).expect("client")
}

fn api_code(e: &ChannexError) -> (u16, ErrorCode) {
    match e {
        ChannexError::Api { status, code, .. } => (*status, code.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn statuses(sim: &Sim) -> Vec<u16> {
    sim.requests().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn list_threads_paginates_250_threads_in_3_calls() {
    let s = sim().await;
    let c = client(&s);
    for i in 0..250 {
        s.sim
            .open_thread("p1", "BookingCom", &format!("Guest {i}"), true);
    }
    s.sim.open_thread("p2", "Airbnb", "Other property", true);
    s.sim.clear_requests();

    let listing = c
        .list_threads(&ThreadQuery::for_property("p1"))
        .await
        .expect("list");
    assert_eq!(listing.items.len(), 250);
    assert_eq!(listing.pages, 3);
    assert_eq!(listing.total, 250);
    assert!(listing.skipped.is_empty());
    assert!(listing.order_honoured);
    assert!(listing
        .items
        .iter()
        .all(|t| t.property_id.as_deref() == Some("p1")));
    let reqs = s.sim.requests();
    assert_eq!(reqs.len(), 3);
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.path, "/api/v1/message_threads");
        assert!(
            r.query.contains(&format!("pagination[page]={}", i + 1)),
            "{}",
            r.query
        );
        assert!(r.query.contains("pagination[limit]=100"));
        assert!(r.query.contains("filter[property_id]=p1"));
    }
    // Default order: inserted_at desc, newest first.
    assert!(listing
        .items
        .windows(2)
        .all(|w| w[0].inserted_at > w[1].inserted_at));

    // A single page, default sim page size applies only when no limit is sent.
    let page = c
        .list_threads_page(&ThreadQuery::default(), 2)
        .await
        .expect("page");
    assert_eq!(page.items.len(), 100);
    assert_eq!(page.meta.page, 2);
    assert_eq!(page.meta.total, 251);
}

#[tokio::test]
async fn ordering_is_requested_and_detected() {
    let s = sim().await;
    let c = client(&s);
    let a = s.sim.open_thread("p1", "BookingCom", "A", true);
    let b = s.sim.open_thread("p1", "BookingCom", "B", true);
    s.sim.guest_message(&a, "newest activity on A");
    let q = ThreadQuery::for_property("p1").ordered_by("updated_at", OrderDirection::Desc);
    let l = c.list_threads(&q).await.expect("list");
    assert!(l.order_honoured);
    assert_eq!(l.items[0].id, a);
    assert_eq!(l.items[1].id, b);
    assert!(s
        .sim
        .requests()
        .iter()
        .any(|r| r.query.contains("order[updated_at]=desc")));

    let asc = ThreadQuery::for_property("p1").ordered_by("updated_at", OrderDirection::Asc);
    let l = c.list_threads(&asc).await.expect("list asc");
    assert!(l.order_honoured);
    assert_eq!(l.items[0].id, b);

    s.sim.set_list_features(false, true);
    let l = c.list_threads(&q).await.expect("list");
    assert!(!l.order_honoured, "sim ignored the order: must be detected");
    assert_eq!(l.items.len(), 2);
}

#[tokio::test]
async fn thread_messages_send_and_thread_counters() {
    let s = sim().await;
    let c = client(&s);
    let t = s.sim.open_thread("p1", "BookingCom", "Maria", true);
    let g = s.sim.guest_message(&t, "Hi, what's the wifi?");
    let staff = s.sim.staff_message(&t, "Hello from the front desk");

    let before = c.get_thread(&t).await.expect("get");
    assert_eq!(before.id, t);
    assert_eq!(before.title, "Maria");
    assert_eq!(before.provider, Provider::BookingCom);
    assert_eq!(before.message_count, 2);
    assert!(before.booking_id.is_some());
    assert!(before.channel_id.is_some());
    assert_eq!(before.property_id.as_deref(), Some("p1"));

    let sent = c
        .send_thread_message(&t, "The wifi is CasaAzul / sunshine")
        .await
        .expect("send");
    assert_eq!(sent.text, "The wifi is CasaAzul / sunshine");
    assert_eq!(sent.sender, Sender::Property);
    assert_eq!(sent.thread_id.as_deref(), Some(t.as_str()));
    assert_eq!(sent.user_id, Some(s.sim.api_user_id()));
    assert_eq!(
        s.sim.sent_by_api(),
        vec![(t.clone(), "The wifi is CasaAzul / sunshine".to_string())]
    );

    let after = c.get_thread(&t).await.expect("get");
    assert_eq!(after.message_count, 3);
    let last = after.last_message.expect("last");
    assert_eq!(last.text, "The wifi is CasaAzul / sunshine");
    assert_eq!(last.sender, Sender::Property);
    assert_eq!(after.last_message_received_at, Some(sent.inserted_at));
    assert!(after.updated_at > before.updated_at);

    // Newest first, across pages.
    let all = c.list_thread_messages(&t).await.expect("messages");
    let ids: Vec<_> = all.items.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, vec![sent.id.clone(), staff.clone(), g.clone()]);
    assert_eq!(all.items[1].user_id, Some(s.sim.staff_user_id()));
    assert_eq!(all.items[2].sender, Sender::Guest);
    assert!(all
        .items
        .windows(2)
        .all(|w| w[0].inserted_at > w[1].inserted_at));

    let p1 = c.list_thread_messages_page(&t, 1, 2).await.expect("p1");
    let p2 = c.list_thread_messages_page(&t, 2, 2).await.expect("p2");
    assert_eq!(p1.items.len(), 2);
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.items[0].id, g);
    assert_eq!(p1.meta.total, 3);
    assert_eq!(p1.meta.order_by, "inserted_at");
    assert_eq!(p1.meta.order_direction, "desc");
}

#[tokio::test]
async fn booking_messages_and_attachments() {
    let s = sim().await;
    let c = client(&s);
    let t = s.sim.open_thread("p1", "Airbnb", "John", true);
    let booking = s
        .sim
        .thread(&t)
        .and_then(|t| t.booking_id)
        .expect("booking");
    s.sim.guest_message(&t, "Parking?");

    let l = c.list_booking_messages(&booking).await.expect("list");
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].text, "Parking?");

    let m = c
        .send_booking_message(&booking, "Free parking behind the house")
        .await
        .expect("send");
    assert_eq!(m.thread_id.as_deref(), Some(t.as_str()));

    let bytes = b"\x89PNG fake image bytes";
    let att = c
        .upload_attachment(bytes, "map.png", "image/png")
        .await
        .expect("upload");
    let with_text = c
        .send_booking_attachment(&booking, &att, Some("Here is a map"))
        .await
        .expect("send attachment");
    let url = format!("{}attachments/{att}", s.base_url);
    assert_eq!(with_text.attachments, vec![url.clone()]);
    assert_eq!(with_text.text, "Here is a map");
    let bare = c
        .send_thread_attachment(&t, &att, None)
        .await
        .expect("send attachment to thread");
    assert_eq!(bare.text, "");
    assert_eq!(bare.attachments, vec![url.clone()]);

    // Relative URLs in list answers are made absolute too, and resolve to the bytes.
    let msgs = c.list_thread_messages(&t).await.expect("messages");
    assert_eq!(msgs.items[0].attachments, vec![url.clone()]);
    let thread = c.get_thread(&t).await.expect("thread");
    assert_eq!(
        thread.last_message.expect("last").attachments,
        vec![url.clone()]
    );
    let got = reqwest::Client::new()
        .get(&url)
        .header("user-api-key", KEY)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&got[..], bytes);

    let unknown = c
        .send_thread_attachment(&t, "no-such-attachment", None)
        .await
        .expect_err("unknown attachment");
    assert_eq!(api_code(&unknown), (422, ErrorCode::ValidationError));
}

#[tokio::test]
async fn close_and_no_reply_needed() {
    let s = sim().await;
    let c = client(&s);
    let bc = s.sim.open_thread("p1", "BookingCom", "Booking guest", true);
    let ab = s.sim.open_thread("p1", "AirBNB", "Airbnb guest", true);

    c.mark_no_reply_needed(&bc).await.expect("no reply");
    assert_eq!(s.sim.no_reply_needed_marks(&bc), 1);
    let e = c.mark_no_reply_needed(&ab).await.expect_err("airbnb");
    assert_eq!(api_code(&e), (422, ErrorCode::NotSupported));
    assert_eq!(e.code(), Some(&ErrorCode::NotSupported));
    assert!(!e.is_transient());
    assert_eq!(s.sim.no_reply_needed_marks(&ab), 0);

    let closed = c.close_thread(&ab).await.expect("close");
    assert!(closed.is_closed);
    assert_eq!(closed.id, ab);
    assert!(s.sim.thread(&ab).expect("thread").is_closed);
}

#[tokio::test]
async fn inquiry_reads_back_with_details() {
    let s = sim().await;
    let c = client(&s);
    s.sim.add_property("p1", "Test Property", true);
    let deadline = Utc
        .with_ymd_and_hms(2030, 12, 1, 7, 1, 38)
        .single()
        .expect("ts");
    let (t, m) = s.sim.add_inquiry(
        "p1",
        "Andrew",
        deadline,
        "2030-12-02",
        "2030-12-03",
        3,
        "50.00",
        "GBP",
    );
    let thread = c.get_thread(&t).await.expect("thread");
    assert_eq!(thread.provider, Provider::Airbnb);
    assert_eq!(thread.booking_id, None);
    let msgs = c.list_thread_messages(&t).await.expect("messages");
    let inquiry = msgs.items.iter().find(|x| x.id == m).expect("inquiry msg");
    assert!(inquiry.is_inquiry());
    let d = inquiry.booking_details().expect("details");
    assert_eq!(d.non_response_at, Some(deadline));
    assert_eq!(d.nights, Some(1));
    assert_eq!(d.number_of_guests, Some(3));
    assert_eq!(d.guest_name.as_deref(), Some("Andrew"));
    assert_eq!(d.listing_name.as_deref(), Some("Test Property"));
    assert_eq!(d.currency.as_deref(), Some("GBP"));
    assert_eq!(d.expected_payout_amount_accurate.as_deref(), Some("50.00"));
    assert_eq!(
        inquiry.meta.as_ref().and_then(|m| m.status.as_deref()),
        Some("active")
    );
}

#[tokio::test]
async fn error_statuses_map_to_typed_errors_without_retry() {
    let s = sim().await;
    s.sim.add_property("noapp", "No app", false);
    let hidden = s.sim.open_thread("noapp", "BookingCom", "Hidden", true);
    let hidden_booking = s.sim.thread(&hidden).and_then(|t| t.booking_id).expect("b");
    let visible = s.sim.open_thread("p1", "BookingCom", "Visible", true);

    // 401: wrong key, not retried.
    let mut wrong = opts(&s.base_url);
    wrong.api_key = ApiKey::new("wrong-key");
    let bad = ChannexClient::new(wrong).expect("client");
    s.sim.clear_requests();
    let e = bad.get_thread(&visible).await.expect_err("401");
    assert_eq!(api_code(&e), (401, ErrorCode::Unauthorized));
    assert_eq!(statuses(&s.sim), vec![401]);
    assert_eq!(bad.stats().requests_sent, 1);
    assert_eq!(bad.stats().retries, 0);

    let c = client(&s);
    // 403: property without the messages app.
    let e = c.get_thread(&hidden).await.expect_err("403");
    assert_eq!(api_code(&e), (403, ErrorCode::Forbidden));
    let e = c.list_thread_messages(&hidden).await.expect_err("403");
    assert_eq!(api_code(&e), (403, ErrorCode::Forbidden));
    let e = c
        .list_booking_messages(&hidden_booking)
        .await
        .expect_err("403");
    assert_eq!(api_code(&e), (403, ErrorCode::Forbidden));
    let e = c
        .list_threads(&ThreadQuery::for_property("noapp"))
        .await
        .expect_err("403");
    assert_eq!(api_code(&e), (403, ErrorCode::Forbidden));
    // Unfiltered lists leave such threads out.
    let all = c.list_threads(&ThreadQuery::default()).await.expect("all");
    assert_eq!(all.items.len(), 1);

    // 404: unknown ids.
    let e = c.get_thread("nope").await.expect_err("404");
    assert_eq!(api_code(&e), (404, ErrorCode::NotFound));
    if let ChannexError::Api { title, .. } = &e {
        assert_eq!(title, "Resouce Not Found");
    }
    let e = c.send_thread_message("nope", "hi").await.expect_err("404");
    assert_eq!(api_code(&e), (404, ErrorCode::NotFound));
    let e = c.close_thread("nope").await.expect_err("404");
    assert_eq!(api_code(&e), (404, ErrorCode::NotFound));
    let e = c.list_booking_messages("nope").await.expect_err("404");
    assert_eq!(api_code(&e), (404, ErrorCode::NotFound));
    let e = c.send_booking_message("nope", "hi").await.expect_err("404");
    assert_eq!(api_code(&e), (404, ErrorCode::NotFound));

    // 422 not_supported: booking on a provider without messaging.
    let exotic = s.sim.open_thread("p1", "Expedia", "Exotic", true);
    let exotic_booking = s.sim.thread(&exotic).and_then(|t| t.booking_id).expect("b");
    let e = c
        .send_booking_message(&exotic_booking, "hi")
        .await
        .expect_err("422");
    assert_eq!(api_code(&e), (422, ErrorCode::NotSupported));
    // ...while the thread itself flows through with provider Other.
    let t = c.get_thread(&exotic).await.expect("thread");
    assert_eq!(t.provider.as_event_str(), "other");

    assert_eq!(c.stats().retries, 0, "4xx are never retried");
}

#[tokio::test]
async fn rate_limit_429_waits_for_retry_after_then_succeeds() {
    let s = sim().await;
    let c = client(&s);
    let t = s.sim.open_thread("p1", "BookingCom", "G", true);
    s.sim.clear_requests();
    s.sim.set_faults(FaultConfig {
        rate_429: 1.0,
        retry_after_secs: 1,
        ..Default::default()
    });
    let sim = s.sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.set_faults(FaultConfig::default());
    });
    let started = Instant::now();
    let thread = c.get_thread(&t).await.expect("eventually succeeds");
    assert_eq!(thread.id, t);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 must be waited out, took {:?}",
        started.elapsed()
    );
    assert_eq!(statuses(&s.sim), vec![429, 200]);
    let st = c.stats();
    assert_eq!(st.rate_limited, 1);
    assert_eq!(st.retries, 1);
    assert_eq!(st.requests_sent, 2);
}

#[tokio::test]
async fn rate_limit_fraction_eventually_succeeds() {
    let s = sim().await;
    let mut o = opts(&s.base_url);
    o.max_retries = 30;
    let c = ChannexClient::new(o).expect("client");
    let t = s.sim.open_thread("p1", "BookingCom", "G", true);
    s.sim.set_faults(FaultConfig {
        rate_429: 0.5,
        retry_after_secs: 0,
        ..Default::default()
    });
    for _ in 0..20 {
        c.get_thread(&t).await.expect("eventually succeeds");
    }
    let st = statuses(&s.sim);
    assert_eq!(st.iter().filter(|s| **s == 200).count(), 20);
    assert!(st.contains(&429), "some 429s were injected: {st:?}");
    assert_eq!(
        c.stats().rate_limited as usize,
        st.iter().filter(|s| **s == 429).count()
    );
}

#[tokio::test]
async fn rate_limit_exhausted_or_too_long_is_reported() {
    let s = sim().await;
    let t = s.sim.open_thread("p1", "BookingCom", "G", true);
    s.sim.set_faults(FaultConfig {
        rate_429: 1.0,
        retry_after_secs: 0,
        ..Default::default()
    });
    let mut o = opts(&s.base_url);
    o.max_retries = 2;
    let c = ChannexClient::new(o).expect("client");
    let e = c.get_thread(&t).await.expect_err("429");
    assert!(
        matches!(e, ChannexError::RateLimited { retry_after: Some(d) } if d.is_zero()),
        "{e:?}"
    );
    assert_eq!(e.code(), Some(&ErrorCode::TooManyRequests));
    assert_eq!(e.status(), Some(429));
    assert!(e.is_transient());
    assert_eq!(c.stats().requests_sent, 3);

    // A Retry-After beyond backoff_max is handed back instead of blocking.
    s.sim.set_faults(FaultConfig {
        rate_429: 1.0,
        retry_after_secs: 120,
        ..Default::default()
    });
    let started = Instant::now();
    let e = c.get_thread(&t).await.expect_err("429");
    assert!(
        matches!(e, ChannexError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(120)),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn server_errors_are_retried_for_idempotent_calls() {
    let s = sim().await;
    let mut o = opts(&s.base_url);
    o.max_retries = 20;
    o.backoff_base = Duration::from_millis(50);
    let c = ChannexClient::new(o).expect("client");
    let t = s.sim.open_thread("p1", "BookingCom", "G", true);
    s.sim.clear_requests();
    s.sim.set_faults(FaultConfig {
        rate_500: 1.0,
        ..Default::default()
    });
    let sim = s.sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sim.set_faults(FaultConfig::default());
    });
    let closed = c.close_thread(&t).await.expect("close retried until OK");
    assert!(closed.is_closed);
    let st = statuses(&s.sim);
    assert!(st.contains(&500), "{st:?}");
    assert_eq!(st.last(), Some(&200));
    assert!(c.stats().server_errors >= 1);

    // Exhausted: Server error, transient, not ambiguous (idempotent call).
    s.sim.set_faults(FaultConfig {
        rate_500: 1.0,
        ..Default::default()
    });
    let mut o = opts(&s.base_url);
    o.max_retries = 1;
    let c = ChannexClient::new(o).expect("client");
    let e = c.get_thread(&t).await.expect_err("500");
    assert!(
        matches!(
            e,
            ChannexError::Server {
                status: 500,
                ambiguous: false
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient() && !e.is_ambiguous());
    assert_eq!(c.stats().requests_sent, 2);
}

#[tokio::test]
async fn sends_are_not_retried_on_5xx_but_are_on_429() {
    let s = sim().await;
    let c = client(&s);
    let t = s.sim.open_thread("p1", "BookingCom", "G", true);
    s.sim.clear_requests();
    s.sim.set_faults(FaultConfig {
        rate_500: 1.0,
        ..Default::default()
    });
    let e = c.send_thread_message(&t, "hello").await.expect_err("500");
    assert!(
        matches!(
            e,
            ChannexError::Server {
                status: 500,
                ambiguous: true
            }
        ),
        "{e:?}"
    );
    assert!(e.is_ambiguous());
    assert_eq!(
        statuses(&s.sim),
        vec![500],
        "a send is never repeated on 5xx"
    );

    s.sim.clear_requests();
    s.sim.set_faults(FaultConfig {
        rate_429: 1.0,
        retry_after_secs: 1,
        ..Default::default()
    });
    let sim = s.sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sim.set_faults(FaultConfig::default());
    });
    let m = c
        .send_thread_message(&t, "hello")
        .await
        .expect("429 retried");
    assert_eq!(m.text, "hello");
    let st = statuses(&s.sim);
    assert!(st.contains(&429));
    assert_eq!(st.last(), Some(&200));
    assert_eq!(s.sim.sent_by_api().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn timeouts_are_retried_for_reads_and_ambiguous_for_sends() {
    let s = sim().await;
    let t = s.sim.open_thread("p1", "BookingCom", "G", true);
    s.sim.set_faults(FaultConfig {
        latency: Duration::from_millis(400),
        ..Default::default()
    });
    let mut o = opts(&s.base_url);
    o.timeout = Duration::from_millis(100);
    o.max_retries = 1;
    let c = ChannexClient::new(o).expect("client");
    let e = c.get_thread(&t).await.expect_err("timeout");
    assert!(
        matches!(e, ChannexError::Timeout { ambiguous: false }),
        "{e:?}"
    );
    assert_eq!(c.stats().requests_sent, 2);
    assert!(e.is_transient());

    let e = c.send_thread_message(&t, "hi").await.expect_err("timeout");
    assert!(
        matches!(e, ChannexError::Timeout { ambiguous: true }),
        "{e:?}"
    );
    assert!(e.is_ambiguous());
    assert_eq!(c.stats().requests_sent, 3, "the send was tried once");
}

#[tokio::test]
async fn connection_errors_are_retried_even_for_sends() {
    // A port nobody listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut o = opts(&format!("http://127.0.0.1:{port}/api/v1/"));
    o.max_retries = 2;
    o.backoff_base = Duration::from_millis(5);
    let c = ChannexClient::new(o).expect("client");
    let e = c.send_thread_message("t", "hi").await.expect_err("refused");
    assert!(
        matches!(
            e,
            ChannexError::Transport {
                ambiguous: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient() && !e.is_ambiguous());
    assert_eq!(c.stats().requests_sent, 3);
    assert_eq!(c.stats().retries, 2);
    assert!(!format!("{e} {e:?}").contains(KEY));
}

#[tokio::test]
async fn api_key_never_printed() {
    let s = sim().await;
    let o = opts(&s.base_url);
    let c = ChannexClient::new(o.clone()).expect("client");
    let mut texts = vec![
        format!("{o:?}"),
        format!("{c:?}"),
        format!("{:?}", o.api_key),
        format!("{}", o.api_key),
    ];
    let e = c.get_thread("missing").await.expect_err("404");
    texts.push(format!("{e} {e:?}"));
    let mut wrong = o.clone();
    wrong.api_key = ApiKey::new(format!("{KEY}-wrong"));
    let wrong_client = ChannexClient::new(wrong).expect("client");
    let e = wrong_client.get_thread("missing").await.expect_err("401");
    texts.push(format!("{e} {e:?} {wrong_client:?}"));
    let mut bad = o.clone();
    bad.api_key = ApiKey::new(format!("{KEY}\n"));
    let e = ChannexClient::new(bad).expect_err("invalid header");
    texts.push(format!("{e} {e:?}"));
    let mut bad_url = o.clone();
    bad_url.base_url = "not a url".into();
    let e = ChannexClient::new(bad_url).expect_err("invalid url");
    assert!(matches!(e, ChannexError::InvalidConfig(_)));
    texts.push(format!("{e} {e:?}"));
    for t in &texts {
        assert!(!t.contains(KEY), "key leaked in {t:?}");
    }
    assert_eq!(o.api_key.expose(), KEY);
}

#[tokio::test]
async fn client_side_rate_limiter_spaces_requests() {
    let s = sim().await;
    let t = s.sim.open_thread("p1", "BookingCom", "G", true);
    let mut o = opts(&s.base_url);
    o.requests_per_minute = 600; // 10/s, burst 20
    let c = ChannexClient::new(o).expect("client");
    let started = Instant::now();
    for _ in 0..26 {
        c.get_thread(&t).await.expect("get");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "26 requests at 10/s with a burst of 20 take >= ~0.5s, took {took:?}"
    );
}

#[tokio::test]
async fn malformed_list_item_is_skipped_and_reported() {
    use axum::routing::get;
    use axum::Json;
    use serde_json::json;

    let page = json!({
        "data": [
            {"id": "t1", "type": "message_thread", "attributes": {
                "title": "Good one", "is_closed": false, "provider": "BookingCom", "message_count": 1,
                "last_message": {"attachments": [], "inserted_at": "2021-07-27T09:43:05.864520", "message": "hi", "sender": "guest"},
                "last_message_received_at": "2021-07-27T09:43:05.864520",
                "inserted_at": "2021-07-27T09:32:14.281622", "updated_at": "2021-07-27T09:43:05.868034"},
             "relationships": {"property": {"data": {"id": "p1", "type": "property"}}}},
            {"id": "broken", "type": "message_thread", "attributes": {
                "title": "Broken", "inserted_at": "the day before yesterday"}},
            {"id": "t3", "type": "message_thread", "attributes": {
                "title": "Future provider", "provider": "Expedia", "is_closed": null,
                "inserted_at": "2023-12-01T07:01:38.735Z", "future_field": {"x": 1}},
             "relationships": {"booking": {"data": null}}}
        ],
        "meta": {"limit": 100, "order_by": "inserted_at", "order_direction": "desc", "page": 1, "total": 3}
    });
    let app = axum::Router::new().route(
        "/api/v1/message_threads",
        get(move || {
            let page = page.clone();
            async move { Json(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let c = ChannexClient::new(opts(&format!("http://{addr}/api/v1"))).expect("client");
    let l = c
        .list_threads(&ThreadQuery::default())
        .await
        .expect("listing survives a broken item");
    let ids: Vec<_> = l.items.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t1", "t3"]);
    assert_eq!(l.skipped.len(), 1);
    assert_eq!(l.skipped[0].id.as_deref(), Some("broken"));
    assert!(!l.skipped[0].error.is_empty());
    assert_eq!(l.items[1].provider, Provider::Other("Expedia".into()));
    assert_eq!(l.items[1].booking_id, None);
    assert_eq!(l.pages, 1);
    server.abort();
}

#[tokio::test]
async fn ten_thousand_threads_full_scan() {
    let s = sim().await;
    let c = client(&s);
    for i in 0..10_000 {
        let provider = if i % 2 == 0 { "BookingCom" } else { "Airbnb" };
        let t = s
            .sim
            .open_thread(&format!("p{}", i % 7), provider, &format!("G{i}"), true);
        if i % 10 == 0 {
            s.sim.guest_message(&t, "hello");
        }
    }
    let started = Instant::now();
    let q = ThreadQuery::default().ordered_by("last_message_received_at", OrderDirection::Desc);
    let l = c.list_threads(&q).await.expect("scan");
    let took = started.elapsed();
    assert_eq!(l.items.len(), 10_000);
    assert_eq!(l.pages, 100);
    assert!(l.order_honoured);
    // Threads with messages come first, newest activity first.
    assert!(l.items[..1_000]
        .iter()
        .all(|t| t.last_message_received_at.is_some()));
    assert!(l.items[1_000..]
        .iter()
        .all(|t| t.last_message_received_at.is_none()));
    assert!(took < Duration::from_secs(20), "full scan took {took:?}");
}

fn booking_request(arrival: &str) -> concierge::sim::NewBooking {
    serde_json::from_value(serde_json::json!({
        "property_id": "p1", "ota_name": "Booking.com", "arrival_date": arrival,
        "departure_date": "2030-01-20", "guest_name": "Eva Rossi", "language": "it",
    }))
    .expect("booking request")
}

#[tokio::test]
async fn bookings_are_read_by_id_and_listed_newest_update_first_in_pages() {
    let server = sim().await;
    let c = client(&server);
    let mut ids = Vec::new();
    for day in 10..15 {
        let (id, _) = server
            .sim
            .create_booking(&booking_request(&format!("2030-01-{day}")))
            .expect("created");
        ids.push(id);
    }
    // The oldest booking changes last: it lists first.
    let change = concierge::sim::BookingChangeRequest {
        arrival_date: Some("2030-01-09".into()),
        ..Default::default()
    };
    server
        .sim
        .modify_booking(&ids[0], &change)
        .expect("modified");
    let q = concierge::channex::BookingQuery {
        limit: 2,
        ..Default::default()
    };
    let first = c.list_bookings_page(&q, 1).await.expect("page 1");
    assert_eq!(first.meta.order_by, "updated_at");
    assert_eq!(first.meta.total, 5);
    assert_eq!(first.items[0].id, ids[0]);
    assert_eq!(first.items[0].status, "modified");
    let third = c.list_bookings_page(&q, 3).await.expect("page 3");
    assert_eq!(third.items.len(), 1);
    // Only what changed since a time: the filter Channex documents.
    let since = |at| concierge::channex::BookingQuery {
        updated_since: Some(at),
        ..Default::default()
    };
    let last = first.items[0].updated_at.expect("updated_at");
    let later = c
        .list_bookings_page(&since(last + chrono::Duration::hours(1)), 1)
        .await
        .expect("nothing changed since");
    assert!(later.items.is_empty());
    let earlier = c
        .list_bookings_page(&since(last - chrono::Duration::hours(1)), 1)
        .await
        .expect("all changed since");
    assert_eq!(earlier.items.len(), 5);

    let b = c.get_booking(&ids[0]).await.expect("booking");
    assert_eq!((b.arrival_date.as_str(), b.nights()), ("2030-01-09", 11));
    assert_eq!(b.guest_name, "Eva Rossi");
    let missing = c.get_booking("no-such-booking").await.unwrap_err();
    assert_eq!(api_code(&missing).0, 404);
    assert!(server.sim.booking_acks().is_empty());
}
