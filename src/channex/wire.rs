//! Wire models of the Channex Messages API: serde structs that mirror the JSON:API-ish
//! documents byte-for-byte in shape (`data`, `id`, `type`, `attributes`,
//! `relationships.<name>.data.id`, `meta`).
//!
//! Owns: the JSON shapes and the timestamp formats they are written in (read through
//! [`crate::base::time::parse_utc_timestamp`], the one timestamp parser). Shared by the
//! client (which deserialises them and turns them into domain types) and by the simulator
//! (which serialises them), so both sides agree on the contract by construction.
//! Must not: contain behaviour (HTTP, retries, domain rules) or panic on odd input:
//! deserialisation is lenient where the API is known to be sloppy (nulls, numbers as
//! strings, unknown fields), strict only where an item would be meaningless without it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::base::time::parse_utc_timestamp;

/// A top-level document: `{"data": ..., "meta": {...}}` (`meta` only on lists).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document<T> {
    pub data: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ListMeta>,
}

/// The pagination block of a list document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {
    #[serde(default)]
    pub limit: u32,
    #[serde(default)]
    pub order_by: String,
    #[serde(default)]
    pub order_direction: String,
    #[serde(default)]
    pub page: u32,
    #[serde(default)]
    pub total: u64,
}

/// One resource: `{"id", "type", "attributes", "relationships"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource<A> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub attributes: A,
    #[serde(default)]
    pub relationships: Relationships,
}

/// A resource reference without attributes, e.g. the attachment upload answer
/// `{"data": {"id": "...", "type": "attachment"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Only seen on the inquiry thread's `property` relationship.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `{"data": {"id", "type"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelData {
    pub data: ResourceRef,
}

impl RelData {
    pub fn new(id: impl Into<String>, kind: &str) -> Self {
        RelData {
            data: ResourceRef {
                id: id.into(),
                kind: kind.to_string(),
                title: None,
            },
        }
    }
}

/// The relationships Channex attaches to threads and messages. Absent ones are omitted
/// on output; a relationship whose `data` is `null` or malformed is read as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationships {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_rel"
    )]
    pub booking: Option<RelData>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_rel"
    )]
    pub channel: Option<RelData>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_rel"
    )]
    pub property: Option<RelData>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_rel"
    )]
    pub message_thread: Option<RelData>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_rel"
    )]
    pub user: Option<RelData>,
}

impl Relationships {
    fn id_of(rel: &Option<RelData>) -> Option<String> {
        rel.as_ref().map(|r| r.data.id.clone())
    }
    pub fn booking_id(&self) -> Option<String> {
        Self::id_of(&self.booking)
    }
    pub fn channel_id(&self) -> Option<String> {
        Self::id_of(&self.channel)
    }
    pub fn property_id(&self) -> Option<String> {
        Self::id_of(&self.property)
    }
    pub fn message_thread_id(&self) -> Option<String> {
        Self::id_of(&self.message_thread)
    }
    pub fn user_id(&self) -> Option<String> {
        Self::id_of(&self.user)
    }
}

/// The longest id accepted from Channex (its ids are 36-character UUIDs).
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is a sane Channex id: 1 to [`MAX_ID_LEN`] of `[A-Za-z0-9_-]`. Channex ids
/// go into `Nats-Msg-Id` headers, subjects and KV keys: an id with CR/LF, spaces, `.`, `*`
/// or `>` could inject a header or break subject routing, so its item is skipped instead.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An invalid id for an error message: escaped (no raw CR/LF reaches a log line) and cut
/// to 40 characters.
pub fn describe_id(id: &str) -> String {
    let cut: String = id.chars().take(40).collect();
    let more = if cut.len() < id.len() { "…" } else { "" };
    format!("{:?}{more}", cut)
}

/// Attributes of a `message_thread` resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadAttributes {
    #[serde(default, deserialize_with = "lenient_text")]
    pub title: String,
    #[serde(default, deserialize_with = "null_default")]
    pub is_closed: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub provider: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub message_count: u64,
    #[serde(default)]
    pub last_message: Option<LastMessageAttributes>,
    #[serde(default, with = "ts_opt")]
    pub last_message_received_at: Option<DateTime<Utc>>,
    #[serde(default, with = "ts_opt")]
    pub inserted_at: Option<DateTime<Utc>>,
    #[serde(default, with = "ts_opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `attributes.last_message` of a thread (a message without `updated_at`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastMessageAttributes {
    #[serde(default, deserialize_with = "null_default")]
    pub attachments: Vec<String>,
    #[serde(default, with = "ts_opt")]
    pub inserted_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub message: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sender: String,
}

/// Attributes of a `message` resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageAttributes {
    #[serde(default, deserialize_with = "null_default")]
    pub attachments: Vec<String>,
    /// Required: a message without a time cannot be ordered.
    #[serde(with = "ts")]
    pub inserted_at: DateTime<Utc>,
    /// The text; may be empty (or `null`) when `attachments` is present; a number is kept
    /// as its string form.
    #[serde(default, deserialize_with = "lenient_text")]
    pub message: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sender: String,
    #[serde(default, with = "ts_opt")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Only on system messages such as the Airbnb `"inquiry"` message.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt"
    )]
    pub meta: Option<MessageMetaWire>,
}

/// `attributes.meta` of a system message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageMetaWire {
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub live_feed_event_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt")]
    pub booking_details: Option<BookingDetailsWire>,
}

