//! From the merged table to each section's raw struct, one key at a time, so that an
//! unknown key or a value of the wrong type is one problem among all the others instead of
//! the end of the run (serde stops at its first error), and so that validation knows which
//! keys were refused ([`Refused`]) and adds no knock-on problem about them ("client_id is
//! required" after `client_id = 5` was refused). Unknown keys get a "did you mean".

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use super::env::{LIST_KEYS, SECRET_KEYS};
use super::origin::Finding;
use super::report;

/// Dotted keys (`clients.ecw.client_id`) whose values were refused for their type; the
/// section's rules treat them as given but unusable, never as missing.
#[derive(Default)]
pub(super) struct Refused(BTreeSet<String>);

impl Refused {
    /// Whether `section.field` was refused.
    pub(super) fn has(&self, section: &str, field: &str) -> bool {
        self.0.contains(&format!("{section}.{field}"))
    }
}

/// The top-level table's sections: each named one is a table of tables, `server` a table.
/// Keys that are no section are refused (with a suggestion) and removed.
pub(super) fn top_level(table: &mut toml::Table, findings: &mut Vec<Finding>) {
    const SECTIONS: [&str; 4] = ["server", "keysets", "clients", "callers"];
    table.retain(|name, _| {
        let known = SECTIONS.contains(&name);
        if !known {
            findings.push(Finding {
                path: Some(name.to_owned()),
                at_key: true,
                string_for_list: false,
                text: format!(
                    "`{name}` is not a known section{}",
                    did_you_mean(name, &SECTIONS)
                ),
            });
        }
        known
    });
}

/// The tables of a named section (`keysets`, `clients`, `callers`): each entry must be a
/// table; other entries are refused and removed.
pub(super) fn named_tables(
    kind: &str,
    value: Option<toml::Value>,
    findings: &mut Vec<Finding>,
) -> Vec<(String, toml::Value)> {
    let entries = match value {
        None => return Vec::new(),
        Some(toml::Value::Table(table)) => table,
        Some(other) => {
            findings.push(not_a_table(kind, &other));
            return Vec::new();
        }
    };
    entries
        .into_iter()
        .filter_map(|(name, value)| match value {
            toml::Value::Table(_) => Some((name, value)),
            other => {
                findings.push(not_a_table(&format!("{kind}.{name}"), &other));
                None
            }
        })
        .collect()
}

fn not_a_table(path: &str, value: &toml::Value) -> Finding {
    Finding {
        path: Some(path.to_owned()),
        at_key: false,
        string_for_list: false,
        text: format!(
            "{path}: wrong type: expected a table (a [section] or {{ ... }}), found {}",
            type_name(value)
        ),
    }
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Section `path` (`clients.ecw`) as `T`, key by key: an unknown key or a value `T` refuses
/// becomes a finding, is left out, and (a value) is added to `refused`; the rest is read.
pub(super) fn section<T: DeserializeOwned + Default>(
    path: &str,
    value: Option<toml::Value>,
    findings: &mut Vec<Finding>,
    refused: &mut Refused,
) -> T {
    let table = match value {
        None => return T::default(),
        Some(toml::Value::Table(table)) => table,
        Some(other) => {
            findings.push(not_a_table(path, &other));
            return T::default();
        }
    };
    let mut usable = toml::Table::new();
    for (key, value) in table {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        let Err(e) = toml::Value::Table(alone).try_into::<T>() else {
            usable.insert(key, value);
            continue;
        };
        let message = e.message().to_owned();
        let key_path = format!("{path}.{key}");
        if let Some(rest) = message.strip_prefix("unknown field") {
            let accepted: Vec<&str> = rest.split('`').skip(3).step_by(2).collect();
            // The key meant is given, though misspelt: no "is required" for it.
            if let Some(meant) = closest(&key, &accepted) {
                refused.0.insert(format!("{path}.{meant}"));
            }
            findings.push(Finding {
                path: Some(key_path.clone()),
                at_key: true,
                string_for_list: false,
                text: format!(
                    "{key_path} is not a known key{}",
                    did_you_mean(&key, &accepted)
                ),
            });
            continue;
        }
        let what = if SECRET_KEYS.contains(&key.as_str()) {
            "wrong type; write it as a quoted string".to_owned()
        } else {
            report::safe_message(&message, &value.to_string())
        };
        findings.push(Finding {
            path: Some(key_path.clone()),
            at_key: false,
            string_for_list: LIST_KEYS.contains(&key.as_str()) && value.is_str(),
            text: format!("{key_path}: {what}"),
        });
        refused.0.insert(key_path);
    }
    match toml::Value::Table(usable).try_into::<T>() {
        Ok(raw) => raw,
        // Each key passed alone; together they cannot fail, but say so if they do.
        Err(e) => {
            findings.push(Finding {
                path: Some(path.to_owned()),
                at_key: false,
                string_for_list: false,
                text: format!("{path}: {}", report::safe_message(e.message(), "")),
            });
            T::default()
        }
    }
}

/// The keys section type `T` accepts (`public_url`, ...), as its unknown-key error lists
/// them.
pub(super) fn keys_of<T: DeserializeOwned>() -> Vec<String> {
    let probe = toml::Table::from_iter([("\u{1}".to_owned(), toml::Value::Boolean(true))]);
    match toml::Value::Table(probe).try_into::<T>() {
        Ok(_) => Vec::new(),
        Err(e) => e
            .message()
            .strip_prefix("unknown field")
            .map(|rest| {
                rest.split('`')
                    .skip(3)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `; did you mean `x`?` for the accepted word closest to `word`, when it is close enough
/// to be a typo (a third of its letters, at least one); else the accepted words.
fn did_you_mean(word: &str, accepted: &[&str]) -> String {
    match closest(word, accepted) {
        Some(candidate) => format!("; did you mean `{candidate}`?"),
        None if accepted.is_empty() => String::new(),
        None => format!("; it takes {}", accepted.join(", ")),
    }
}

/// The accepted word `word` is a typo of, if any.
fn closest<'a>(word: &str, accepted: &[&'a str]) -> Option<&'a str> {
    accepted
        .iter()
        .map(|candidate| (edit_distance(word, candidate), *candidate))
        .min()
        .filter(|(distance, _)| *distance <= (word.chars().count() / 3).max(1))
        .map(|(_, candidate)| candidate)
}

/// Edits (insert, delete, substitute, swap two neighbours) between `a` and `b`: the
/// optimal-string-alignment distance, which counts `endpiont` for `endpoint` as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_is_one_edit_and_far_words_suggest_nothing() {
        assert_eq!(edit_distance("token_endpiont", "token_endpoint"), 1);
        assert_eq!(edit_distance("sever", "server"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            did_you_mean("token_endpiont", &["client_id", "token_endpoint"]),
            "; did you mean `token_endpoint`?"
        );
        assert_eq!(
            did_you_mean("colour", &["alg", "rsa_bits"]),
            "; it takes alg, rsa_bits"
        );
    }
}
