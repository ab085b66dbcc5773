//! Record bytes → a valid [`Pageview`] or a [`Rejection`] naming the broken rule (SPEC.md 1).
//!
//! Parsing takes the fast path of [`simple`] for the usual flat shape and otherwise sonic_rs,
//! which types each known field as it goes. Only a record where a number came back as a float
//! is parsed again from the numbers' raw text, to tell an integer too big for 64 bits from a
//! fraction or exponent, as a reader of the text would.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use sonic_rs::LazyValue;

use crate::record::ErrorKind;

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
    // simdutf8's fast check first; the standard one only to locate the error for the message.
    let text = simdutf8::basic::from_utf8(bytes).map_err(|_| {
        let at = std::str::from_utf8(bytes).map_or_else(|e| e.valid_up_to(), |s| s.len());
        Rejection::new(
            ErrorKind::InvalidUtf8,
            format!("payload is not UTF-8: invalid byte at offset {at}"),
        )
    })?;
    let fields = match simple::parse(text) {
        Some(fields) => fields,
        None => parse_general(text)?,
    };
    let user_id = integer(fields.user_id, "user_id")?;
    if !(1..=i128::from(i64::MAX)).contains(&user_id) {
        return Err(Rejection::new(
            ErrorKind::InvalidUserId,
            format!(
                "field `user_id` must be between 1 and 9223372036854775807, got {}",
                show_int(user_id)
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
    let timestamp = integer(fields.timestamp, "timestamp")?;
    if !(i128::from(MIN_TIMESTAMP_MS)..=i128::from(MAX_TIMESTAMP_MS)).contains(&timestamp) {
        return Err(Rejection::new(
            ErrorKind::InvalidTimestamp,
            format!(
                "field `timestamp` must be epoch milliseconds between {MIN_TIMESTAMP_MS} and {MAX_TIMESTAMP_MS}, got {}",
                show_int(timestamp)
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

/// The parsing step of [`validate`] alone, without the rules: the limit the benchmark
/// compares the whole pipeline with. True when the record is a JSON object.
pub fn parses(bytes: &[u8]) -> bool {
    simdutf8::basic::from_utf8(bytes)
        .is_ok_and(|text| simple::parse(text).is_some() || parse_general(text).is_ok())
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

fn show_int(v: i128) -> String {
    if v == i128::MAX || v == -i128::MAX {
        "an integer of more than 38 digits".into()
    } else {
        v.to_string()
    }
}

fn quote(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
        None => Cow::Borrowed(s),
    }
}

/// A field's JSON value, reduced to what the rules need.
#[derive(Debug, Clone, PartialEq)]
enum Json<'a> {
    Str(Cow<'a, str>),
    /// An integer literal (no fraction, no exponent). `i128` holds every integer a rule can
    /// accept and every near miss exactly; longer literals saturate, still failing every range.
    Int(i128),
    /// sonic_rs reports a fraction, an exponent and an integer too big for 64 bits alike
    /// as a float; only the raw text tells them apart (see [`RawText`]).
    Float,
    Bool,
    Null,
    Array,
    Object,
}

impl Json<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Json::Str(_) => "a string",
            Json::Int(_) => "an integer",
            Json::Float => "a number with a fraction or exponent",
            Json::Bool => "a boolean",
            Json::Null => "null",
            Json::Array => "an array",
            Json::Object => "an object",
        }
    }
}

impl<'de> de::Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
                Ok(Json::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
                Ok(Json::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
                Ok(Json::Int(i128::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
                Ok(Json::Int(i128::from(v)))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json<'de>, E> {
                Ok(Json::Float)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Json<'de>, E> {
                Ok(Json::Bool)
            }
            fn visit_unit<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Json::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Json::Object)
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

/// How a field's value is read: typed in one pass, or from its raw text.
trait ReadValue<'de> {
    fn read<A: MapAccess<'de>>(map: &mut A) -> Result<Json<'de>, A::Error>;
}

/// The fast path: sonic_rs types the value as it parses.
struct Typed;

impl<'de> ReadValue<'de> for Typed {
    fn read<A: MapAccess<'de>>(map: &mut A) -> Result<Json<'de>, A::Error> {
        map.next_value()
    }
}

/// The exact path, for records where [`Typed`] saw a float: a number's raw text says whether
/// it is an integer literal too big for 64 bits or has a fraction or exponent.
struct RawText;

impl<'de> ReadValue<'de> for RawText {
    fn read<A: MapAccess<'de>>(map: &mut A) -> Result<Json<'de>, A::Error> {
        let raw: LazyValue<'de> = map.next_value()?;
        let text = raw.as_raw_str();
        if !text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            return match sonic_rs::from_str(text).map_err(de::Error::custom)? {
                Json::Str(s) => Ok(Json::Str(Cow::Owned(s.into_owned()))),
                Json::Int(v) => Ok(Json::Int(v)),
                Json::Float => Ok(Json::Float),
                Json::Bool => Ok(Json::Bool),
                Json::Null => Ok(Json::Null),
                Json::Array => Ok(Json::Array),
                Json::Object => Ok(Json::Object),
            };
        }
        if text.contains(['.', 'e', 'E']) {
            return Ok(Json::Float);
        }
        let (negative, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text),
        };
        let magnitude = digits
            .bytes()
            .try_fold(0i128, |acc, b| {
                acc.checked_mul(10)?.checked_add(i128::from(b - b'0'))
            })
            .unwrap_or(i128::MAX);
        Ok(Json::Int(if negative { -magnitude } else { magnitude }))
    }
}

/// The fields the rules look at; unknown fields are skipped unread.
#[derive(Debug, Default, PartialEq)]
struct Fields<'a> {
    user_id: Option<Json<'a>>,
    postcode: Option<Json<'a>>,
    webpage: Option<Json<'a>>,
    timestamp: Option<Json<'a>>,
}

impl Fields<'_> {
    fn has_ambiguous_number(&self) -> bool {
        [&self.user_id, &self.timestamp]
            .iter()
            .any(|f| matches!(f, Some(Json::Float)))
    }
}

/// Parses any JSON text with sonic_rs, exactly.
fn parse_general(text: &str) -> Result<Fields<'_>, Rejection> {
    let fields = parse_fields::<Typed>(text)?;
    if fields.has_ambiguous_number() {
        return parse_fields::<RawText>(text);
    }
    Ok(fields)
}

fn parse_fields<'a, R: ReadValue<'a>>(text: &'a str) -> Result<Fields<'a>, Rejection> {
    let mut de = sonic_rs::Deserializer::from_str(text);
    de.deserialize_map(FieldsVisitor::<R>(std::marker::PhantomData))
        .and_then(|fields| de.end().map(|()| fields))
        .map_err(|e| Rejection::new(ErrorKind::InvalidJson, json_error_message(&e, text)))
}

fn json_error_message(e: &sonic_rs::Error, text: &str) -> String {
    // sonic-rs follows a syntax error with an excerpt of the text on further lines (tabs and
    // a caret); the dead letter holds the payload itself, and its message stays one line.
    let shown = e.to_string();
    let shown = shown.lines().next().unwrap_or_default().trim_end();
    if text.trim().is_empty() {
        "payload is empty".to_string()
    } else if !e.is_syntax() && !e.is_eof() {
        format!("payload is not a JSON object: {shown}")
    } else {
        format!("payload is not valid JSON: {shown}")
    }
}

struct FieldsVisitor<R>(std::marker::PhantomData<R>);

impl<'de, R: ReadValue<'de>> Visitor<'de> for FieldsVisitor<R> {
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
            *slot = Some(R::read(&mut map)?);
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

fn present<'a>(value: Option<Json<'a>>, name: &str) -> Result<Json<'a>, Rejection> {
    value.ok_or_else(|| Rejection::new(ErrorKind::MissingField, format!("missing field `{name}`")))
}

