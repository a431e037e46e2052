//! Parses the seed document's own example payloads (copied verbatim into
//! `tests/fixtures/seed/`, minus the `\` line continuations of the doc rendering) into the
//! client's domain types, through the same functions the client uses.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use concierge::channex::parse::{
    parse_attachment_document, parse_error, parse_message_document, parse_message_page,
    parse_message_resource, parse_thread_document, parse_thread_page,
};
use concierge::channex::wire::{
    AttachmentUploadRequest, LastMessageAttributes, MessageAttributes, SendMessageRequest,
    ThreadAttributes,
};
use concierge::channex::{ChannexError, ErrorCode, Provider, Sender};
use reqwest::Url;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/seed/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn base() -> Url {
    Url::parse("https://staging.channex.io/api/v1/").expect("base url")
}

fn naive(s: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .expect("test timestamp")
        .and_utc()
}

fn assert_seed_thread(t: &concierge::channex::Thread) {
    assert_eq!(t.id, "20d1b08c-190e-4068-a77d-4a909a21835d");
    assert_eq!(t.title, "Maldonado Roxy");
    assert_eq!(t.provider, Provider::BookingCom);
    assert_eq!(t.message_count, 2);
    let last = t.last_message.as_ref().expect("last_message");
    assert_eq!(last.text, "Thanks for your message.");
    assert_eq!(last.sender, Sender::Property);
    assert_eq!(last.inserted_at, Some(naive("2021-07-27T09:43:05.864520")));
    assert!(last.attachments.is_empty());
    assert_eq!(
        t.last_message_received_at,
        Some(naive("2021-07-27T09:43:05.864520"))
    );
    assert_eq!(t.inserted_at, Some(naive("2021-07-27T09:32:14.281622")));
    assert_eq!(t.updated_at, Some(naive("2021-07-27T09:43:05.868034")));
    assert_eq!(
        t.booking_id.as_deref(),
        Some("4d8240fd-d709-454b-a866-08bca2a5a909")
    );
    assert_eq!(
        t.channel_id.as_deref(),
        Some("351f145d-cb8c-4df7-9f12-2f6854991b91")
    );
    assert_eq!(
        t.property_id.as_deref(),
        Some("71d34923-a8be-4682-9625-e4a2f080df92")
    );
}

#[test]
fn thread_list() {
    let page = parse_thread_page(&fixture("thread_list"), &base(), 1, 100).expect("parse");
    assert!(page.skipped.is_empty());
    assert_eq!(page.items.len(), 1);
    assert_seed_thread(&page.items[0]);
    assert!(!page.items[0].is_closed);
    assert_eq!(page.meta.limit, 10);
    assert_eq!(page.meta.order_by, "inserted_at");
    assert_eq!(page.meta.order_direction, "desc");
    assert_eq!(page.meta.page, 1);
    assert_eq!(page.meta.total, 1);
}

#[test]
fn get_thread() {
    let t = parse_thread_document(&fixture("thread_get"), &base()).expect("parse");
    assert_seed_thread(&t);
    assert!(!t.is_closed);
}

#[test]
fn close_thread_response() {
    let t = parse_thread_document(&fixture("close_thread_response"), &base()).expect("parse");
    assert_seed_thread(&t);
    assert!(t.is_closed);
}

#[test]
fn thread_messages() {
    let page = parse_message_page(&fixture("thread_messages"), &base(), 1, 100).expect("parse");
    assert!(page.skipped.is_empty());
    assert_eq!(page.items.len(), 2);
    let (newest, older) = (&page.items[0], &page.items[1]);
    assert_eq!(newest.id, "34849183-7c36-4ac4-9103-cfaeecbc2cc8");
    assert_eq!(newest.text, "MESSAGE CONTENT");
    assert_eq!(newest.sender, Sender::Property);
    assert_eq!(
        newest.user_id.as_deref(),
        Some("c9080091-6b9f-4868-a2ca-691036d29ed0")
    );
    assert_eq!(
        newest.thread_id.as_deref(),
        Some("20d1b08c-190e-4068-a77d-4a909a21835d")
    );
    assert_eq!(newest.inserted_at, naive("2021-07-30T09:53:46.563215"));
    assert_eq!(older.text, "Special request text 1");
    assert_eq!(older.sender, Sender::Guest);
    assert_eq!(older.user_id, None);
    assert_eq!(older.inserted_at, naive("2021-07-28T04:25:15.000000"));
    assert_eq!(older.updated_at, Some(naive("2021-07-28T04:25:22.613482")));
    assert!(newest.inserted_at > older.inserted_at);
    assert!(!newest.is_inquiry() && !older.is_inquiry());
    assert_eq!(page.meta.total, 2);
}

