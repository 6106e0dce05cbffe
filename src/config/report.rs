//! Describing TOML errors without echoing TOML. The toml crate's `Display` of an error
//! quotes the offending source line, and serde's type errors quote the value; in jwksd's
//! configuration either may be a secret (an unterminated `admin_token = "...`). This module
//! owns the rule: a message names the origin (file or variable), the line and column, the
//! key where it is known, and what is wrong, and never a byte of the source text's values.

use std::ops::Range;

/// The most characters of a value a message may share with the source text it describes;
/// anything longer is taken to be an echo of that value.
const MAX_SHARED: usize = 7;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The dotted key whose line holds byte `offset` of `text`, when a line-based reading can
/// tell it for sure: the text before the line parses as TOML (so the line starts a new
/// statement rather than continuing a multi-line string), and the line is `key = ...` or a
/// `[table]` header. The key is joined to the last header above it.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let prefix = &text[..line_start];
    if prefix.parse::<toml::Table>().is_err() {
        return None;
    }
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    if let Some(header) = header_name(line) {
        return Some(header);
    }
    let (key, _) = line.split_once('=')?;
    let key = plain_key(key)?;
    let table = prefix.lines().rev().find_map(|l| header_name(l.trim()));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}

/// `server` for `[server]`, `a.b` for `[a.b]` or `[[a.b]]`, `a."b c"` stays as written.
fn header_name(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.trim_start_matches('[');
    let (inner, _) = inner.split_once(']')?;
    plain_key(inner)
}

/// A key as written, if it is made only of what keys are made of (bare or quoted parts
/// joined by dots); anything else is not shown.
fn plain_key(key: &str) -> Option<String> {
    let key = key.trim();
    let ok = !key.is_empty()
        && key.len() <= 200
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
        && !key.split('.').any(looks_like_secret);
    ok.then(|| key.replace(' ', ""))
}

/// A "key" that is really a secret pasted on a line of its own (a base64 master key ends in
/// `=`, so it parses as `key =`): long, with digits and both cases. Configuration keys and
/// section names are never like that.
fn looks_like_secret(part: &str) -> bool {
    let part = part.trim_matches(|c| c == '"' || c == '\'' || c == ' ');
    part.len() >= 16
        && part.chars().any(|c| c.is_ascii_digit())
        && part.chars().any(|c| c.is_ascii_uppercase())
        && part.chars().any(|c| c.is_ascii_lowercase())
}

/// The values of `text` (everything right of the first `=` of a line, and every line
/// that is neither a header, a comment nor a `key =` line, since it may be inside a
/// multi-line string), for checking that a message does not echo any of them.
pub fn values_of(text: &str) -> String {
    let mut values = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || header_name(trimmed.trim_end()).is_some() {
            continue;
        }
        values.push_str(line.split_once('=').map_or(line, |(_, value)| value));
        values.push('\n');
    }
    values
}

/// `message` made safe to print: serde's quotes of the value removed ("invalid type:
/// string \"…\", expected a u16" becomes "wrong type: expected a u16, found a string"), and
/// replaced as a whole by a generic sentence if it still shares more than a few characters
/// with `values` (the values of the source it is about).
pub fn safe_message(message: &str, values: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    let message = if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest
            .split_once(", expected ")
            .unwrap_or((rest, "another type"));
        let found = found.split(['`', '"', '\'']).next().unwrap_or("").trim();
        format!(
            "wrong type: expected {}, found {}",
            expected_type(expected),
            with_article(found)
        )
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        let expected = rest
            .split_once(", expected ")
            .map_or("another value", |(_, e)| e);
        format!("invalid value, expected {}", expected_type(expected))
    } else if message.starts_with("data did not match any variant") {
        // An untagged enum, named by its Rust type: jwksd's scope lists, or its
        // number-or-string fields.
        if message.ends_with("Scopes") {
            "wrong type: expected a string of space-separated scopes or a list of strings"
                .to_owned()
        } else {
            "wrong type: expected a number or a string".to_owned()
        }
    } else {
        message
    };
    if echoes(&message, values) {
        "not valid here (the details are withheld: they would quote the value)".to_owned()
    } else {
        message
    }
}

/// serde names a section by its Rust type (`struct RawClient`); users know it as a table.
fn expected_type(expected: &str) -> String {
    if expected.starts_with("struct ") || expected == "a map" {
        "a table (a [section] or { ... })".to_owned()
    } else {
        expected.to_owned()
    }
}

fn with_article(found: &str) -> String {
    match found.chars().next() {
        None => "another type".to_owned(),
        Some(c) if "aeiou".contains(c) => format!("an {found}"),
        Some(_) => format!("a {found}"),
    }
}

/// Whether `message` echoes `values`: contains a run of more than [`MAX_SHARED`]
/// characters that also occurs in them.
pub fn echoes(message: &str, values: &str) -> bool {
    let chars: Vec<char> = message.chars().collect();
    chars.windows(MAX_SHARED + 1).any(|window| {
        let fragment: String = window.iter().collect();
        values.contains(&fragment)
    })
}

/// A syntax error found at `span` of `text`, read from `origin` (a file name or a
/// variable): "ORIGIN: line L, column C (key K): not valid TOML: WHAT".
pub fn syntax_error(origin: &str, text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let what = safe_message(message, &values_of(text));
    match span {
        Some(span) => {
            let (line, column) = position(text, span.start);
            let key = key_at(text, span.start)
                .map(|k| format!(" (in {k})"))
                .unwrap_or_default();
            format!(
                "{origin}: line {line}, column {column}{key}: not valid TOML: {what}; check the \
                 quotes and escapes there (the line is not shown, it may hold a secret)"
            )
        }
        None => format!("{origin}: not valid TOML: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_pasted_alone_on_a_line_is_never_shown_as_a_key() {
        let text = "[server]\nQ2hhbmdlTWU0MnNlY3JldGtleTEyMw==\n";
        assert_eq!(key_at(text, text.find("Q2h").unwrap()), None);
        let text = "[server]\npublic_listen = 1\n";
        assert_eq!(
            key_at(text, text.find("public").unwrap()).as_deref(),
            Some("server.public_listen")
        );
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, text.find('"').unwrap()), (2, 6));
        assert_eq!(position(text, text.len() + 5), (3, 1));
    }

    #[test]
    fn keys_are_found_only_where_a_line_starts_a_statement() {
        let text = "[server]\nadmin_token = \"abc\n";
        assert_eq!(
            key_at(text, text.len() - 1).as_deref(),
            Some("server.admin_token")
        );
        let text = "[clients.ecw]\nscope = \"\"\"\nsecret = 1\n";
        assert_eq!(
            key_at(text, text.len() - 1),
            None,
            "inside a multi-line string"
        );
        assert_eq!(key_at("x = 1\n[a.b]\n", 7).as_deref(), Some("a.b"));
        assert_eq!(
            key_at("[\"abc-def\n", 3),
            None,
            "an unclosed header is no header"
        );
    }

    #[test]
    fn serde_messages_lose_the_value_they_quote() {
        let safe = safe_message(
            "invalid type: string \"hunter2hunter2\", expected struct RawClient",
            "",
        );
        assert_eq!(
            safe,
            "wrong type: expected a table (a [section] or { ... }), found a string"
        );
        let safe = safe_message("invalid type: integer `4500`, expected a string", "");
        assert_eq!(safe, "wrong type: expected a string, found an integer");
        let leaky = safe_message("unexpected `hunter2hunter2`", " \"hunter2hunter2\"\n");
        assert!(!leaky.contains("hunter2"), "{leaky}");
    }
}