fn wrong_type(name: &str, expected: &str, got: &Json<'_>) -> Rejection {
    Rejection::new(
        ErrorKind::WrongType,
        format!("field `{name}` must be {expected}, got {}", got.type_name()),
    )
}

fn integer(value: Option<Json<'_>>, name: &str) -> Result<i128, Rejection> {
    match present(value, name)? {
        Json::Int(v) => Ok(v),
        other => Err(wrong_type(name, "a JSON integer", &other)),
    }
}

fn string<'a>(value: Option<Json<'a>>, name: &str) -> Result<Cow<'a, str>, Rejection> {
    match present(value, name)? {
        Json::Str(s) => Ok(s),
        other => Err(wrong_type(name, "a JSON string", &other)),
    }
}

/// The fast path for the shape nearly every record has: one flat object whose keys and
/// strings hold no escapes and whose numbers are integers of at most 18 digits. It accepts
/// only JSON it reads exactly as [`parse_general`] does and answers `None` for anything else,
/// malformed input included, so the general parser has the last word on every error.
mod simple {
    use std::borrow::Cow;

    use super::{Fields, Json};

    pub fn parse(text: &str) -> Option<Fields<'_>> {
        let mut s = Scanner {
            str: text,
            text: text.as_bytes(),
            at: 0,
        };
        let mut fields = Fields::default();
        s.skip_ws();
        s.expect(b'{')?;
        s.skip_ws();
        if s.peek() == Some(b'}') {
            s.at += 1;
        } else {
            loop {
                let slot = match s.key()? {
                    Some(Known::UserId) => &mut fields.user_id,
                    Some(Known::Postcode) => &mut fields.postcode,
                    Some(Known::Webpage) => &mut fields.webpage,
                    Some(Known::Timestamp) => &mut fields.timestamp,
                    None => &mut None,
                };
                s.skip_ws();
                s.expect(b':')?;
                s.skip_ws();
                let value = match s.peek()? {
                    b'"' => Json::Str(Cow::Borrowed(s.string()?)),
                    _ => Json::Int(i128::from(s.integer()?)),
                };
                if slot.replace(value).is_some() {
                    return None;
                }
                s.skip_ws();
                match s.next()? {
                    b',' => s.skip_ws(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        s.skip_ws();
        (s.at == text.len()).then_some(fields)
    }

    enum Known {
        UserId,
        Postcode,
        Webpage,
        Timestamp,
    }

    /// Eight copies of a byte, for testing eight bytes at once.
    const fn splat(b: u8) -> u64 {
        u64::from_ne_bytes([b; 8])
    }

    /// True when any byte of `word` is `"`, `\\` or a control character (below 0x20):
    /// the bytes that end or complicate a JSON string. Exact, with no false positives.
    pub(super) fn has_special(word: u64) -> bool {
        const LOW7: u64 = splat(0x7f);
        const HIGH: u64 = splat(0x80);
        let zero_byte = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
        let below_0x20 = !(((word & LOW7) + splat(0x80 - 0x20)) | word | LOW7);
        (zero_byte(word ^ splat(b'"')) | zero_byte(word ^ splat(b'\\')) | below_0x20) & HIGH != 0
    }

    struct Scanner<'a> {
        str: &'a str,
        text: &'a [u8],
        at: usize,
    }

    impl<'a> Scanner<'a> {
        fn peek(&self) -> Option<u8> {
            self.text.get(self.at).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let b = self.peek()?;
            self.at += 1;
            Some(b)
        }

        fn expect(&mut self, want: u8) -> Option<()> {
            (self.next()? == want).then_some(())
        }

        fn skip_ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.at += 1;
            }
        }

        /// A string without escapes or control characters. Both quotes are ASCII, so the
        /// text between them is whole characters of the (valid UTF-8) input.
        /// A key: one of the known ones, matched in place with fixed-size compares (each
        /// with its closing quote, so a longer key never matches), or any other plain string.
        fn key(&mut self) -> Option<Option<Known>> {
            let rest = self.text.get(self.at + 1..)?;
            let known = match (self.text[self.at], rest.first()) {
                (b'"', Some(b'u')) if rest.first_chunk() == Some(b"user_id\"") => {
                    Some((Known::UserId, 8))
                }
                (b'"', Some(b'p')) if rest.first_chunk() == Some(b"postcode\"") => {
                    Some((Known::Postcode, 9))
                }
                (b'"', Some(b'w')) if rest.first_chunk() == Some(b"webpage\"") => {
                    Some((Known::Webpage, 8))
                }
                (b'"', Some(b't')) if rest.first_chunk() == Some(b"timestamp\"") => {
                    Some((Known::Timestamp, 10))
                }
                _ => None,
            };
            match known {
                Some((key, len)) => {
                    self.at += 1 + len;
                    Some(Some(key))
                }
                None => self.string().map(|_| None),
            }
        }

        fn string(&mut self) -> Option<&'a str> {
            self.expect(b'"')?;
            let start = self.at;
            let mut len = 0;
            // Eight bytes at a time while none of them can end the string; strings here are
            // short, where this beats a SIMD search's set-up.
            while let Some(chunk) = self.text.get(start + len..start + len + 8) {
                let word = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
                if has_special(word) {
                    break;
                }
                len += 8;
            }
            len += self.text[start + len..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            if self.text[start + len] != b'"' {
                return None;
            }
            self.at = start + len + 1;
            self.str.get(start..start + len)
        }

        /// `-?(0|[1-9][0-9]*)` of at most 18 digits, followed by a delimiter.
        fn integer(&mut self) -> Option<i64> {
            let negative = self.peek() == Some(b'-');
            if negative {
                self.at += 1;
            }
            let start = self.at;
            let mut value: i64 = 0;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                if self.at - start == 18 {
                    return None;
                }
                value = value * 10 + i64::from(d - b'0');
                self.at += 1;
            }
            let digits = self.at - start;
            if digits == 0 || (digits > 1 && self.text[start] == b'0') {
                return None;
            }
            if !matches!(
                self.peek(),
                Some(b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                return None;
            }
            Some(if negative { -value } else { value })
        }
    }
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
        let msg = validate(b"{\"user_id\": 1, \"postcode\": \"SW")
            .unwrap_err()
            .message;
        assert_eq!(
            msg,
            "payload is not valid JSON: EOF while parsing at line 1 column 30"
        );
        let msg = validate(b"[1, 2]").unwrap_err().message;
        assert!(
            msg.starts_with("payload is not a JSON object: invalid type"),
            "{msg}"
        );
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