#[test]
fn booking_messages() {
    let page = parse_message_page(&fixture("booking_messages"), &base(), 1, 100).expect("parse");
    assert_eq!(page.items.len(), 1);
    let m = &page.items[0];
    assert_eq!(m.id, "5848b518-07a4-4c8c-a998-2784d638ba30");
    assert_eq!(m.text, "Message");
    assert_eq!(m.sender, Sender::Guest);
    assert_eq!(
        m.thread_id.as_deref(),
        Some("4e160f0b-016a-424a-a30d-a9f0a8b1cbaa")
    );
    assert_eq!(page.meta.total, 1);
}

#[test]
fn send_message_responses() {
    for name in [
        "send_booking_message_response",
        "send_thread_message_response",
        "send_attachment_response",
    ] {
        let m = parse_message_document(&fixture(name), &base()).expect(name);
        assert_eq!(m.id, "34849183-7c36-4ac4-9103-cfaeecbc2cc8", "{name}");
        assert_eq!(m.text, "MESSAGE CONTENT");
        assert_eq!(m.sender, Sender::Property);
        assert_eq!(
            m.user_id.as_deref(),
            Some("c9080091-6b9f-4868-a2ca-691036d29ed0")
        );
        assert_eq!(
            m.thread_id.as_deref(),
            Some("4e160f0b-016a-424a-a30d-a9f0a8b1cbaa")
        );
        assert_eq!(m.inserted_at, naive("2021-07-30T09:53:46.563215"));
        assert!(m.meta.is_none());
    }
}

#[test]
fn attachment_upload_response() {
    let id = parse_attachment_document(&fixture("attachment_upload_response")).expect("parse");
    assert_eq!(id, "c40a00f9-d3d3-4809-8d46-adc378c95f20");
}

#[test]
fn request_payloads_match_wire_models() {
    let r: SendMessageRequest =
        serde_json::from_slice(&fixture("send_thread_message_request")).expect("send");
    assert_eq!(r.message.message.as_deref(), Some("MESSAGE CONTENT"));
    let r: SendMessageRequest =
        serde_json::from_slice(&fixture("send_booking_message_request")).expect("send");
    assert_eq!(r.message.message.as_deref(), Some("MESSAGE CONTENT"));
    let r: SendMessageRequest =
        serde_json::from_slice(&fixture("send_attachment_request")).expect("attachment");
    assert_eq!(
        r.message.attachment_id.as_deref(),
        Some("c40a00f9-d3d3-4809-8d46-adc378c95f20")
    );
    assert_eq!(r.message.message, None);
    let r: AttachmentUploadRequest =
        serde_json::from_slice(&fixture("attachment_upload_request")).expect("upload");
    assert_eq!(r.attachment.file_name, "photo.jpeg");
    assert_eq!(r.attachment.file_type, "image/jpeg");
}

#[test]
fn data_structure_examples() {
    let m: MessageAttributes =
        serde_json::from_slice(&fixture("message_structure")).expect("message");
    assert_eq!(m.message, "Client Message");
    assert_eq!(m.sender, "guest");
    assert_eq!(m.inserted_at, naive("2021-07-28T04:25:15.000000"));
    let t: ThreadAttributes =
        serde_json::from_slice(&fixture("message_thread_structure")).expect("thread");
    assert_eq!(t.title, "Maldonado Roxy");
    assert_eq!(Provider::parse(&t.provider), Provider::BookingCom);
    let last: &LastMessageAttributes = t.last_message.as_ref().expect("last");
    assert_eq!(last.sender, "property");
}

