//! Record bytes → a valid [`Pageview`] or a [`Rejection`] naming the broken rule (SPEC.md 1).
//!
//! The JSON is parsed once with serde_json; each known field is kept as its raw JSON text so
//! that the checks can tell an integer from a float or an out-of-range integer exactly as a
//! reader of the JSON text would, without a lossy trip through `f64`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
pub const MAX_TIMESTAMP_MS: i64 = 4_102_444_800_000;
const POSTCODE_LEN: std::ops::RangeInclusive<usize> = 2..=10;
/// Offending values are quoted in messages only up to this many characters, so one huge
/// value cannot blow up a DLQ row's message column.
const QUOTE_LIMIT: usize = 64;

/// A valid pageview; strings borrow from the record unless the JSON escaped them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pageview<'a> {
    pub user_id: i64,
    pub postcode: Cow<'a, str>,
    pub webpage: Cow<'a, str>,
    pub timestamp: i64,
}

/// Why a record went to the dead-letter queue; `as_str` is the `error_kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    InvalidUtf8,
    InvalidJson,
    MissingField,
    WrongType,
    InvalidUserId,
    InvalidPostcode,
    InvalidWebpage,
    InvalidTimestamp,
    LateEvent,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::InvalidUtf8,
        ErrorKind::InvalidJson,
        ErrorKind::MissingField,
        ErrorKind::WrongType,
        ErrorKind::InvalidUserId,
        ErrorKind::InvalidPostcode,
        ErrorKind::InvalidWebpage,
        ErrorKind::InvalidTimestamp,
        ErrorKind::LateEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidUtf8 => "invalid_utf8",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidUserId => "invalid_user_id",
            ErrorKind::InvalidPostcode => "invalid_postcode",
            ErrorKind::InvalidWebpage => "invalid_webpage",
            ErrorKind::InvalidTimestamp => "invalid_timestamp",
            ErrorKind::LateEvent => "late_event",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A malformed record: which rule it broke and a message for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: ErrorKind,
    pub message: String,
}

impl Rejection {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Rejection {
            kind,
            message: message.into(),
        }
    }
}

/// Checks one record against every rule of SPEC.md 1, fields in the order of its table.
pub fn validate(bytes: &[u8]) -> Result<Pageview<'_>, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            ErrorKind::InvalidUtf8,
            format!(
                "payload is not UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    let fields = parse_fields(text)?;
    let (user_id, text) = integer(fields.user_id, "user_id")?;
    if !(1..=i128::from(i64::MAX)).contains(&user_id) {
        return Err(Rejection::new(
            ErrorKind::InvalidUserId,
            format!(
                "field `user_id` must be between 1 and 9223372036854775807, got {}",
                quote(text)
            ),
        ));
    }
    let postcode = string(fields.postcode, "postcode")?;
    if !is_valid_postcode(&postcode) {
        return Err(Rejection::new(
            ErrorKind::InvalidPostcode,
            format!(
                "field `postcode` must match ^[A-Z0-9]{{2,10}}$, got {:?}",
                quote(&postcode)
            ),
        ));
    }
    let webpage = string(fields.webpage, "webpage")?;
    if !is_valid_webpage(&webpage) {
        return Err(Rejection::new(
            ErrorKind::InvalidWebpage,
            format!(
                "field `webpage` must match ^https?://.+, got {:?}",
                quote(&webpage)
            ),
        ));
    }
    let (timestamp, text) = integer(fields.timestamp, "timestamp")?;
    if !(i128::from(MIN_TIMESTAMP_MS)..=i128::from(MAX_TIMESTAMP_MS)).contains(&timestamp) {
        return Err(Rejection::new(
            ErrorKind::InvalidTimestamp,
            format!(
                "field `timestamp` must be epoch milliseconds between {MIN_TIMESTAMP_MS} and {MAX_TIMESTAMP_MS}, got {}",
                quote(text)
            ),
        ));
    }
    // Both values were range-checked above, so the narrowing is exact.
    Ok(Pageview {
        user_id: user_id as i64,
        postcode,
        webpage,
        timestamp: timestamp as i64,
    })
}

