//! Property-based tests of the Channex response parsers: arbitrary and mutated documents
//! (the seed's own examples with fields dropped, types changed, odd strings and bad bytes
//! inserted) never panic the parser, and the valid items in them still parse.

use concierge::channex::parse::{
    parse_booking_document, parse_booking_page, parse_error, parse_message_document,
    parse_message_page, parse_thread_document, parse_thread_page,
};
use proptest::prelude::*;
use reqwest::Url;
use serde_json::{json, Value};

fn base() -> Url {
    Url::parse("https://staging.channex.io/api/v1/").expect("base url")
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/seed/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_slice(&bytes).expect("seed fixture is JSON")
}

/// The first item of a seed list (a valid thread or message).
fn seed_item(name: &str) -> Value {
    fixture(name)["data"][0].clone()
}

/// A booking as the Bookings Collection page documents it (the fields concierge reads and
/// a few it does not).
fn booking_item() -> Value {
    json!({
        "id": "0f9f2bd8-booking", "type": "booking",
        "attributes": {
            "id": "0f9f2bd8-booking", "property_id": "p1", "revision_id": "rev-1",
            "status": "new", "ota_name": "Booking.com", "ota_reservation_code": "4242",
            "arrival_date": "2024-08-01", "departure_date": "2024-08-04",
            "arrival_hour": "15:00", "amount": "300.00", "currency": "EUR",
            "occupancy": {"adults": 2, "children": 1, "infants": 0},
            "customer": {"name": "Anna", "surname": "Schmidt", "language": "de-DE",
                         "mail": "anna@example.com"},
            "rooms": [], "services": [],
            "inserted_at": "2024-07-01T10:00:00.000000", "updated_at": "2024-07-01T10:00:00.000000"
        }
    })
}

/// Odd JSON values: edges of numbers, odd strings, nesting.
fn odd_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("2021-07-28T04:25:15.000000")),
        Just(json!("t1\r\nNats-Msg-Id: x")),
        Just(json!("p1.>")),
        Just(json!("")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path (object keys) inside `v`, so a mutation can target any field.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            prefix.push(k.clone());
            out.push(prefix.clone());
            paths(child, prefix, out);
            prefix.pop();
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Drop,
    Replace(Value),
}