#[test]
fn inquiry_thread() {
    let t = parse_thread_document(&fixture("inquiry_thread"), &base()).expect("parse");
    assert_eq!(t.id, "b4153232-2e77-4ccf-8383-ae1119b01bc7");
    assert_eq!(t.provider, Provider::Airbnb, "AirBNB normalises to Airbnb");
    assert_eq!(t.provider.as_event_str(), "airbnb");
    assert_eq!(t.title, "Andrew");
    assert_eq!(t.message_count, 6);
    assert_eq!(t.booking_id, None);
    assert_eq!(
        t.property_id.as_deref(),
        Some("71d34923-a8be-4682-9625-e4a2f080df92")
    );
    assert_eq!(
        t.channel_id.as_deref(),
        Some("351f145d-cb8c-4df7-9f12-2f6854991b91")
    );
    let last = t.last_message.expect("last");
    assert_eq!(last.text, "Hello");
    assert_eq!(last.inserted_at, Some(naive("2023-11-30T07:17:40.000000")));
}

#[test]
fn inquiry_message() {
    let m = parse_message_resource(&fixture("inquiry_message"), &base()).expect("parse");
    assert_eq!(m.id, "99b55a1c-305c-4b5d-b321-95d3684d1328");
    assert_eq!(m.sender, Sender::System);
    assert_eq!(m.text, "inquiry");
    assert!(m.is_inquiry());
    assert_eq!(
        m.thread_id.as_deref(),
        Some("b4153232-2e77-4ccf-8383-ae1119b01bc7")
    );
    let meta = m.meta.as_ref().expect("meta");
    assert_eq!(meta.status.as_deref(), Some("active"));
    assert_eq!(
        meta.live_feed_event_id.as_deref(),
        Some("9a52c05b-ea75-4fad-aaab-21741c3be253")
    );
    let d = m.booking_details().expect("booking details");
    assert_eq!(d.checkin_date.as_deref(), Some("2023-12-02"));
    assert_eq!(d.checkout_date.as_deref(), Some("2023-12-03"));
    assert_eq!(d.currency.as_deref(), Some("GBP"));
    assert_eq!(d.expected_payout_amount_accurate.as_deref(), Some("50.00"));
    assert_eq!(d.guest_name.as_deref(), Some("Andrew"));
    assert_eq!(d.listing_id.as_deref(), Some("16384756345"));
    assert_eq!(d.listing_name.as_deref(), Some("Channex Listing"));
    assert_eq!(d.nights, Some(1));
    let expected = Utc.from_utc_datetime(
        &NaiveDate::from_ymd_opt(2023, 12, 1)
            .and_then(|d| d.and_hms_milli_opt(7, 1, 38, 735))
            .expect("date"),
    );
    assert_eq!(d.non_response_at, Some(expected));
    assert_eq!(d.number_of_adults, Some(3));
    assert_eq!(d.number_of_children, Some(0));
    assert_eq!(d.number_of_guests, Some(3));
    assert_eq!(d.number_of_infants, Some(0));
    assert_eq!(d.number_of_pets, Some(0));
    assert_eq!(
        d.property_id.as_deref(),
        Some("71d34923-a8be-4682-9625-e4a2f080df92")
    );
    assert_eq!(
        d.room_type_id.as_deref(),
        Some("a9856c2b-f82f-42fc-8467-b10f4c6ffb74")
    );
    assert_eq!(m.inserted_at, naive("2023-11-30T07:01:49.492378"));
}

