//! The config file as written: every key checked against the schema
//! before serde sees it, so each problem names its key, its uplink and
//! the values allowed, all of them at once, at `line:column`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Range,
};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{ConfigError, Located};

mod keys;
mod location;

#[cfg(test)]
pub(super) use keys::known_keys;
use keys::{Kind, Section, U32, unknown_hint};
pub(super) use location::Loc;

/// A parsed document with its spans.
pub(super) struct Document<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

fn entry<'a, 'i>(
    table: &'a DeTable<'i>,
    key: &str,
) -> Option<(&'a Spanned<std::borrow::Cow<'i, str>>, &'a Spanned<DeValue<'i>>)> {
    table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

impl<'i> Document<'i> {
    pub(super) fn parse(text: &'i str) -> Result<Self, toml::de::Error> {
        Ok(Self { text, root: DeTable::parse(text)? })
    }

    pub(super) fn root(&self) -> &Spanned<DeTable<'i>> {
        &self.root
    }

    /// Every problem with how keys are written: unknown keys, wrong
    /// types, values outside what the field holds. Semantic checks come
    /// after, on the parsed config.
    pub(super) fn check(&self) -> Vec<Located> {
        let mut problems = Vec::new();
        let root = self.root.get_ref();
        self.check_table(root, Section::Top, "", &mut problems);
        if let (Some(_), Some((old, _))) = (entry(root, "guard"), entry(root, "datapath")) {
            let message = "[datapath] is the old name of [guard]: write one of them".to_owned();
            self.push(&mut problems, old.span(), "", message);
        }
        problems.sort_by_key(|p| (p.line, p.column));
        problems
    }

    /// Keys that TOML put into the last `[[uplink]]` because they follow its
    /// header, where the file sets no top-level value for them: most likely
    /// meant for every uplink.
    pub(super) fn warnings(&self, path: &std::path::Path) -> Vec<String> {
        let root = self.root.get_ref();
        let Some((_, uplinks)) = entry(root, "uplink") else { return Vec::new() };
        let Some(last) = uplinks.get_ref().as_array().and_then(|a| a.last()) else { return Vec::new() };
        let Some(table) = last.get_ref().as_table() else { return Vec::new() };
        let Some((key, _)) = table.iter().max_by_key(|(k, _)| k.span().start) else { return Vec::new() };
        let name = key.get_ref().as_ref();
        if !["mode", "enforce_asymmetric"].contains(&name) || entry(root, name).is_some() {
            return Vec::new();
        }
        let interface = entry(table, "interface").and_then(|(_, v)| v.get_ref().as_str()).unwrap_or("?");
        let (line, column) = super::line_column(self.text, key.span().start);
        vec![format!(
            "{}:{line}:{column}: `{name}` follows [[uplink]] `{interface}`, so TOML makes it that uplink's only; to set it for every uplink, move it above the first [[uplink]] (a top-level `{name}` silences this)",
            path.display()
        )]
    }

    fn push(&self, problems: &mut Vec<Located>, span: Range<usize>, place: &str, message: String) {
        let (line, column) = super::line_column(self.text, span.start);
        problems.push(Located {
            line,
            column,
            error: ConfigError::BadValue { place: place.to_owned(), message },
        });
    }

    fn written(&self, value: &Spanned<DeValue<'_>>) -> &'i str {
        self.text.get(value.span()).unwrap_or("?")
    }

    fn check_table(&self, table: &DeTable<'_>, section: Section, place: &str, problems: &mut Vec<Located>) {
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            match section.keys().iter().find(|(k, _)| *k == name) {
                Some((_, kind)) => self.check_value(key.span(), name, *kind, value, place, problems),
                None => {
                    let (line, column) = super::line_column(self.text, key.span().start);
                    let hint = unknown_hint(section, name);
                    problems.push(Located {
                        line,
                        column,
                        error: ConfigError::UnknownKey {
                            place: place.to_owned(),
                            key: name.to_owned(),
                            hint,
                        },
                    });
                }
            }
        }
    }

    fn check_value(
        &self,
        key_span: Range<usize>,
        key: &str,
        kind: Kind,
        value: &Spanned<DeValue<'_>>,
        place: &str,
        problems: &mut Vec<Located>,
    ) {
        let written = self.written(value);
        let mut bad = |message: String| self.push(problems, value.span(), place, message);
        match kind {
            Kind::Bool => {
                if !value.get_ref().is_bool() {
                    bad(format!("{key} must be true or false, not {written}"));
                }
            }
            Kind::Choice(choices) => {
                if !value.get_ref().as_str().is_some_and(|s| choices.contains(&s)) {
                    let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
                    let list = match quoted.split_last() {
                        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                        _ => quoted.join(""),
                    };
                    bad(format!("{key} must be {list}, not {written}"));
                }
            }
            Kind::Int { max, words } => {
                if integer(value.get_ref()).is_none_or(|n| n < 0 || n > i128::from(max)) {
                    bad(format!("{key} must be {words}, not {written}"));
                }
            }
            Kind::Range => {
                let ok = value.get_ref().as_array().is_some_and(|items| {
                    items.len() == 2
                        && items
                            .iter()
                            .all(|i| integer(i.get_ref()).is_some_and(|n| (0..=i128::from(U32)).contains(&n)))
                });
                if !ok {
                    bad(format!(
                        "{key} must be [first, last], two whole numbers from 1 to 4294967295, not {written}"
                    ));
                }
            }
            Kind::Duration => {
                if value.get_ref().as_str().is_none_or(|s| humantime::parse_duration(s).is_err()) {
                    bad(format!("{key}: durations look like 500ms, 2s or 1m, not {written}"));
                }
            }
            Kind::Text => {
                if !value.get_ref().is_str() {
                    bad(format!("{key} must be a string in double quotes, not {written}"));
                }
            }
            Kind::Ipv4 { other, noun } => match value.get_ref().as_str() {
                Some(s) if s.parse::<Ipv4Addr>().is_ok() => {}
                Some(s) if s.parse::<Ipv6Addr>().is_ok() => {
                    bad(format!("`{key}` is IPv4; put IPv6 {noun} ({s}) in `{other}`"));
                }
                _ => bad(format!("{key} must be an IPv4 address such as \"192.0.2.1\", not {written}")),
            },
            Kind::Ipv6 { other, noun } => match value.get_ref().as_str() {
                Some(s) if s.parse::<Ipv6Addr>().is_ok() => {}
                Some(s) if s.parse::<Ipv4Addr>().is_ok() => {
                    bad(format!("`{key}` is IPv6; put IPv4 {noun} ({s}) in `{other}`"));
                }
                _ => bad(format!("{key} must be an IPv6 address such as \"fe80::1\", not {written}")),
            },
            Kind::Socket => {
                if value.get_ref().as_str().is_none_or(|s| s.parse::<SocketAddr>().is_err()) {
                    bad(format!(
                        "{key} must be an address and port such as \"127.0.0.1:9847\" or \"[::1]:9847\", not {written}"
                    ));
                }
            }
            Kind::ProbeTargets | Kind::Prefixes => {
                let Some(items) = value.get_ref().as_array() else {
                    let example = if matches!(kind, Kind::Prefixes) {
                        "[\"192.0.2.0/24\"]"
                    } else {
                        "[\"192.0.2.1\", \"tcp:192.0.2.1:443\"]"
                    };
                    bad(format!("{key} must be a list such as {example}, not {written}"));
                    return;
                };
                for (index, item) in items.iter().enumerate() {
                    let problem = match (kind, item.get_ref().as_str()) {
                        (_, None) => Some("not a string in double quotes".to_owned()),
                        (Kind::Prefixes, Some(s)) => prefix_problem(s),
                        (_, Some(s)) => s.parse::<super::ProbeTarget>().err().map(|err| err.to_string()),
                    };
                    if let Some(problem) = problem {
                        let written = self.written(item);
                        self.push(
                            problems,
                            item.span(),
                            place,
                            format!("{key}[{index}] = {written}: {problem}"),
                        );
                    }
                }
            }
            Kind::Users => {
                let strings =
                    value.get_ref().as_table().is_some_and(|t| t.values().all(|v| v.get_ref().is_str()));
                if !strings {
                    bad(format!("{key} must be a table of user = \"bcrypt hash\" pairs, not {written}"));
                }
            }
            Kind::Table(section) => match value.get_ref().as_table() {
                Some(table) => self.check_table(table, section, &format!("{} ", section.name()), problems),
                None => self.push(
                    problems,
                    key_span,
                    place,
                    format!("[{key}] is one table: write `[{key}]` on a line of its own, then its keys"),
                ),
            },
            Kind::Any => {}
            Kind::Names => {
                let strings = value
                    .get_ref()
                    .as_array()
                    .is_some_and(|items| items.iter().all(|i| i.get_ref().as_str().is_some()));
                if !strings {
                    bad(format!("{key} must be a list of names such as [\"ens3\", \"ens4\"], not {written}"));
                }
            }
            Kind::Rules | Kind::Hooks => {
                let (noun, section) = match kind {
                    Kind::Hooks => ("hook", Section::Hook),
                    _ => ("rule", Section::Rule),
                };
                let Some(items) = value.get_ref().as_array() else {
                    self.push(
                        problems,
                        key_span,
                        place,
                        format!("{noun}s are a list of tables: write `[[{noun}]]` (two brackets) above each {noun}'s keys"),
                    );
                    return;
                };
                for (index, item) in items.iter().enumerate() {
                    match item.get_ref().as_table() {
                        Some(table) => {
                            self.check_table(table, section, &format!("{noun} #{}: ", index + 1), problems)
                        }
                        None => self.push(
                            problems,
                            item.span(),
                            "",
                            format!("each {noun} must be a `[[{noun}]]` table"),
                        ),
                    }
                }
            }
            Kind::Choices(choices) => {
                let Some(items) = value.get_ref().as_array() else {
                    let list = choices.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
                    bad(format!("{key} must be a list of {list}, not {written}"));
                    return;
                };
                for (index, item) in items.iter().enumerate() {
                    if !item.get_ref().as_str().is_some_and(|s| choices.contains(&s)) {
                        let list = choices.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
                        let written = self.written(item);
                        self.push(
                            problems,
                            item.span(),
                            place,
                            format!("{key}[{index}] = {written} is not one of {list}"),
                        );
                    }
                }
            }
            Kind::Uplinks => {
                let Some(items) = value.get_ref().as_array() else {
                    self.push(problems, key_span, place, "uplinks are a list of tables: write `[[uplink]]` (two brackets) above each uplink's keys".to_owned());
                    return;
                };
                for (index, item) in items.iter().enumerate() {
                    match item.get_ref().as_table() {
                        Some(table) => {
                            let place = uplink_place(table, index);
                            if entry(table, "interface").is_none() {
                                let message = "`interface` is missing: each [[uplink]] names its network interface, e.g. interface = \"eth0\"";
                                self.push(problems, item.span(), &place, message.to_owned());
                            }
                            self.check_table(table, Section::Uplink, &place, problems)
                        }
                        None => self.push(
                            problems,
                            item.span(),
                            "",
                            "each uplink must be a `[[uplink]]` table".to_owned(),
                        ),
                    }
                }
            }
        }
    }
}