/// `^[A-Z0-9]{2,10}$`
pub fn is_valid_postcode(s: &str) -> bool {
    POSTCODE_LEN.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `^https?://.+` with regex semantics: a prefix match where `.` is any character but `\n`,
/// so at least one such character must follow the `://`.
pub fn is_valid_webpage(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    matches!(rest.and_then(|r| r.chars().next()), Some(c) if c != '\n')
}

fn quote(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
        None => Cow::Borrowed(s),
    }
}

/// The raw JSON text of each field the rules look at.
#[derive(Default)]
struct Fields<'a> {
    user_id: Option<&'a RawValue>,
    postcode: Option<&'a RawValue>,
    webpage: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
}

fn parse_fields(text: &str) -> Result<Fields<'_>, Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de
        .deserialize_map(FieldsVisitor)
        .and_then(|fields| de.end().map(|()| fields))
        .map_err(|e| Rejection::new(ErrorKind::InvalidJson, json_error_message(&e, text)))?;
    Ok(fields)
}

fn json_error_message(e: &serde_json::Error, text: &str) -> String {
    if text.trim().is_empty() {
        "payload is empty".to_string()
    } else if e.is_data() {
        format!("payload is not a JSON object: {e}")
    } else {
        format!("payload is not valid JSON: {e}")
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let (slot, name) = match key {
                Key::UserId => (&mut fields.user_id, "user_id"),
                Key::Postcode => (&mut fields.postcode, "postcode"),
                Key::Webpage => (&mut fields.webpage, "webpage"),
                Key::Timestamp => (&mut fields.timestamp, "timestamp"),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
            }
            *slot = Some(map.next_value::<&RawValue>()?);
        }
        Ok(fields)
    }
}

enum Key {
    UserId,
    Postcode,
    Webpage,
    Timestamp,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "user_id" => Key::UserId,
                    "postcode" => Key::Postcode,
                    "webpage" => Key::Webpage,
                    "timestamp" => Key::Timestamp,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

fn present<'a>(raw: Option<&'a RawValue>, name: &str) -> Result<&'a str, Rejection> {
    raw.map(|r| r.get().trim())
        .ok_or_else(|| Rejection::new(ErrorKind::MissingField, format!("missing field `{name}`")))
}

fn json_type(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ if raw.contains(['.', 'e', 'E']) => "a number with a fraction or exponent",
        _ => "an integer",
    }
}

fn wrong_type(name: &str, expected: &str, raw: &str) -> Rejection {
    Rejection::new(
        ErrorKind::WrongType,
        format!("field `{name}` must be {expected}, got {}", json_type(raw)),
    )
}

/// A JSON integer's value and text. `i128` keeps the exact value of every integer a rule can
/// accept and of every near miss; longer ones saturate, which still fails every range.
fn integer<'a>(raw: Option<&'a RawValue>, name: &str) -> Result<(i128, &'a str), Rejection> {
    let text = present(raw, name)?;
    if json_type(text) != "an integer" {
        return Err(wrong_type(name, "a JSON integer", text));
    }
    // serde_json accepted it as a number without fraction or exponent: `-?[0-9]+`.
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let magnitude = digits.bytes().try_fold(0i128, |acc, b| {
        acc.checked_mul(10)?.checked_add(i128::from(b - b'0'))
    });
    let magnitude = magnitude.unwrap_or(i128::MAX);
    Ok((if negative { -magnitude } else { magnitude }, text))
}

