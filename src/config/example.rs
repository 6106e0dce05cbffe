//! Keeps `jwksd.example.toml` honest: it loads through the real loader, and it documents
//! every key the loader accepts. The accepted keys are read from the raw structs
//! themselves (serde's `deny_unknown_fields` refusal lists them), so a field added without
//! a line in the example fails here.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::{clients, keysets, server, Config, RawConfig};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jwksd.example.toml");

/// The keys `T` accepts, as its refusal of an unknown key lists them ("unknown field
/// `x`, expected one of `a`, `b`", or "expected `a` or `b`").
fn accepted_keys<T: DeserializeOwned>() -> Vec<String> {
    let refusal = match toml::from_str::<T>("zz_not_a_key = 1") {
        Ok(_) => panic!("an unknown key was accepted: deny_unknown_fields is missing"),
        Err(e) => e.message().to_owned(),
    };
    let (_, expected) = refusal
        .split_once("expected")
        .unwrap_or_else(|| panic!("unexpected refusal: {refusal}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The example's text from `header` to the next section header.
fn section<'a>(text: &'a str, header: &str) -> &'a str {
    let start = text
        .find(&format!("\n{header}\n"))
        .unwrap_or_else(|| panic!("the example has no {header} section"));
    let rest = &text[start + header.len() + 2..];
    let end = rest.find("\n[").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_example_configuration_loads_without_problems_or_warnings() {
    let config = Config::load(Some(Path::new(EXAMPLE)), Vec::new())
        .unwrap_or_else(|e| panic!("jwksd.example.toml does not load: {e}"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.default_keyset().is_some());
    assert!(config.access.client("example").is_some());
}

#[test]
fn every_key_the_configuration_accepts_is_in_the_example_with_its_variable() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let sections = [
        (
            "[server]",
            "JWKSD_SERVER__",
            accepted_keys::<server::RawServer>(),
        ),
        (
            "[keysets.default]",
            "JWKSD_KEYSETS__<NAME>__",
            accepted_keys::<keysets::RawKeyset>(),
        ),
        (
            "[clients.example]",
            "JWKSD_CLIENTS__<NAME>__",
            accepted_keys::<clients::RawClient>(),
        ),
        (
            "[callers.example]",
            "JWKSD_CALLERS__<NAME>__",
            accepted_keys::<clients::RawCaller>(),
        ),
    ];
    let top = accepted_keys::<RawConfig>();
    assert_eq!(top, ["server", "keysets", "clients", "callers"]);
    for (header, prefix, keys) in sections {
        assert!(keys.len() >= 4, "{header}: {keys:?}");
        let body = section(&text, header);
        for key in keys {
            // Set, or shown commented out when it has no default or is a secret.
            let line = body.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.starts_with(&format!("{key} ="))
            });
            assert!(line, "{header} {key} is not in jwksd.example.toml");
            let variable = format!("Env: {prefix}{}", key.to_ascii_uppercase());
            assert!(
                body.contains(&variable),
                "{header} {key}: the example does not name {variable}"
            );
        }
    }
}