/// `uplink `ens3`: ` (or `uplink #2: ` before its interface is known).
fn uplink_place(table: &DeTable<'_>, index: usize) -> String {
    match entry(table, "interface").and_then(|(_, v)| v.get_ref().as_str()) {
        Some(interface) => format!("uplink `{interface}`: "),
        None => format!("uplink #{}: ", index + 1),
    }
}

fn integer(value: &DeValue<'_>) -> Option<i128> {
    let integer = value.as_integer()?;
    i128::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// What is wrong with an `allow` prefix, in words, or `None`.
fn prefix_problem(text: &str) -> Option<String> {
    let Some((address, length)) = text.split_once('/') else {
        return Some(match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => format!("no prefix length; write \"{text}/32\" for one address"),
            Ok(IpAddr::V6(_)) => format!("no prefix length; write \"{text}/128\" for one address"),
            Err(_) => "not a prefix such as \"192.0.2.0/24\" or \"2001:db8::/32\"".to_owned(),
        });
    };
    let Ok(address) = address.parse::<IpAddr>() else {
        return Some(format!("`{address}` is not an IPv4 or IPv6 address"));
    };
    let Ok(length) = length.parse::<u32>() else {
        return Some(format!("prefix length `{length}` is not a whole number"));
    };
    let (max, family) = if address.is_ipv4() { (32, "IPv4") } else { (128, "IPv6") };
    if length > max {
        return Some(format!("prefix length {length} is more than {max} for {family}"));
    }
    text.parse::<ipnet::IpNet>().is_err().then(|| "not a prefix such as \"192.0.2.0/24\"".to_owned())
}
