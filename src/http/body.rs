//! JSON request bodies: how every handler that takes one reads it, and why one is refused.
//!
//! The checks run in a fixed order, so a client always learns the first thing wrong: 415
//! unless `application/json`, 400 unless valid JSON naming each member once, 422 unless an object of the expected
//! shape (serde alone would also accept an array). The refusals are [`BodyError`]s;
//! `problem` maps them to HTTP. A body of the wrong shape is described in plain words
//! naming the member (`` `lifetime` must be a whole number, not a string``), never in
//! serde's (`invalid type: string "60s", expected i64`), which also quotes the client's text.

use actix_web::http::header;
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;

/// A request body refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("send the request body as application/json")]
    NotJson,
    /// `what` and the position come from serde_json; the client's own text is not quoted.
    #[error("the body is not valid JSON ({what} at line {line} column {column})")]
    Syntax {
        what: &'static str,
        line: usize,
        column: usize,
    },
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// An object names this member more than once (the client's member name, trimmed).
    #[error("the body names `{0}` more than once; send each member once")]
    DuplicateMember(String),
    /// What is wrong, in plain words naming the member ([`plain_words`]).
    #[error("{0}")]
    Shape(String),
    /// A query string parameter this route cannot use, in plain words ([`parse_query`]).
    #[error("{0}")]
    Query(String),
    /// Larger than the route reads (checked before parsing).
    #[error("{what} request bodies are at most {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
}

/// Reads a JSON request body of type `T`.
pub fn parse_json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, BodyError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(BodyError::NotJson);
    }
    let value = match serde_json::from_slice::<UniqueMembers>(body) {
        Ok(UniqueMembers(value)) => Ok(value),
        Err(e) => match e.to_string().strip_prefix(DUPLICATE_MEMBER) {
            Some(rest) => {
                let member = rest.split(" at line ").next().unwrap_or(rest);
                let member: String = member
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect();
                return Err(BodyError::DuplicateMember(member));
            }
            None => Err(e),
        },
    }
    .map_err(|e| BodyError::Syntax {
        what: match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax
                if e.to_string().starts_with("recursion limit exceeded") =>
            {
                "nested more than 128 levels deep"
            }
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "invalid data",
            serde_json::error::Category::Eof => "unexpected end",
        },
        line: e.line(),
        column: e.column(),
    })?;
    let serde_json::Value::Object(object) = value else {
        return Err(BodyError::NotAnObject);
    };
    serde_json::from_value(serde_json::Value::Object(object.clone()))
        .map_err(|e| BodyError::Shape(plain_words::<T>(&object, &e)))
}

