//! Contract test: for every example payload in the seed document, the simulator's answer
//! to the equivalent request has the same shape — same keys (none missing, none extra
//! unless listed as documented), same nesting, same JSON types, same `type` values, and
//! strings of the same kind (naive-microsecond timestamp, RFC 3339 `Z` timestamp, date,
//! UUID). Values may differ. Arrays are compared by element shape: every simulator element
//! must match some seed element and every seed element must be matched by some simulator
//! element (so a list with a guest message and a property message covers both variants).

use concierge::sim::{Sim, SimOptions, SimServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEY: &str = "contract-key";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/seed/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

#[derive(Debug, PartialEq, Eq)]
enum StrKind {
    NaiveMicros,
    Rfc3339MillisZ,
    Date,
    Uuid,
    Other,
}

fn str_kind(s: &str) -> StrKind {
    let digits = |r: &str| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit());
    let is_date = |d: &str| {
        d.len() == 10
            && digits(&d[0..4])
            && &d[4..5] == "-"
            && digits(&d[5..7])
            && &d[7..8] == "-"
            && digits(&d[8..10])
    };
    let is_time = |t: &str| {
        t.len() == 8
            && digits(&t[0..2])
            && &t[2..3] == ":"
            && digits(&t[3..5])
            && &t[5..6] == ":"
            && digits(&t[6..8])
    };
    if s.len() == 26 && s.is_char_boundary(10) && s.is_char_boundary(19) {
        let (d, rest) = s.split_at(10);
        if is_date(d)
            && &rest[..1] == "T"
            && is_time(&rest[1..9])
            && &rest[9..10] == "."
            && digits(&rest[10..])
        {
            return StrKind::NaiveMicros;
        }
    }
    if s.len() == 24 && s.is_char_boundary(10) {
        let (d, rest) = s.split_at(10);
        if is_date(d)
            && &rest[..1] == "T"
            && is_time(&rest[1..9])
            && &rest[9..10] == "."
            && digits(&rest[10..13])
            && &rest[13..] == "Z"
        {
            return StrKind::Rfc3339MillisZ;
        }
    }
    if s.is_ascii() && is_date(s) {
        return StrKind::Date;
    }
    if uuid::Uuid::parse_str(s).is_ok() && s.len() == 36 {
        return StrKind::Uuid;
    }
    StrKind::Other
}