    /// JSON-ish text near the shape the fast path takes, with the variations that must
    /// send it to the general parser.
    fn near_json() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("user_id".to_string()),
            Just("postcode".to_string()),
            Just("webpage".to_string()),
            Just("timestamp".to_string()),
            "[a-z_\\\\\"]{0,6}",
        ];
        let value = prop_oneof![
            "-?[0-9]{1,21}",
            "-?[0-9]{1,3}[.eE][0-9]{0,3}",
            "\"[A-Za-z0-9:/. \\\\n\"é\t]{0,12}\"",
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[1,\"a\"]".to_string()),
            Just("{\"a\":1}".to_string()),
        ];
        let ws = "[ \t\n\r]{0,2}";
        let member = (key, ws, value).prop_map(|(k, w, v)| format!("\"{k}\"{w}:{w}{v}"));
        (
            proptest::collection::vec(member, 0..6),
            ws,
            "[,}\\]x ]{0,1}",
        )
            .prop_map(|(members, w, tail)| format!("{w}{{{}}}{tail}{w}", members.join(",")))
    }

    #[test]
    fn the_fast_path_reads_near_miss_keys_as_the_general_parser_does() {
        for text in [
            r#"{"user_idx": 5, "user_id": 6}"#,
            r#"{"user_id": 5, "user_i": 6, "postcodes": "A", "webpag": "x", "timestamp_": 1}"#,
            r#"{"user_id" : 5 , "timestamp":1}"#,
            r#"{"us\u0065r_id": 5}"#,
            r#"{"user_id": 5, "user_id": 5}"#,
            r#"{"webpage": "0123456789abcdef\"", "postcode": "0123456789abcdefg"}"#,
            r#"{"user_id"#,
            r#"{"#,
        ] {
            if let Some(fast) = simple::parse(text) {
                assert_eq!(Ok(fast), parse_general(text), "{text}");
            }
        }
        assert!(simple::parse(r#"{"user_idx": 5, "user_id": 6}"#).is_some());
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_general_parser(text in near_json()) {
            let general = parse_general(&text);
            if let Some(fast) = simple::parse(&text) {
                prop_assert_eq!(Ok(fast), general);
            }
        }

        #[test]
        fn the_fast_path_takes_the_usual_shape(user_id in 1i64..1_000_000, ts in MIN_TIMESTAMP_MS..MAX_TIMESTAMP_MS) {
            let line = event(&user_id.to_string(), r#""SW19""#, OK_URL, &ts.to_string());
            prop_assert!(simple::parse(&line).is_some());
        }

        #[test]
        fn the_word_test_finds_exactly_the_special_bytes(bytes in any::<[u8; 8]>()) {
            let want = bytes.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(simple::has_special(u64::from_ne_bytes(bytes)), want);
        }

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

        #[test]
        fn every_message_is_one_printable_line(text in near_json()) {
            if let Err(r) = validate(text.as_bytes()) {
                prop_assert!(!r.message.chars().any(char::is_control), "{:?}", r.message);
            }
        }
    }
}
