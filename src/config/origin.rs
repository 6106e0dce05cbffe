//! Where each configured value came from, and every problem prefixed with that place in the
//! user's terms: `FILE: line L, column C: ...` for what the file says, `VARIABLE=value: ...`
//! for what the environment says, never a line of the merged document jwksd validates.
//!
//! The file's places come from a span-keeping parse of the user's own text ([`FileIndex`],
//! `toml_edit`), made before anything is merged; the environment's from the overlay's
//! [`EnvSource`]s. A problem names the dotted key it is about (`keysets.default.prepublish
//! = ...`), and [`Places`] finds the most specific place that key has. This module also
//! owns what [`Provenance`] keeps for `check-config`: where each value came from, without
//! any value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::env::{EnvSource, NAMED_SECTIONS, SECRET_KEYS};
use super::report;
use super::values;

/// A problem found by the loader, about one dotted key.
pub(super) struct Finding {
    /// The dotted key (`clients.ecw.token_endpoint`); `None` when the text names its key
    /// itself (the problem's first word, found by [`Places::describe`]).
    pub(super) path: Option<String>,
    /// Whether the key itself is the problem (an unknown key): its place is the key's,
    /// not its value's.
    pub(super) at_key: bool,
    /// Whether the value is a string where a list belongs (`trusted_proxies = "10.0.0.0/8"`):
    /// from a variable, the problem then shows the variable written as a list.
    pub(super) string_for_list: bool,
    pub(super) text: String,
}

impl Finding {
    /// A problem whose text starts with the key it is about.
    pub(super) fn text(text: String) -> Self {
        Finding {
            path: None,
            at_key: false,
            string_for_list: false,
            text,
        }
    }
}

/// 1-based line and column of a key and of its value (of a table: its header) in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spot {
    key: (usize, usize),
    value: (usize, usize),
}

/// Every dotted key of the user's file with its place in that file.
#[derive(Clone, Debug, Default)]
pub(super) struct FileIndex {
    /// The file as the user named it (`jwksd.toml`, `/etc/jwksd/jwksd.toml`).
    name: String,
    spots: BTreeMap<String, Spot>,
}

impl FileIndex {
    /// Indexes `text`, read from `path`. Text that is not TOML indexes nothing (its syntax
    /// error is reported by position before this is asked).
    pub(super) fn new(path: &Path, text: &str) -> Self {
        let mut index = FileIndex {
            name: path.display().to_string(),
            spots: BTreeMap::new(),
        };
        if let Ok(document) = toml_edit::ImDocument::parse(text) {
            index.add_table(text, "", document.as_table());
        }
        index
    }

    fn add_table(&mut self, text: &str, prefix: &str, table: &toml_edit::Table) {
        for (name, item) in table.iter() {
            let path = join(prefix, name);
            let key_span = table.key(name).and_then(|k| k.span());
            self.add_item(text, path, key_span, item);
        }
    }

    fn add_item(
        &mut self,
        text: &str,
        path: String,
        key_span: Option<std::ops::Range<usize>>,
        item: &toml_edit::Item,
    ) {
        let value_span = match item {
            toml_edit::Item::Table(table) => table.span().or_else(|| key_span.clone()),
            _ => item.span(),
        };
        // An implicit table (`clients` of `[clients.ecw]`) has no span of its own: it is
        // placed where its first member is.
        if let Some(start) = key_span.as_ref().or(value_span.as_ref()).map(|s| s.start) {
            let key = report::position(text, start);
            let value = value_span.map_or(key, |s| report::position(text, s.start));
            self.spots.insert(path.clone(), Spot { key, value });
        }
        match item {
            toml_edit::Item::Table(table) => self.add_table(text, &path, table),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(table)) => {
                for (name, value) in table.iter() {
                    let key_span = table.key(name).and_then(|k| k.span());
                    let item = toml_edit::Item::Value(value.clone());
                    // A cloned value keeps its span.
                    self.add_item(text, join(&path, name), key_span, &item);
                }
            }
            _ => {}
        }
        if !self.spots.contains_key(&path) {
            // Placed by its first member, now that the members are indexed.
            let first = self
                .spots
                .range(format!("{path}.")..)
                .next()
                .filter(|(k, _)| k.starts_with(&format!("{path}.")))
                .map(|(_, spot)| *spot);
            if let Some(spot) = first {
                self.spots.insert(path, spot);
            }
        }
    }

    /// The section names of `kind` (`clients`) the file has.
    pub(super) fn sections(&self, kind: &str) -> Vec<String> {
        let prefix = format!("{kind}.");
        self.spots
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('.'))
            .map(str::to_owned)
            .collect()
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Where the configuration's values came from: the file's index and the variables.
pub(super) struct Places<'a> {
    pub(super) file: Option<&'a FileIndex>,
    pub(super) env: &'a [EnvSource],
}

/// Sort order of described problems: the file's top to bottom, then the environment's, then
/// those of no place (defaults).
type Order = (u8, usize, usize);