/// Collects every shape difference of `sim` against `seed` into `out`.
fn shape_diff(
    seed: &Value,
    sim: &Value,
    path: &str,
    allowed_extra: &[&str],
    out: &mut Vec<String>,
) {
    match (seed, sim) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    None => out.push(format!("{p}: missing in simulator output")),
                    Some(vb) => {
                        if k == "type" && va != vb {
                            out.push(format!("{p}: type {vb} where the seed has {va}"));
                        }
                        shape_diff(va, vb, &p, allowed_extra, out);
                    }
                }
            }
            for k in b.keys() {
                let p = format!("{path}.{k}");
                if !a.contains_key(k) && !allowed_extra.contains(&p.as_str()) {
                    out.push(format!("{p}: extra key in simulator output"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.is_empty() {
                return; // nothing to compare elements against
            }
            if b.is_empty() {
                out.push(format!("{path}: empty where the seed has elements"));
                return;
            }
            let p = format!("{path}[]");
            let diffs = |x: &Value, y: &Value| {
                let mut d = Vec::new();
                shape_diff(x, y, &p, allowed_extra, &mut d);
                d
            };
            for (i, eb) in b.iter().enumerate() {
                let per_seed: Vec<Vec<String>> = a.iter().map(|ea| diffs(ea, eb)).collect();
                if per_seed.iter().all(|d| !d.is_empty()) {
                    let best = per_seed
                        .into_iter()
                        .min_by_key(Vec::len)
                        .unwrap_or_default();
                    out.push(format!("{path}[{i}] matches no seed element:"));
                    out.extend(best.into_iter().map(|d| format!("    {d}")));
                }
            }
            for (i, ea) in a.iter().enumerate() {
                if b.iter().all(|eb| !diffs(ea, eb).is_empty()) {
                    out.push(format!(
                        "{path}: seed element {i} is matched by no simulator element"
                    ));
                }
            }
        }
        (Value::String(a), Value::String(b)) => {
            let (ka, kb) = (str_kind(a), str_kind(b));
            if ka != StrKind::Other && ka != kb {
                out.push(format!(
                    "{path}: {b:?} is {kb:?}, the seed's {a:?} is {ka:?}"
                ));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            if a.is_f64() != b.is_f64() {
                out.push(format!("{path}: number {b} vs seed {a} (integer/float)"));
            }
        }
        (Value::Bool(_), Value::Bool(_)) | (Value::Null, Value::Null) => {}
        (a, b) => out.push(format!("{path}: simulator has {b}, seed has {a}")),
    }
}

fn assert_same_shape(name: &str, seed: &Value, sim: &Value, allowed_extra: &[&str]) {
    let mut out = Vec::new();
    shape_diff(seed, sim, "$", allowed_extra, &mut out);
    assert!(
        out.is_empty(),
        "{name}: simulator output differs in shape from the seed:\n{}\n--- simulator:\n{}",
        out.join("\n"),
        serde_json::to_string_pretty(sim).unwrap_or_default()
    );
}

struct World {
    server: SimServer,
    http: reqwest::Client,
    /// BookingCom thread with a booking: a guest message, then a property (API) message.
    booking_thread: String,
    booking_id: String,
    /// Booking thread holding only one guest message.
    guest_only_booking: String,
    no_app_thread: String,
    airbnb_thread: String,
    inquiry_thread: String,
    inquiry_message: String,
}

async fn world() -> World {
    let server = Sim::start(SimOptions::with_key(KEY)).await.expect("sim");
    let sim = &server.sim;
    let property = uuid::Uuid::new_v4().to_string();
    sim.add_property(&property, "Test Property", true);
    let booking_thread = sim.open_thread(&property, "BookingCom", "Maldonado Roxy", true);
    sim.guest_message(&booking_thread, "Special request text 1");
    let booking_id = sim
        .thread(&booking_thread)
        .and_then(|t| t.booking_id)
        .expect("booking id");
    let single = sim.open_thread(&property, "BookingCom", "Single", true);
    sim.guest_message(&single, "Message");
    let guest_only_booking = sim
        .thread(&single)
        .and_then(|t| t.booking_id)
        .expect("booking id");
    let no_app = uuid::Uuid::new_v4().to_string();
    sim.add_property(&no_app, "No app", false);
    let no_app_thread = sim.open_thread(&no_app, "BookingCom", "Hidden", true);
    let airbnb_thread = sim.open_thread(&property, "Airbnb", "Airbnb guest", true);
    sim.guest_message(&airbnb_thread, "hello");
    let deadline = chrono::Utc::now() + chrono::Duration::hours(20);
    let (inquiry_thread, inquiry_message) = sim.add_inquiry(
        &property,
        "Andrew",
        deadline,
        "2030-12-02",
        "2030-12-03",
        3,
        "50.00",
        "GBP",
    );
    let w = World {
        server,
        http: reqwest::Client::new(),
        booking_thread,
        booking_id,
        guest_only_booking,
        no_app_thread,
        airbnb_thread,
        inquiry_thread,
        inquiry_message,
    };
    // The property-side message of the seed's thread list is sent through the API.
    let (status, _) = w
        .call(
            Method::POST,
            &format!("message_threads/{}/messages", w.booking_thread),
            Some(fixture("send_thread_message_request")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    w
}

impl World {
    async fn call_with_key(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.server.base_url);
        let mut req = self.http.request(method, url).header("user-api-key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let v = resp.json::<Value>().await.expect("JSON body");
        (status, v)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with_key(KEY, method, path, body).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        v
    }
}

#[test]
fn comparator_catches_differences() {
    let seed = json!({"data": [{"id": "4d8240fd-d709-454b-a866-08bca2a5a909", "type": "message",
        "attributes": {"n": 1, "at": "2021-07-28T04:25:15.000000"}}]});
    let same = json!({"data": [{"id": "8f8240fd-d709-454b-a866-08bca2a5a909", "type": "message",
        "attributes": {"n": 7, "at": "2024-01-01T00:00:00.123456"}}]});
    let mut out = Vec::new();
    shape_diff(&seed, &same, "$", &[], &mut out);
    assert!(out.is_empty(), "{out:?}");
    for bad in [
        json!({"data": [{"id": "x", "type": "message", "attributes": {"n": 1, "at": "2021-07-28T04:25:15.000000"}}]}),
        json!({"data": [{"id": "8f8240fd-d709-454b-a866-08bca2a5a909", "type": "thread", "attributes": {"n": 1, "at": "2021-07-28T04:25:15.000000"}}]}),
        json!({"data": [{"id": "8f8240fd-d709-454b-a866-08bca2a5a909", "type": "message", "attributes": {"n": "1", "at": "2021-07-28T04:25:15.000000"}}]}),
        json!({"data": [{"id": "8f8240fd-d709-454b-a866-08bca2a5a909", "type": "message", "attributes": {"n": 1, "at": "2021-07-28T04:25:15Z"}}]}),
        json!({"data": [{"id": "8f8240fd-d709-454b-a866-08bca2a5a909", "type": "message", "attributes": {"n": 1}}]}),
        json!({"data": [{"id": "8f8240fd-d709-454b-a866-08bca2a5a909", "type": "message", "attributes": {"n": 1, "at": "2021-07-28T04:25:15.000000", "x": 1}}]}),
        json!({"data": []}),
        json!({"data": {}}),
    ] {
        let mut out = Vec::new();
        shape_diff(&seed, &bad, "$", &[], &mut out);
        assert!(!out.is_empty(), "not caught: {bad}");
    }
}

#[tokio::test]
async fn thread_list_get_and_close() {
    let w = world().await;
    let list = w
        .ok(
            Method::GET,
            &format!("message_threads?filter[property_id]={}", {
                w.server
                    .sim
                    .thread(&w.booking_thread)
                    .and_then(|t| t.property_id)
                    .expect("property")
            }),
            None,
        )
        .await;
    // Only the threads with a booking are comparable with the seed's list example (the
    // inquiry thread is compared with its own example below).
    let mut booking_only = list.clone();
    if let Some(items) = booking_only["data"].as_array_mut() {
        items.retain(|t| t["relationships"].get("booking").is_some());
        assert_eq!(items.len(), 3);
    }
    assert_same_shape("thread_list", &fixture("thread_list"), &booking_only, &[]);
    assert_eq!(list["meta"]["limit"], 10, "default page size");
    assert_eq!(list["meta"]["order_by"], "inserted_at");
    assert_eq!(list["meta"]["order_direction"], "desc");
    assert_eq!(list["meta"]["page"], 1);
    assert_eq!(list["meta"]["total"], 4);

    let one = w
        .ok(
            Method::GET,
            &format!("message_threads/{}", w.booking_thread),
            None,
        )
        .await;
    assert_same_shape("thread_get", &fixture("thread_get"), &one, &[]);
    assert_eq!(one["data"]["attributes"]["provider"], "BookingCom");
    assert_eq!(one["data"]["attributes"]["message_count"], 2);
    assert_eq!(
        one["data"]["attributes"]["last_message"]["sender"],
        "property"
    );

    let closed = w
        .ok(
            Method::POST,
            &format!("message_threads/{}/close", w.booking_thread),
            None,
        )
        .await;
    assert_same_shape(
        "close_thread_response",
        &fixture("close_thread_response"),
        &closed,
        &[],
    );
    assert_eq!(closed["data"]["attributes"]["is_closed"], true);

    // no_reply_needed answers the thread document (documented choice).
    let nrn = w
        .ok(
            Method::POST,
            &format!("message_threads/{}/no_reply_needed", w.booking_thread),
            None,
        )
        .await;
    assert_same_shape("no_reply_needed", &fixture("thread_get"), &nrn, &[]);
}

#[tokio::test]
async fn messages_lists_and_sends() {
    let w = world().await;
    let msgs = w
        .ok(
            Method::GET,
            &format!("message_threads/{}/messages", w.booking_thread),
            None,
        )
        .await;
    assert_same_shape("thread_messages", &fixture("thread_messages"), &msgs, &[]);
    assert_eq!(msgs["data"][0]["attributes"]["sender"], "property");
    assert_eq!(msgs["data"][1]["attributes"]["sender"], "guest");

    let booking_msgs = w
        .ok(
            Method::GET,
            &format!("bookings/{}/messages", w.guest_only_booking),
            None,
        )
        .await;
    assert_same_shape(
        "booking_messages",
        &fixture("booking_messages"),
        &booking_msgs,
        &[],
    );

    let sent = w
        .ok(
            Method::POST,
            &format!("bookings/{}/messages", w.booking_id),
            Some(fixture("send_booking_message_request")),
        )
        .await;
    assert_same_shape(
        "send_booking_message_response",
        &fixture("send_booking_message_response"),
        &sent,
        &[],
    );
    assert_eq!(sent["data"]["attributes"]["message"], "MESSAGE CONTENT");

    let sent = w
        .ok(
            Method::POST,
            &format!("message_threads/{}/messages", w.airbnb_thread),
            Some(fixture("send_thread_message_request")),
        )
        .await;
    assert_same_shape(
        "send_thread_message_response",
        &fixture("send_thread_message_response"),
        &sent,
        &[],
    );
}

#[tokio::test]
async fn attachments_upload_and_send() {
    let w = world().await;
    let mut upload = fixture("attachment_upload_request");
    // The seed's placeholder "base64 encoded string" is not base64; same shape, real data.
    upload["attachment"]["file"] = json!("aGVsbG8gd29ybGQ=");
    let up = w.ok(Method::POST, "attachments", Some(upload)).await;
    assert_same_shape(
        "attachment_upload_response",
        &fixture("attachment_upload_response"),
        &up,
        &[],
    );
    let id = up["data"]["id"].as_str().expect("id").to_string();

    let mut send = fixture("send_attachment_request");
    send["message"]["attachment_id"] = json!(id);
    let sent = w
        .ok(
            Method::POST,
            &format!("bookings/{}/messages", w.booking_id),
            Some(send),
        )
        .await;
    assert_same_shape(
        "send_attachment_response",
        &fixture("send_attachment_response"),
        &sent,
        &[],
    );
    assert_eq!(
        sent["data"]["attributes"]["attachments"],
        json!([format!("attachments/{id}")]),
        "attachment URLs are relative to the API base"
    );
}

#[tokio::test]
async fn inquiry_thread_and_message() {
    let w = world().await;
    let t = w
        .ok(
            Method::GET,
            &format!("message_threads/{}", w.inquiry_thread),
            None,
        )
        .await;
    assert_same_shape("inquiry_thread", &fixture("inquiry_thread"), &t, &[]);
    assert_eq!(t["data"]["attributes"]["provider"], "AirBNB");
    assert_eq!(
        t["data"]["relationships"]["property"]["data"]["title"],
        "Test Property"
    );

    let msgs = w
        .ok(
            Method::GET,
            &format!("message_threads/{}/messages", w.inquiry_thread),
            None,
        )
        .await;
    let m = msgs["data"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["id"] == w.inquiry_message.as_str()))
        .cloned()
        .expect("inquiry message");
    assert_same_shape("inquiry_message", &fixture("inquiry_message"), &m, &[]);
    assert_eq!(m["attributes"]["message"], "inquiry");
    assert_eq!(m["attributes"]["sender"], "system");
    assert_eq!(m["attributes"]["meta"]["status"], "active");
    assert_eq!(m["attributes"]["meta"]["booking_details"]["nights"], 1);
}

#[tokio::test]
async fn error_bodies_match_the_seed_exactly() {
    let w = world().await;
    let (s, v) = w
        .call_with_key(
            "wrong",
            Method::GET,
            &format!("message_threads/{}", w.booking_thread),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v, fixture("error_unauthorized"));
    let (s, v) = w
        .call_with_key("", Method::GET, "message_threads", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v, fixture("error_unauthorized"));

    let (s, v) = w
        .call(
            Method::GET,
            &format!("message_threads/{}/messages", w.no_app_thread),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(v, fixture("error_forbidden"));

    let (s, v) = w
        .call(Method::POST, "message_threads/unknown/close", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v, fixture("error_not_found"));
    let (s, v) = w.call(Method::GET, "no/such/endpoint", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v, fixture("error_not_found"));

    let (s, v) = w
        .call(
            Method::POST,
            &format!("message_threads/{}/no_reply_needed", w.airbnb_thread),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v, fixture("error_not_supported"));

    w.server.sim.set_faults(concierge::sim::FaultConfig {
        rate_429: 1.0,
        retry_after_secs: 7,
        ..Default::default()
    });
    let resp = w
        .http
        .get(format!("{}message_threads", w.server.base_url))
        .header("user-api-key", KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        v,
        json!({"errors": {"code": "http_too_many_requests", "title": "Too Many Requests"}})
    );
    assert_same_shape("429", &fixture("error_unauthorized"), &v, &[]);
}

#[tokio::test]
async fn control_api_drives_the_world() {
    let server = Sim::start(SimOptions::with_key(KEY)).await.expect("sim");
    let http = reqwest::Client::new();
    let ctl = |p: &str| format!("{}_sim/{p}", server.root_url);
    let post = |p: &str, body: Value| http.post(ctl(p)).json(&body).send();

    let r = post(
        "properties",
        json!({"id": "p1", "title": "Casa", "messages_app": true}),
    )
    .await
    .expect("property");
    assert!(r.status().is_success());
    let t: Value = post(
        "threads",
        json!({"property_id": "p1", "provider": "BookingCom", "title": "G", "with_booking": true}),
    )
    .await
    .expect("thread")
    .json()
    .await
    .expect("json");
    let tid = t["id"].as_str().expect("id").to_string();
    assert!(t["booking_id"].is_string());
    let g: Value = post(
        &format!("threads/{tid}/guest_messages"),
        json!({"text": "wifi?"}),
    )
    .await
    .expect("guest")
    .json()
    .await
    .expect("json");
    assert!(g["id"].is_string());
    let st: Value = post(
        &format!("threads/{tid}/staff_messages"),
        json!({"text": "on it"}),
    )
    .await
    .expect("staff")
    .json()
    .await
    .expect("json");
    assert!(st["id"].is_string());
    let r = post("threads/nope/guest_messages", json!({"text": "x"}))
        .await
        .expect("unknown");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post("threads", json!({"nonsense": true}))
        .await
        .expect("bad body");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let inq: Value = post(
        "inquiries",
        json!({"property_id": "p1", "guest_name": "Andrew", "non_response_at": "2030-12-01T07:01:38.735Z",
               "checkin": "2030-12-02", "checkout": "2030-12-04", "guests": 2, "payout": "80.00", "currency": "EUR"}),
    )
    .await
    .expect("inquiry")
    .json()
    .await
    .expect("json");
    let inq_thread = inq["thread_id"].as_str().expect("thread id");
    let msgs = server.sim.messages(inq_thread);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].is_inquiry());
    assert_eq!(msgs[0].booking_details().and_then(|d| d.nights), Some(2));

    let msgs = server.sim.messages(&tid);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].text, "wifi?");
    assert_eq!(msgs[1].user_id, Some(server.sim.staff_user_id()));
    assert!(msgs[0].inserted_at < msgs[1].inserted_at);

    // Faults via the control API.
    let r = http
        .put(ctl("faults"))
        .json(&json!({"rate_429": 1.0, "retry_after_secs": 3, "latency_ms": 5}))
        .send()
        .await
        .expect("faults");
    assert!(r.status().is_success());
    let f = server.sim.faults();
    assert_eq!(f.rate_429, 1.0);
    assert_eq!(f.retry_after_secs, 3);
    assert_eq!(f.latency, std::time::Duration::from_millis(5));
    let r = http
        .get(format!("{}message_threads", server.base_url))
        .header("user-api-key", KEY)
        .send()
        .await
        .expect("api");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    http.put(ctl("faults"))
        .json(&json!({}))
        .send()
        .await
        .expect("reset");
    let r = http
        .get(format!(
            "{}message_threads?pagination[limit]=5",
            server.base_url
        ))
        .header("user-api-key", KEY)
        .send()
        .await
        .expect("api");
    assert_eq!(r.status(), StatusCode::OK);

    // Request log: API requests only, with decoded query and status.
    let reqs: Value = http
        .get(ctl("requests"))
        .send()
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    let reqs = reqs.as_array().expect("array");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0]["status"], 429);
    assert_eq!(reqs[1]["status"], 200);
    assert_eq!(reqs[1]["path"], "/api/v1/message_threads");
    assert_eq!(reqs[1]["query"], "pagination[limit]=5");
    let r = http.delete(ctl("requests")).send().await.expect("clear");
    assert!(r.status().is_success());
    assert!(server.sim.requests().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn demo_seed_is_served() {
    use concierge::channex::{ApiKey, ChannexClient, ClientOptions, ThreadQuery};
    let server = Sim::start(SimOptions::with_key(KEY)).await.expect("sim");
    concierge::sim::seed_demo(&server.sim);
    let c =
        ChannexClient::new(ClientOptions::new(&server.base_url, ApiKey::new(KEY))).expect("client");
    let l = c.list_threads(&ThreadQuery::default()).await.expect("list");
    assert_eq!(l.items.len(), 3, "the no-app property's thread is hidden");
    let mut inquiries = 0;
    for t in &l.items {
        let msgs = c.list_thread_messages(&t.id).await.expect("messages");
        inquiries += msgs.items.iter().filter(|m| m.is_inquiry()).count();
    }
    assert_eq!(inquiries, 1);
}

/// Chaos runs switch a latency range on and off at run time: every API request waits
/// `latency_ms` plus a random `0..=latency_jitter_ms`, and `/_sim/posts_in_flight` counts the
/// sends held up meanwhile.
#[tokio::test]
async fn latency_range_is_switchable_and_sends_in_flight_are_counted() {
    let server = Sim::start(SimOptions::with_key(KEY)).await.expect("sim");
    let http = reqwest::Client::new();
    let ctl = |p: &str| format!("{}_sim/{p}", server.root_url);
    let r = http
        .put(ctl("faults"))
        .json(&json!({"latency_ms": 150, "latency_jitter_ms": 150}))
        .send()
        .await
        .expect("faults");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["latency_ms"], 150);
    assert_eq!(body["latency_jitter_ms"], 150);
    assert_eq!(
        server.sim.latency_jitter(),
        std::time::Duration::from_millis(150)
    );
    let api = format!("{}message_threads", server.base_url);
    let thread = server.sim.open_thread("p1", "BookingCom", "Guest", true);
    let send = format!("{api}/{thread}/messages");
    let pending = tokio::spawn({
        let http = http.clone();
        async move {
            let started = std::time::Instant::now();
            let r = http
                .post(send)
                .header("user-api-key", KEY)
                .json(&json!({"message": {"message": "hello"}}))
                .send()
                .await;
            (r.expect("api").status(), started.elapsed())
        }
    });
    let mut seen = 0;
    for _ in 0..50 {
        let v: Value = http
            .get(ctl("posts_in_flight"))
            .send()
            .await
            .expect("posts_in_flight")
            .json()
            .await
            .expect("json");
        seen = seen.max(v["count"].as_u64().unwrap_or(0));
        if seen > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(seen, 1, "the delayed send is counted as in flight");
    let (status, took) = pending.await.expect("request task");
    assert_eq!(status, StatusCode::OK);
    assert!(took >= std::time::Duration::from_millis(150), "{took:?}");
    assert_eq!(server.sim.posts_in_flight(), 0);
    // Switched off again: a PUT replaces every fault, the jitter included.
    http.put(ctl("faults"))
        .json(&json!({}))
        .send()
        .await
        .expect("reset");
    assert_eq!(server.sim.latency_jitter(), std::time::Duration::ZERO);
    let started = std::time::Instant::now();
    let r = http
        .get(&api)
        .header("user-api-key", KEY)
        .send()
        .await
        .expect("api");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() < std::time::Duration::from_millis(150));
}