#[test]
fn error_bodies() {
    let cases = [
        (
            "error_unauthorized",
            401,
            ErrorCode::Unauthorized,
            "Unauthorized",
        ),
        ("error_forbidden", 403, ErrorCode::Forbidden, "Forbidden"),
        (
            "error_not_found",
            404,
            ErrorCode::NotFound,
            "Resouce Not Found",
        ),
        (
            "error_not_supported",
            422,
            ErrorCode::NotSupported,
            "Method not supported",
        ),
    ];
    for (name, status, code, title) in cases {
        let e = parse_error(status, &fixture(name));
        match &e {
            ChannexError::Api {
                status: s,
                code: c,
                title: t,
            } => {
                assert_eq!(*s, status, "{name}");
                assert_eq!(*c, code, "{name}");
                assert_eq!(t, title, "{name}");
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
        assert_eq!(e.status(), Some(status));
        assert_eq!(e.code(), Some(&code));
        assert!(!e.is_transient());
    }
    assert_eq!(ErrorCode::NotFound.as_str(), "not_found");
    assert_eq!(
        ErrorCode::TooManyRequests.as_str(),
        "http_too_many_requests"
    );
}

#[test]
fn provider_and_sender_spellings() {
    for s in ["BookingCom", "Booking.com", "booking_com", "BOOKINGCOM"] {
        assert_eq!(Provider::parse(s), Provider::BookingCom, "{s}");
    }
    for s in ["Airbnb", "AirBNB", "airbnb"] {
        assert_eq!(Provider::parse(s), Provider::Airbnb, "{s}");
    }
    let p = Provider::parse("Expedia");
    assert_eq!(p, Provider::Other("Expedia".into()));
    assert_eq!(p.as_event_str(), "other");
    assert_eq!(Sender::parse("system"), Sender::System);
    assert_eq!(Sender::parse("bot").as_str(), "bot");
}

#[test]
fn timestamp_formats() {
    use concierge::base::time::parse_utc_timestamp as parse_timestamp;
    assert_eq!(
        parse_timestamp("2021-07-28T04:25:15.000000"),
        Some(naive("2021-07-28T04:25:15"))
    );
    assert_eq!(
        parse_timestamp("2023-12-01T07:01:38.735Z"),
        parse_timestamp("2023-12-01T07:01:38.735")
    );
    assert_eq!(
        parse_timestamp("2023-12-01T08:01:38+01:00"),
        parse_timestamp("2023-12-01T07:01:38")
    );
    assert_eq!(parse_timestamp("yesterday"), None);
}

#[test]
fn relative_attachment_urls_become_absolute() {
    let body = br#"{"data":[{"id":"m1","type":"message","attributes":{
        "message":"","attachments":["attachments/abc","/attachments/def","https://cdn.example/x.jpg"],
        "sender":"guest","inserted_at":"2021-07-28T04:25:15.000000"}}],
        "meta":{"limit":10,"order_by":"inserted_at","order_direction":"desc","page":1,"total":1}}"#;
    let page = parse_message_page(body, &base(), 1, 10).expect("parse");
    assert_eq!(
        page.items[0].attachments,
        vec![
            "https://staging.channex.io/api/v1/attachments/abc",
            "https://staging.channex.io/api/v1/attachments/def",
            "https://cdn.example/x.jpg",
        ]
    );
}

#[test]
fn malformed_items_are_skipped_not_fatal() {
    let body = br#"{"data":[
        {"id":"ok1","type":"message","attributes":{"message":"a","sender":"guest","inserted_at":"2021-07-28T04:25:15.000000","brand_new_field":1}},
        {"id":"bad","type":"message","attributes":{"message":"b","sender":"guest","inserted_at":"not a time"}},
        {"type":"message"},
        {"id":"ok2","type":"message","attributes":{"message":null,"sender":"property","inserted_at":"2021-07-28T04:25:16Z","attachments":null}}
    ]}"#;
    let page = parse_message_page(body, &base(), 1, 10).expect("parse");
    let ids: Vec<_> = page.items.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["ok1", "ok2"]);
    assert_eq!(page.skipped.len(), 2);
    assert_eq!(page.skipped[0].id.as_deref(), Some("bad"));
    assert_eq!(page.skipped[1].id, None);
    assert_eq!(page.items[1].text, "");
    // No meta: filled from the request.
    assert_eq!(page.meta.page, 1);
    assert_eq!(page.meta.limit, 10);
    assert_eq!(page.meta.total, 4);
}

// -- defect 6: one bad byte must not blind a property --------------------------------------