impl Places<'_> {
    /// Each finding as a sentence that starts with its place, the file's in file order.
    pub(super) fn describe(&self, findings: Vec<Finding>) -> Vec<String> {
        let mut described: Vec<(Order, String)> =
            findings.into_iter().map(|f| self.describe_one(f)).collect();
        described.sort_by_key(|(order, _)| *order);
        described.into_iter().map(|(_, text)| text).collect()
    }

    fn describe_one(&self, finding: Finding) -> (Order, String) {
        let text = finding.text;
        let path = match finding.path {
            Some(path) => path,
            None => match self.longest_known_prefix(&text) {
                Some(path) => path,
                None => return ((2, 0, 0), text),
            },
        };
        // The environment overrides the file: a value a variable set is the variable's.
        let from_env = self
            .env
            .iter()
            .rev()
            .filter(|s| within(&path, &s.path.join(".")))
            .max_by_key(|s| s.path.len());
        let in_file = self.file.and_then(|file| {
            let mut candidate = path.as_str();
            loop {
                // A section the file does not have is not placed at `[clients...]` of
                // another one.
                let is_kind_only = NAMED_SECTIONS.contains(&candidate) && candidate != path;
                if let Some(spot) = file.spots.get(candidate).filter(|_| !is_kind_only) {
                    return Some((candidate.len(), spot));
                }
                candidate = &candidate[..candidate.rfind('.')?];
            }
        });
        match (from_env, in_file) {
            (Some(source), in_file)
                if in_file.is_none_or(|(len, _)| source.path.join(".").len() >= len) =>
            {
                let list = if finding.string_for_list {
                    list_hint(source)
                } else {
                    String::new()
                };
                (
                    (1, 0, 0),
                    format!(
                        "{}: {text}{list}{}",
                        self.variable(source),
                        self.hint(source)
                    ),
                )
            }
            (_, Some((_, spot))) => {
                let (line, column) = if finding.at_key { spot.key } else { spot.value };
                let name = self.file.map_or("", |f| f.name.as_str());
                (
                    (0, line, column),
                    format!("{name}: line {line}, column {column}: {text}"),
                )
            }
            _ => {
                // A section made only by variables (no place of its own): the variables
                // that made it.
                let section: String = path.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
                let makers: Vec<&EnvSource> = self
                    .env
                    .iter()
                    .filter(|s| within(&s.path.join("."), &section))
                    .collect();
                match makers.first() {
                    None => ((2, 0, 0), text),
                    Some(first) => {
                        let names: Vec<&str> = makers.iter().map(|s| s.variable.as_str()).collect();
                        (
                            (1, 0, 0),
                            format!("{}: {text}{}", names.join(", "), self.hint(first)),
                        )
                    }
                }
            }
        }
    }

    /// The longest path of a known place that `text` starts with (a problem's first words
    /// are the key it is about).
    fn longest_known_prefix(&self, text: &str) -> Option<String> {
        let word_end = text
            .find(|c: char| c.is_whitespace() || c == ':' || c == '=')
            .unwrap_or(text.len());
        let first_word = &text[..word_end];
        let mut paths: Vec<String> = self.env.iter().map(|s| s.path.join(".")).collect();
        if let Some(file) = self.file {
            paths.extend(file.spots.keys().cloned());
        }
        paths.retain(|p| within(first_word, p));
        // Under a known section, even where no place is known for the key itself.
        if paths.is_empty() {
            return NAMED_SECTIONS
                .iter()
                .chain(&["server"])
                .any(|s| first_word.starts_with(&format!("{s}.")))
                .then(|| first_word.to_owned());
        }
        Some(first_word.to_owned())
    }

    /// `JWKSD_X=value`, or just the variable when the value may be a secret or is not
    /// short text; `JWKSD_X_FILE (file PATH)` for a file's content.
    fn variable(&self, source: &EnvSource) -> String {
        if source.file.is_some() {
            return source.origin();
        }
        let last = source.path.last().map(String::as_str).unwrap_or("");
        let addresses_a_key = match source.path.first().map(String::as_str) {
            Some("server") => source.path.len() == 2,
            _ => source.path.len() == 3,
        };
        let shown = source.value.as_deref().filter(|value| {
            addresses_a_key
                && !SECRET_KEYS.contains(&last)
                && value.len() <= 80
                && !value.starts_with('[')
                && !value.chars().any(char::is_control)
                && !values::holds_credentials(value)
        });
        match shown {
            Some(value) => format!("{}={value}", source.variable),
            None => source.variable.clone(),
        }
    }

    /// For a variable that made a section the file does not have: which sections the file
    /// has, and how variables address them.
    fn hint(&self, source: &EnvSource) -> String {
        let (Some(kind), Some(name)) = (source.path.first(), source.path.get(1)) else {
            return String::new();
        };
        if !NAMED_SECTIONS.contains(&kind.as_str()) || !source.created_section {
            return String::new();
        }
        let existing = self.file.map(|f| f.sections(kind)).unwrap_or_default();
        if existing.is_empty() {
            return String::new();
        }
        format!(
            " ([{kind}.{name}] is not in the file, so the variable made a new section; the file \
             has {}: JWKSD_{}__<NAME>__<KEY> addresses the section whose name matches NAME \
             ignoring case, '-' and '_')",
            existing
                .iter()
                .map(|s| format!("[{kind}.{s}]"))
                .collect::<Vec<_>>()
                .join(", "),
            kind.to_ascii_uppercase()
        )
    }
}

