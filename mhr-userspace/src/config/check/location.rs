//! Where a problem is: a key path ([`Loc`]) resolved to the span of what
//! is written there, and from it to `line:column`.

use std::ops::Range;

use toml::de::DeValue;

use super::{Document, entry};

/// Where a problem is, as a key path; resolved to `line:column` against
/// the parsed document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::config) enum Loc {
    Start,
    Section(&'static str, &'static str),
    Uplink(usize, &'static str),
    UplinkItem(usize, &'static str, usize),
    /// A key of the `[[rule]]` at this index.
    Rule(usize, &'static str),
    /// A key of the `[[hook]]` at this index.
    Hook(usize, &'static str),
}

impl Document<'_> {
    /// 1-based line and column of a location (the nearest thing written).
    pub(in crate::config) fn position(&self, loc: Loc) -> (usize, usize) {
        crate::config::line_column(self.text, self.span(loc).start)
    }

    pub(super) fn span(&self, loc: Loc) -> Range<usize> {
        let root = self.root.get_ref();
        let uplink = |index: usize| {
            entry(root, "uplink").and_then(|(key, value)| match value.get_ref() {
                DeValue::Array(items) => {
                    items.get(index).and_then(|i| i.get_ref().as_table()).map(|t| (key, t))
                }
                _ => None,
            })
        };
        let start = 0..0;
        match loc {
            Loc::Start => start,
            Loc::Section(section, key) => {
                let table = entry(root, section)
                    .or_else(|| (section == "guard").then(|| entry(root, "datapath")).flatten());
                match table {
                    Some((header, value)) => value
                        .get_ref()
                        .as_table()
                        .and_then(|t| entry(t, key))
                        .map_or(header.span(), |(k, _)| k.span()),
                    None => start,
                }
            }
            Loc::Rule(index, key) | Loc::Hook(index, key) => {
                let name = if matches!(loc, Loc::Hook(..)) { "hook" } else { "rule" };
                let rule = entry(root, name).and_then(|(key, value)| match value.get_ref() {
                    DeValue::Array(items) => {
                        items.get(index).and_then(|i| i.get_ref().as_table()).map(|t| (key, t))
                    }
                    _ => None,
                });
                match rule {
                    Some((header, table)) => entry(table, key).map_or(header.span(), |(k, _)| k.span()),
                    None => start,
                }
            }
            Loc::Uplink(index, key) | Loc::UplinkItem(index, key, _) => {
                let Some((header, table)) = uplink(index) else {
                    return entry(root, "uplink").map_or(start, |(k, _)| k.span());
                };
                let Some((k, value)) = entry(table, key) else {
                    // The uplink's interface line, else the `[[uplink]]` header.
                    return entry(table, "interface").map_or(header.span(), |(k, _)| k.span());
                };
                match (loc, value.get_ref()) {
                    (Loc::UplinkItem(_, _, item), DeValue::Array(items)) => {
                        items.get(item).map_or(k.span(), |v| v.span())
                    }
                    _ => k.span(),
                }
            }
        }
    }
}