fn string<'a>(raw: Option<&'a RawValue>, name: &str) -> Result<Cow<'a, str>, Rejection> {
    let text = present(raw, name)?;
    if !text.starts_with('"') {
        return Err(wrong_type(name, "a JSON string", text));
    }
    let inner = &text[1..text.len() - 1];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    // serde_json already parsed this exact string once, so decoding it cannot fail.
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|e| Rejection::new(ErrorKind::InvalidJson, format!("field `{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(line: &[u8]) -> Option<ErrorKind> {
        validate(line).err().map(|r| r.kind)
    }

    fn event(user_id: &str, postcode: &str, webpage: &str, timestamp: &str) -> String {
        format!(
            r#"{{"user_id": {user_id}, "postcode": {postcode}, "webpage": {webpage}, "timestamp": {timestamp}}}"#
        )
    }

    const OK_URL: &str = r#""https://www.website.com/index.html""#;

    #[test]
    fn accepts_the_spec_example() {
        let line = br#"{"user_id": 1234, "postcode": "SW19", "webpage": "https://www.website.com/index.html", "timestamp": 1700000000123}"#;
        let pv = validate(line).unwrap();
        assert_eq!(pv.user_id, 1234);
        assert_eq!(pv.postcode, "SW19");
        assert_eq!(pv.webpage, "https://www.website.com/index.html");
        assert_eq!(pv.timestamp, 1_700_000_000_123);
    }

    #[test]
    fn ignores_unknown_fields_and_decodes_escapes() {
        let line = br#"{"extra": [1, {"a": null}], "user_id": 7, "postcode": "SW\u0031\u0039", "webpage": "http:\/\/x", "timestamp": 946684800000, "more": "\u00e9"}"#;
        let pv = validate(line).unwrap();
        assert_eq!(pv.postcode, "SW19");
        assert_eq!(pv.webpage, "http://x");
    }

    #[test]
    fn payload_level_errors() {
        assert_eq!(kind(b"\xff{}"), Some(ErrorKind::InvalidUtf8));
        assert_eq!(
            kind(b"{\"user_id\": 1, \"postcode\": \"\xc3\x28\"}"),
            Some(ErrorKind::InvalidUtf8)
        );
        assert_eq!(kind(b""), Some(ErrorKind::InvalidJson));
        assert_eq!(kind(b"{\"user_id\": 1"), Some(ErrorKind::InvalidJson));
        assert_eq!(kind(b"[1, 2]"), Some(ErrorKind::InvalidJson));
        assert_eq!(kind(b"42"), Some(ErrorKind::InvalidJson));
        assert_eq!(kind(b"{} {}"), Some(ErrorKind::InvalidJson));
        assert_eq!(
            kind(br#"{"user_id": 1, "user_id": 2, "postcode": "SW19"}"#),
            Some(ErrorKind::InvalidJson)
        );
        let msg = validate(br#"{"user_id": 1, "user_id": 2}"#)
            .unwrap_err()
            .message;
        assert!(msg.contains("duplicate field `user_id`"), "{msg}");
    }

    #[test]
    fn missing_fields_are_named() {
        let r = validate(br#"{"user_id": 1, "postcode": "SW19", "timestamp": 1700000000000}"#)
            .unwrap_err();
        assert_eq!(r.kind, ErrorKind::MissingField);
        assert!(r.message.contains("webpage"), "{}", r.message);
        assert_eq!(kind(b"{}"), Some(ErrorKind::MissingField));
    }

    #[test]
    fn wrong_types() {
        for user_id in [r#""1234""#, "1.0", "1e3", "true", "null", "[1]", "{}"] {
            let line = event(user_id, r#""SW19""#, OK_URL, "1700000000000");
            assert_eq!(kind(line.as_bytes()), Some(ErrorKind::WrongType), "{line}");
        }
        for postcode in ["19", "null", "[\"SW19\"]"] {
            let line = event("1", postcode, OK_URL, "1700000000000");
            assert_eq!(kind(line.as_bytes()), Some(ErrorKind::WrongType), "{line}");
        }
        let line = event("1", r#""SW19""#, "false", "1700000000000");
        assert_eq!(kind(line.as_bytes()), Some(ErrorKind::WrongType));
        for ts in [r#""1700000000000""#, "1.7e12", "1700000000000.0"] {
            let line = event("1", r#""SW19""#, OK_URL, ts);
            assert_eq!(kind(line.as_bytes()), Some(ErrorKind::WrongType), "{line}");
        }
    }

    #[test]
    fn user_id_boundaries() {
        let check =
            |user_id: &str| kind(event(user_id, r#""SW19""#, OK_URL, "1700000000000").as_bytes());
        assert_eq!(check("1"), None);
        assert_eq!(check("9223372036854775807"), None);
        assert_eq!(check("0"), Some(ErrorKind::InvalidUserId));
        assert_eq!(check("-0"), Some(ErrorKind::InvalidUserId));
        assert_eq!(check("-1"), Some(ErrorKind::InvalidUserId));
        assert_eq!(check("9223372036854775808"), Some(ErrorKind::InvalidUserId));
        assert_eq!(
            check("123456789012345678901234567890123456789012345678901234567890"),
            Some(ErrorKind::InvalidUserId)
        );
    }

    #[test]
    fn timestamp_boundaries() {
        let check = |ts: &str| kind(event("1", r#""SW19""#, OK_URL, ts).as_bytes());
        assert_eq!(check("946684800000"), None);
        assert_eq!(check("4102444800000"), None);
        assert_eq!(check("946684799999"), Some(ErrorKind::InvalidTimestamp));
        assert_eq!(check("4102444800001"), Some(ErrorKind::InvalidTimestamp));
        assert_eq!(check("1700000000"), Some(ErrorKind::InvalidTimestamp));
        assert_eq!(check("-1700000000000"), Some(ErrorKind::InvalidTimestamp));
    }

    #[test]
    fn postcode_and_webpage_rules() {
        let pc = |p: &str| kind(event("1", p, OK_URL, "1700000000000").as_bytes());
        assert_eq!(pc(r#""AB""#), None);
        assert_eq!(pc(r#""ABCDEFGH12""#), None);
        for bad in [
            r#""A""#,
            r#""ABCDEFGH123""#,
            r#""sw19""#,
            r#""SW 19""#,
            r#""SW19\n""#,
            r#""""#,
        ] {
            assert_eq!(pc(bad), Some(ErrorKind::InvalidPostcode), "{bad}");
        }
        let web = |w: &str| kind(event("1", r#""SW19""#, w, "1700000000000").as_bytes());
        assert_eq!(web(r#""http://x""#), None);
        assert_eq!(web(r#""https://x\ny""#), None);
        for bad in [
            r#""https://""#,
            r#""ftp://x""#,
            r#""HTTPS://x""#,
            r#""https://\nx""#,
            r#""www.x.com""#,
        ] {
            assert_eq!(web(bad), Some(ErrorKind::InvalidWebpage), "{bad}");
        }
    }

    #[test]
    fn first_broken_field_in_spec_order_wins() {
        let line = event("0", r#""bad""#, r#""ftp://""#, "1");
        assert_eq!(kind(line.as_bytes()), Some(ErrorKind::InvalidUserId));
        let line = event("5", r#""bad""#, r#""ftp://""#, "1");
        assert_eq!(kind(line.as_bytes()), Some(ErrorKind::InvalidPostcode));
    }

    #[test]
    fn huge_values_are_quoted_short() {
        let big = "A".repeat(10_000);
        let r = validate(event("1", &format!("\"{big}\""), OK_URL, "1700000000000").as_bytes())
            .unwrap_err();
        assert_eq!(r.kind, ErrorKind::InvalidPostcode);
        assert!(r.message.len() < 200, "{}", r.message);
    }

    proptest! {
        #[test]
        fn postcode_rule_agrees_with_the_regex(s in "\\PC{0,12}|[A-Z0-9a-z \n]{0,12}") {
            let re = regex::Regex::new("^[A-Z0-9]{2,10}$").unwrap();
            prop_assert_eq!(is_valid_postcode(&s), re.is_match(&s));
        }

        #[test]
        fn webpage_rule_agrees_with_the_regex(s in "(https?://|http:/|HTTP://)?[a-z/\n.é]{0,6}") {
            let re = regex::Regex::new("^https?://.+").unwrap();
            prop_assert_eq!(is_valid_webpage(&s), re.is_match(&s));
        }

        #[test]
        fn integer_fields_keep_their_exact_value(user_id in any::<i64>(), ts in any::<i64>()) {
            let line = event(&user_id.to_string(), r#""SW19""#, OK_URL, &ts.to_string());
            let got = validate(line.as_bytes());
            let user_ok = user_id >= 1;
            let ts_ok = (MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ts);
            match got {
                Ok(pv) => {
                    prop_assert!(user_ok && ts_ok);
                    prop_assert_eq!(pv.user_id, user_id);
                    prop_assert_eq!(pv.timestamp, ts);
                }
                Err(r) if !user_ok => prop_assert_eq!(r.kind, ErrorKind::InvalidUserId),
                Err(r) => {
                    prop_assert!(!ts_ok);
                    prop_assert_eq!(r.kind, ErrorKind::InvalidTimestamp);
                }
            }
        }

        #[test]
        fn any_bytes_give_an_answer_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate(&bytes);
        }
    }
}