/// A thread resource as Channex lists it; `title_json` is spliced in verbatim.
fn thread_item(id: &str, property: &str, title_json: &[u8]) -> Vec<u8> {
    let mut out =
        format!(r#"{{"id":"{id}","type":"message_thread","attributes":{{"title":"#).into_bytes();
    out.extend_from_slice(title_json);
    out.extend_from_slice(
        format!(
            r#","is_closed":false,"provider":"BookingCom","message_count":1,"last_message_received_at":"2021-07-27T09:43:05.864520"}},"relationships":{{"property":{{"data":{{"id":"{property}","type":"property"}}}}}}}}"#
        )
        .as_bytes(),
    );
    out
}

fn list_of(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"{\"data\":[".to_vec();
    out.extend_from_slice(&items.join(&b","[..]));
    out.extend_from_slice(br#"],"meta":{"limit":100,"order_by":"updated_at","order_direction":"desc","page":1,"total":3}}"#);
    out
}

#[test]
fn an_invalid_utf8_byte_in_one_title_skips_only_that_thread() {
    let body = list_of(&[
        thread_item("t-ok-1", "p1", br#""Ana""#),
        thread_item("t-bad", "p1", b"\"Jo\xffao\""),
        thread_item("t-ok-2", "p1", br#""Bea \ufffd""#),
    ]);
    let page = parse_thread_page(&body, &base(), 1, 100).expect("the page still decodes");
    let ids: Vec<_> = page.items.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t-ok-1", "t-ok-2"]);
    // A real U+FFFD sent by Channex is text, not damage.
    assert_eq!(page.items[1].title, "Bea \u{fffd}");
    assert_eq!(page.skipped.len(), 1);
    assert_eq!(page.skipped[0].id.as_deref(), Some("t-bad"));
    assert_eq!(page.skipped[0].kind, concierge::channex::ItemKind::Thread);
    assert!(
        page.skipped[0].error.contains("UTF-8"),
        "{:?}",
        page.skipped[0]
    );
    assert_eq!(page.meta.total, 3);
}

#[test]
fn a_lone_surrogate_escape_skips_only_that_thread() {
    let body = list_of(&[
        thread_item("t-bad", "p1", br#""Jo\udcffao""#),
        thread_item("t-ok", "p1", br#""\ud83d\ude00 fine""#),
    ]);
    let page = parse_thread_page(&body, &base(), 1, 100).expect("the page still decodes");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].title, "\u{1f600} fine");
    assert_eq!(page.skipped.len(), 1);
    assert_eq!(page.skipped[0].id.as_deref(), Some("t-bad"));
    // Same bytes, same fingerprint: the poller reports it once across cycles.
    let again = parse_thread_page(&body, &base(), 1, 100).unwrap();
    assert_eq!(again.skipped[0].fingerprint, page.skipped[0].fingerprint);
}

#[test]
fn a_message_whose_text_is_a_number_is_kept_as_text() {
    let body = br#"{"data":[
        {"id":"m1","type":"message","attributes":{"message":42,"sender":"guest","inserted_at":"2021-07-28T04:25:15.000000"}},
        {"id":"m2","type":"message","attributes":{"message":1.5,"sender":"guest","inserted_at":"2021-07-28T04:25:16.000000"}},
        {"id":"m3","type":"message","attributes":{"message":{"no":"text"},"sender":"guest","inserted_at":"2021-07-28T04:25:17.000000"}}
    ]}"#;
    let page = parse_message_page(body, &base(), 1, 10).expect("parse");
    let texts: Vec<_> = page.items.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["42", "1.5"]);
    assert_eq!(page.skipped.len(), 1);
    assert_eq!(page.skipped[0].id.as_deref(), Some("m3"));
}

// -- defect 8: ids that could inject a header or break subject routing ---------------------

#[test]
fn ids_that_are_not_channex_ids_are_skipped_and_never_repeated() {
    let body = list_of(&[
        thread_item("t1\r\nNats-Msg-Id: x", "p1", br#""a""#),
        thread_item("t2", "p1.>", br#""b""#),
        thread_item("t 3", "p1", br#""c""#),
        thread_item("t*4", "p1", br#""d""#),
        thread_item(&"x".repeat(129), "p1", br#""e""#),
        thread_item("t-ok_5", "p1", br#""f""#),
    ]);
    // `\r\n` inside a JSON string literal must be escaped to be valid JSON at all.
    let body = String::from_utf8(body).unwrap().replace("\r\n", "\\r\\n");
    let page = parse_thread_page(body.as_bytes(), &base(), 1, 100).expect("parse");
    let ids: Vec<_> = page.items.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t-ok_5"]);
    assert_eq!(page.skipped.len(), 5);
    for s in &page.skipped {
        let id = s.id.as_deref().unwrap_or("");
        assert!(!id.contains(['\r', '\n', ' ', '.', '*', '>']), "{s:?}");
        assert!(!s.error.contains('\r') && !s.error.contains('\n'), "{s:?}");
    }
    // The thread with a sane id but an insane property id is still named.
    assert_eq!(page.skipped[1].id.as_deref(), Some("t2"));
    // A single document with such an id is a decode error, not a thread.
    let single = br#"{"data":{"id":"t.1","type":"message_thread","attributes":{}}}"#;
    assert!(matches!(
        parse_thread_document(single, &base()),
        Err(ChannexError::Decode(_))
    ));
}