/// Reads a query string as a `T`, refusing in plain words that name the parameter (never
/// serde's `Query deserialize error: invalid digit found in string`).
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, BodyError> {
    let whole = match actix_web::web::Query::<T>::from_query(query) {
        Ok(parsed) => return Ok(parsed.into_inner()),
        Err(actix_web::error::QueryPayloadError::Deserialize(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    if let Some(name) = quoted_after(&whole, "unknown field ") {
        let accepted: Vec<&str> = whole.split('`').skip(3).step_by(2).collect();
        return Err(BodyError::Query(format!(
            "`{}` is not a parameter of this request; it takes {}",
            printable(name),
            accepted.join(", ")
        )));
    }
    if let Some(name) = quoted_after(&whole, "duplicate field ") {
        return Err(BodyError::Query(format!(
            "`{}` is given more than once; give each parameter once",
            printable(name)
        )));
    }
    // serde_urlencoded names no parameter in a value error: read each alone, and the one
    // refused for something other than a missing parameter is the one at fault.
    let culprit = url::form_urlencoded::parse(query.as_bytes()).find_map(|(name, value)| {
        let alone: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(&name, &value)
            .finish();
        match actix_web::web::Query::<T>::from_query(&alone) {
            Err(e) if !e.to_string().contains("missing field") => {
                Some((name.into_owned(), e.to_string()))
            }
            _ => None,
        }
    });
    Err(BodyError::Query(match culprit {
        Some((name, error)) => {
            let expected = if error.contains("`true` or `false`") {
                "true or false"
            } else if error.contains("digit") || error.contains("number") {
                "a whole number"
            } else {
                "a value of the documented kind"
            };
            format!("`{}` must be {expected}", printable(&name))
        }
        None => "the query string could not be read".to_owned(),
    }))
}

/// A client-chosen name as it may appear in a message: no control characters, at most 64.
fn printable(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The start of the message [`UniqueMembers`] refuses a repeated member with.
const DUPLICATE_MEMBER: &str = "duplicate member: ";

/// A JSON value in which no object names a member twice. serde_json keeps the last of two
/// (a proxy, a WAF or a log reader may keep the first), so a body with one would mean
/// different things to different readers.
struct UniqueMembers(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueMembersVisitor)
            .map(UniqueMembers)
    }
}

struct UniqueMembersVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueMembersVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueMembers(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(member) = map.next_key::<String>()? {
            if object.contains_key(&member) {
                return Err(serde::de::Error::custom(format!(
                    "{DUPLICATE_MEMBER}{member}"
                )));
            }
            let UniqueMembers(value) = map.next_value()?;
            object.insert(member, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// `error` (serde's refusal of `object` as a `T`) in plain words that name the member it is
/// about. serde_json names no member in a type error, so each member is read alone: the
/// one whose refusal is not "missing field" is the one at fault.
fn plain_words<T: DeserializeOwned>(
    object: &serde_json::Map<String, serde_json::Value>,
    error: &serde_json::Error,
) -> String {
    let whole = error.to_string();
    if let Some(member) = quoted_after(&whole, "missing field ") {
        return format!("`{member}` is required");
    }
    if let Some(member) = quoted_after(&whole, "unknown field ") {
        let accepted: Vec<&str> = whole.split('`').skip(3).step_by(2).collect();
        return if accepted.is_empty() {
            format!("`{member}` is not a member of this request")
        } else {
            format!(
                "`{member}` is not a member of this request; it takes {}",
                accepted.join(", ")
            )
        };
    }
    let culprit = object.iter().find_map(|(member, value)| {
        let alone = serde_json::Map::from_iter([(member.clone(), value.clone())]);
        match serde_json::from_value::<T>(serde_json::Value::Object(alone)) {
            Err(e) if !e.to_string().starts_with("missing field") => Some((member, e)),
            _ => None,
        }
    });
    let Some((member, e)) = culprit else {
        return "the request's members are not of the expected types".to_owned();
    };
    let message = e.to_string();
    let expected = message
        .split_once(", expected ")
        .map(|(_, expected)| expected.split(" at line ").next().unwrap_or(expected));
    let found = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split([' ', ',']).next());
    let member: String = member
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    match (expected.map(expected_words), found.map(found_words)) {
        (Some(expected), Some(found)) => format!("`{member}` must be {expected}, not {found}"),
        (Some(expected), None) => format!("`{member}` must be {expected}"),
        _ => format!("`{member}` is not valid here"),
    }
}

/// The text between the first pair of backquotes after `prefix`, if `text` starts with it.
fn quoted_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.strip_prefix(prefix)?.split('`').nth(1)
}

/// serde's name of what it expected, as a person says it.
fn expected_words(expected: &str) -> &'static str {
    match expected.trim() {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128"
        | "usize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" => "a string",
        "a sequence" => "a list",
        other if other.starts_with("struct ") || other == "a map" => "an object",
        _ => "of another type",
    }
}

/// serde's name of what it found (the word before the quoted value, which is not shown).
fn found_words(found: &str) -> &'static str {
    match found {
        "string" => "a string",
        "integer" => "a whole number",
        "floating" => "a number with a fraction",
        "boolean" => "true or false",
        "sequence" => "a list",
        "map" => "an object",
        "null" | "unit" => "null",
        _ => "that",
    }
}

/// Reads an optional JSON body of at most `limit` bytes: empty (or only whitespace) is
/// `T::default()`, anything else is read as [`parse_json_body`] reads it. `what` names the
/// API in the refusal (`admin`).
pub fn optional_json<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
    what: &'static str,
    limit: usize,
) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if body.len() > limit {
        return Err(BodyError::TooLarge { what, limit });
    }
    parse_json_body(req, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct Request {
        client_id: String,
        lifetime: Option<i64>,
        flags: Option<Vec<String>>,
    }

    fn words(body: &str) -> String {
        let serde_json::Value::Object(object) = serde_json::from_str(body).unwrap() else {
            panic!("not an object")
        };
        let error = serde_json::from_value::<Request>(serde_json::Value::Object(object.clone()))
            .unwrap_err();
        plain_words::<Request>(&object, &error)
    }

    #[test]
    fn a_wrong_shape_is_said_in_plain_words_naming_the_member() {
        assert_eq!(
            words(r#"{"client_id": "c", "lifetime": "60s"}"#),
            "`lifetime` must be a whole number, not a string"
        );
        assert_eq!(
            words(r#"{"lifetime": 60, "client_id": 7}"#),
            "`client_id` must be a string, not a whole number"
        );
        assert_eq!(
            words(r#"{"client_id": "c", "flags": "a"}"#),
            "`flags` must be a list, not a string"
        );
        assert_eq!(words(r#"{"lifetime": 60}"#), "`client_id` is required");
        assert_eq!(
            words(r#"{"client_id": "c", "iss": "x"}"#),
            "`iss` is not a member of this request; it takes client_id, lifetime, flags"
        );
        let quoted = words(r#"{"client_id": "c", "lifetime": "hunter2hunter2"}"#);
        assert!(!quoted.contains("hunter2"), "{quoted}");
    }

    fn json_request() -> HttpRequest {
        actix_web::test::TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .to_http_request()
    }

    /// serde_json keeps the last of two equal members, a proxy or a log reader may keep the
    /// first: a signing request must not mean two things.
    #[test]
    fn a_member_named_twice_is_refused_at_any_depth() {
        for body in [
            r#"{"client_id": "nope", "client_id": "ecw-prod"}"#,
            r#"{"client_id": "c", "flags": [{"a": 1, "a": 2}]}"#,
        ] {
            match parse_json_body::<serde_json::Value>(&json_request(), body.as_bytes()) {
                Err(BodyError::DuplicateMember(member)) => {
                    assert!(member == "client_id" || member == "a", "{member}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(2000), "]".repeat(2000));
        match parse_json_body::<serde_json::Value>(&json_request(), deep.as_bytes()) {
            Err(e @ BodyError::Syntax { .. }) => {
                assert!(
                    e.to_string().contains("nested more than 128 levels deep"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        let fine: serde_json::Value = parse_json_body(
            &json_request(),
            br#"{"client_id": "c", "n": [1, -2, 3.5, true, null, {"x": "y"}]}"#,
        )
        .unwrap();
        assert_eq!(fine["n"][2], 3.5);
        assert_eq!(fine["n"][1], -2);
    }
}