/// `attributes.meta.booking_details` of an inquiry message. Every field is optional and
/// read leniently (numbers may arrive as strings and vice versa).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BookingDetailsWire {
    #[serde(default, deserialize_with = "lenient_string")]
    pub checkin_date: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub checkout_date: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub expected_payout_amount_accurate: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub guest_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub listing_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub listing_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub nights: Option<u32>,
    /// RFC 3339 with `Z` on the wire (`2023-12-01T07:01:38.735Z`).
    #[serde(default, with = "ts_rfc3339_opt")]
    pub non_response_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub number_of_adults: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub number_of_children: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub number_of_guests: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub number_of_infants: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub number_of_pets: Option<u32>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub property_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub room_type_id: Option<String>,
}

/// Attributes of a `booking` resource (`GET /bookings/:id`, `GET /bookings`), as the
/// Bookings Collection page documents them. Strict only where a stay would be meaningless
/// without it: `status`, `arrival_date` and `departure_date` (`YYYY-MM-DD`, departure not
/// before arrival is checked by the model). Everything else is optional and lenient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingAttributes {
    pub status: String,
    #[serde(with = "date_str")]
    pub arrival_date: String,
    #[serde(with = "date_str")]
    pub departure_date: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub revision_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub property_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub ota_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub ota_reservation_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt")]
    pub occupancy: Option<OccupancyWire>,
    #[serde(default, deserialize_with = "lenient_opt")]
    pub customer: Option<CustomerWire>,
    #[serde(default, with = "ts_opt")]
    pub inserted_at: Option<DateTime<Utc>>,
    #[serde(default, with = "ts_opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `attributes.occupancy` of a booking.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OccupancyWire {
    #[serde(default, deserialize_with = "lenient_u32")]
    pub adults: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub children: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub infants: Option<u32>,
}

/// `attributes.customer` of a booking (only the fields concierge reads).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CustomerWire {
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub surname: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub language: Option<String>,
}

pub type BookingResource = Resource<BookingAttributes>;

/// A calendar date `YYYY-MM-DD`, kept as the string Channex sent (a date-time such as
/// `2024-08-01T00:00:00` is cut to its date); anything else is an error.
pub mod date_str {
    use super::*;

    pub fn serialize<S: Serializer>(d: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let raw = String::deserialize(d)?;
        let date = raw.trim().get(..10).unwrap_or_default();
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| serde::de::Error::custom(format!("{raw:?} is not a YYYY-MM-DD date")))
    }
}

/// Request body of the send-message endpoints:
/// `{"message": {"message": "..."}}` or `{"message": {"attachment_id": "...", "message"?: "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessageRequest {
    pub message: SendMessageBody,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendMessageBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
}

/// Request body of `POST /attachments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentUploadRequest {
    pub attachment: AttachmentUpload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentUpload {
    /// Base64 (standard alphabet) of the file's bytes.
    pub file: String,
    pub file_name: String,
    pub file_type: String,
}

/// Error document: `{"errors": {"code": "...", "title": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDocument {
    pub errors: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(default, deserialize_with = "null_default")]
    pub code: String,
    #[serde(default, deserialize_with = "null_default")]
    pub title: String,
}

impl ErrorDocument {
    pub fn new(code: &str, title: &str) -> Self {
        ErrorDocument {
            errors: ErrorObject {
                code: code.to_string(),
                title: title.to_string(),
            },
        }
    }
}

pub type ThreadResource = Resource<ThreadAttributes>;
pub type MessageResource = Resource<MessageAttributes>;

// ---------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------

/// Channex's usual timestamp format: naive, microseconds, implicitly UTC.
pub const NAIVE_MICROS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// `2021-07-28T04:25:15.000000`.
pub fn format_naive_micros(dt: &DateTime<Utc>) -> String {
    dt.format(NAIVE_MICROS_FORMAT).to_string()
}

/// `2023-12-01T07:01:38.735Z`.
pub fn format_rfc3339_millis(dt: &DateTime<Utc>) -> String {
    dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Required timestamp, serialised as naive microseconds.
pub mod ts {
    use super::*;

    pub fn serialize<S: Serializer>(dt: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_naive_micros(dt))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        parse_utc_timestamp(&raw)
            .ok_or_else(|| serde::de::Error::custom(format!("unparseable timestamp {raw:?}")))
    }
}

/// Optional timestamp, serialised as naive microseconds (or `null`). A value present but
/// unparseable is an error (the item is then skipped by the client).
pub mod ts_opt {
    use super::*;

    pub fn serialize<S: Serializer>(dt: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match dt {
            Some(dt) => s.serialize_str(&format_naive_micros(dt)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(raw) if raw.trim().is_empty() => Ok(None),
            Some(raw) => parse_utc_timestamp(&raw)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("unparseable timestamp {raw:?}"))),
        }
    }
}

/// Optional timestamp serialised as RFC 3339 with milliseconds and `Z`; read leniently
/// (anything unparseable becomes `None` rather than losing the whole message).
pub mod ts_rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(dt: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match dt {
            Some(dt) => s.serialize_str(&format_rfc3339_millis(dt)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(v.as_str().and_then(parse_utc_timestamp))
    }
}

// ---------------------------------------------------------------------------------------
// Lenient helpers
// ---------------------------------------------------------------------------------------

/// `null` reads as `T::default()`.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A text field: a string, `null` (empty), or a number or boolean as its string form (a
/// guest who texts "42" must still be answered). Objects and arrays are an error.
fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a text, found {}",
            json_kind(&other)
        ))),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

/// Anything that does not deserialise as `T` reads as `None`.
fn lenient_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    Ok(serde_json::from_value(v).ok())
}

fn lenient_rel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RelData>, D::Error> {
    lenient_opt(d)
}

/// Strings, numbers and booleans all read as a string; other values as `None`.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn value_as_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Non-negative integers given as numbers or strings; anything else reads as `None`.
fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(value_as_u64(&v).and_then(|n| u32::try_from(n).ok()))
}

/// Like [`lenient_u32`], defaulting to 0.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(value_as_u64(&v).unwrap_or(0))
}