fn mutate(item: &mut Value, path: &[String], m: &Mutation) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = item;
    for p in parents {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(obj) = cur {
        match m {
            Mutation::Drop => {
                obj.remove(last);
            }
            Mutation::Replace(v) => {
                obj.insert(last.clone(), v.clone());
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Drop),
        odd_value().prop_map(Mutation::Replace)
    ]
}

/// A list page of `valid` copies of a seed item (distinct ids) with one mutated copy in
/// between, serialised, plus optional raw byte damage inside the mutated item.
fn page_with_mutant(
    seed: &Value,
    valid: usize,
    pick: prop::sample::Index,
    m: &Mutation,
) -> (Vec<u8>, Vec<String>) {
    let mut mutant = seed.clone();
    let mut all = Vec::new();
    paths(seed, &mut Vec::new(), &mut all);
    let path = pick.get(&all).clone();
    mutate(&mut mutant, &path, m);
    let mut items = Vec::new();
    let mut ids = Vec::new();
    for i in 0..valid {
        let mut ok = seed.clone();
        ok["id"] = json!(format!("valid-{i}"));
        ids.push(format!("valid-{i}"));
        items.push(ok);
        if i == 0 {
            items.push(mutant.clone());
        }
    }
    let body = serde_json::to_vec(&json!({"data": items})).expect("serialise");
    (body, ids)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_thread_page(&bytes, &base(), 1, 100);
        let _ = parse_message_page(&bytes, &base(), 1, 100);
        let _ = parse_thread_document(&bytes, &base());
        let _ = parse_message_document(&bytes, &base());
        let _ = parse_booking_page(&bytes, 1, 100);
        let _ = parse_booking_document(&bytes);
        let _ = parse_error(422, &bytes);
    }

    #[test]
    fn arbitrary_json_documents_never_panic(doc in odd_value(), data in odd_value()) {
        let wrapped = serde_json::to_vec(&json!({"data": data, "meta": doc})).unwrap();
        for body in [serde_json::to_vec(&doc).unwrap(), wrapped] {
            let _ = parse_thread_page(&body, &base(), 1, 100);
            let _ = parse_message_page(&body, &base(), 1, 100);
            let _ = parse_thread_document(&body, &base());
            let _ = parse_message_document(&body, &base());
            let _ = parse_booking_page(&body, 1, 100);
            let _ = parse_booking_document(&body);
            let _ = parse_error(404, &body);
        }
    }

    #[test]
    fn a_mutated_thread_never_hides_the_valid_ones(
        valid in 1usize..4, pick in any::<prop::sample::Index>(), m in mutation(),
    ) {
        let (body, ids) = page_with_mutant(&seed_item("thread_list"), valid, pick, &m);
        let page = parse_thread_page(&body, &base(), 1, 100).expect("page decodes");
        for id in &ids {
            prop_assert!(page.items.iter().any(|t| &t.id == id), "{id} lost");
        }
        prop_assert_eq!(page.items.len() + page.skipped.len(), valid + 1);
    }

    #[test]
    fn a_mutated_booking_never_hides_the_valid_ones(
        valid in 1usize..4, pick in any::<prop::sample::Index>(), m in mutation(),
    ) {
        let (body, ids) = page_with_mutant(&booking_item(), valid, pick, &m);
        let page = parse_booking_page(&body, 1, 100).expect("page decodes");
        for id in &ids {
            prop_assert!(page.items.iter().any(|b| &b.id == id), "{id} lost");
        }
        prop_assert_eq!(page.items.len() + page.skipped.len(), valid + 1);
    }

    #[test]
    fn a_mutated_message_never_hides_the_valid_ones(
        valid in 1usize..4, pick in any::<prop::sample::Index>(), m in mutation(),
    ) {
        let (body, ids) = page_with_mutant(&seed_item("thread_messages"), valid, pick, &m);
        let page = parse_message_page(&body, &base(), 1, 100).expect("page decodes");
        for id in &ids {
            prop_assert!(page.items.iter().any(|t| &t.id == id), "{id} lost");
        }
        prop_assert_eq!(page.items.len() + page.skipped.len(), valid + 1);
    }

    #[test]
    fn raw_damage_inside_one_item_stays_inside_it(
        valid in 1usize..4,
        at in any::<prop::sample::Index>(),
        damage in prop_oneof![
            Just(b"\xff".to_vec()),
            Just(b"\xc3".to_vec()),
            Just(br"\udcff".to_vec()),
            Just(br"\ud800".to_vec()),
        ],
    ) {
        // Damage inside the title string: the JSON stays well-formed apart from it.
        let mut mutant = seed_item("thread_list");
        mutant["id"] = json!("damaged");
        mutant["attributes"]["title"] = json!("TITLE-MARK-with-some-room");
        let mut items: Vec<Vec<u8>> = (0..valid)
            .map(|i| {
                let mut v = seed_item("thread_list");
                v["id"] = json!(format!("valid-{i}"));
                serde_json::to_vec(&v).unwrap()
            })
            .collect();
        let mut bad = serde_json::to_vec(&mutant).unwrap();
        let mark = b"TITLE-MARK-with-some-room";
        let start = bad.windows(mark.len()).position(|w| w == mark).unwrap();
        let pos = start + at.index(mark.len());
        bad.splice(pos..pos, damage.iter().copied());
        items.insert(items.len() / 2, bad);
        let mut body = b"{\"data\":[".to_vec();
        body.extend_from_slice(&items.join(&b","[..]));
        body.extend_from_slice(b"]}");
        let page = parse_thread_page(&body, &base(), 1, 100).expect("page decodes");
        prop_assert_eq!(page.items.len(), valid);
        prop_assert_eq!(page.skipped.len(), 1);
        prop_assert_eq!(page.skipped[0].id.as_deref(), Some("damaged"));
    }
}

#[test]
fn a_documented_booking_reads_into_the_booking_block() {
    let body = serde_json::to_vec(&json!({"data": booking_item()})).unwrap();
    let b = parse_booking_document(&body).expect("booking");
    assert_eq!(b.guest_name, "Anna Schmidt");
    assert_eq!((b.adults, b.children, b.nights()), (2, 1, 3));
    assert_eq!(b.revision(), "rev-1");
    let block = concierge::events::Booking::from_channex(&b);
    assert_eq!(block.language.as_deref(), Some("de"));
    assert_eq!(block.status, concierge::events::BookingStatus::New);
    // A bad date or a missing status skips the booking, never invents a stay.
    let mut bad = booking_item();
    bad["attributes"]["arrival_date"] = json!("01/08/2024");
    let mut no_status = booking_item();
    no_status["id"] = json!("b2");
    no_status["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    let page = serde_json::to_vec(&json!({"data": [bad, no_status, booking_item()]})).unwrap();
    let page = parse_booking_page(&page, 1, 100).expect("page");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.skipped.len(), 2);
    assert!(page.skipped.iter().all(|s| s.kind.as_str() == "booking"));
}
