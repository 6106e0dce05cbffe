//! JSON request bodies: how every handler that takes one reads it, and why one is refused.
//!
//! The checks run in a fixed order, so a client always learns the first thing wrong: 415
//! unless `application/json`, 400 unless valid JSON, 422 unless an object of the expected
//! shape (serde alone would also accept an array). The refusals are [`BodyError`]s;
//! `problem` maps them to HTTP.

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
    /// serde's words, without control characters and at most 200 characters long.
    #[error("the request is not of the expected shape: {0}")]
    Shape(String),
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
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| BodyError::Syntax {
        what: match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "invalid data",
            serde_json::error::Category::Eof => "unexpected end",
        },
        line: e.line(),
        column: e.column(),
    })?;
    if !value.is_object() {
        return Err(BodyError::NotAnObject);
    }
    serde_json::from_value(value).map_err(|e| {
        BodyError::Shape(
            e.to_string()
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect(),
        )
    })
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