/// For a list key a variable gave as a plain string (`JWKSD_SERVER__TRUSTED_PROXIES=10.0.0.0/8`):
/// the variable written as the TOML list it meant, its entries split at commas and spaces
/// (`; a variable writes a list as TOML: JWKSD_SERVER__TRUSTED_PROXIES='["10.0.0.0/8"]'`).
/// The list keys hold no secrets; a `_FILE` variable's content is still not shown, nor a URL
/// with a password.
fn list_hint(source: &EnvSource) -> String {
    let entries: Vec<&str> = match (&source.file, &source.value) {
        (None, Some(value)) => value
            .split([',', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    let shown: Vec<String> =
        if entries.is_empty() || entries.iter().any(|e| values::holds_credentials(e)) {
            vec!["\"a\"".to_owned(), "\"b\"".to_owned()]
        } else {
            entries
                .iter()
                .map(|e| toml::Value::String((*e).to_owned()).to_string())
                .collect()
        };
    format!(
        "; a variable writes a list as TOML: {}='[{}]'",
        source.variable,
        shown.join(", ")
    )
}

/// Whether dotted key `path` is `section` or lies under it.
fn within(path: &str, section: &str) -> bool {
    path == section
        || path
            .strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Where each value of a loaded configuration came from, for `check-config`: the file's
/// line, or the variable (and its file). Holds no value.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    file: Option<FileIndex>,
    /// Dotted path, variable, and for a `_FILE` variable the file it named.
    variables: Vec<(String, String, Option<PathBuf>)>,
}

impl Provenance {
    pub(super) fn new(file: Option<FileIndex>, sources: &[EnvSource]) -> Self {
        Provenance {
            file,
            variables: sources
                .iter()
                .map(|s| {
                    (
                        s.path.join("."),
                        s.variable.clone(),
                        s.file.as_ref().map(|(path, _)| path.clone()),
                    )
                })
                .collect(),
        }
    }

    /// Where the value at dotted `path` came from: `the variable JWKSD_X`, `the variable
    /// JWKSD_X_FILE (file /run/x)`, `jwksd.toml, line 3`, or `None` (not configured: the
    /// default).
    pub fn of(&self, path: &str) -> Option<String> {
        if let Some((_, variable, file)) = self.variables.iter().rev().find(|(p, ..)| p == path) {
            return Some(match file {
                None => format!("the variable {variable}"),
                Some(file) => format!("the variable {variable} (file {})", file.display()),
            });
        }
        let file = self.file.as_ref()?;
        let spot = file.spots.get(path)?;
        Some(format!("{}, line {}", file.name, spot.key.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_places_keys_values_and_sections_in_the_users_file() {
        let text = "# jwksd\n[server]\npublic_url = \"https://x.example\"\n\n[clients.ecw-prod]\n\
                    client_id = \"abc\"\nlimits = { a = 1, b = 2 }\n[keysets.default]\n";
        let index = FileIndex::new(Path::new("jwksd.toml"), text);
        let spot = |k: &str| index.spots.get(k).copied().unwrap();
        assert_eq!(spot("server").value, (2, 1));
        assert_eq!(spot("server.public_url").key, (3, 1));
        assert_eq!(spot("server.public_url").value, (3, 14));
        assert_eq!(spot("clients.ecw-prod").value, (5, 1));
        assert_eq!(spot("clients.ecw-prod.client_id").value, (6, 13));
        assert_eq!(spot("clients.ecw-prod.limits.b").key, (7, 19));
        assert_eq!(spot("keysets.default").value, (8, 1));
        // Implicit tables are placed at their first member.
        assert_eq!(spot("clients").key, (5, 2));
        assert_eq!(index.sections("clients"), ["ecw-prod"]);
    }

    #[test]
    fn a_problem_is_placed_at_the_most_specific_place_of_its_key() {
        let text = "[clients.ecw]\nclient_id = \"abc\"\n";
        let index = FileIndex::new(Path::new("c.toml"), text);
        let places = Places {
            file: Some(&index),
            env: &[],
        };
        let described = places.describe(vec![
            Finding::text("clients.ecw.token_endpoint is required".into()),
            Finding::text("clients.ecw.client_id = \"abc\" is odd".into()),
            Finding::text("something without a place".into()),
        ]);
        assert_eq!(
            described,
            [
                "c.toml: line 1, column 1: clients.ecw.token_endpoint is required",
                "c.toml: line 2, column 13: clients.ecw.client_id = \"abc\" is odd",
                "something without a place",
            ]
        );
    }
}
