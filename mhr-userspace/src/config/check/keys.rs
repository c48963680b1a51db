//! The key schema: what each key of each section holds, and the hint an
//! unknown key gets (the nearest known key, or the section it belongs in).

/// What one key holds.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Bool,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A whole number the field's type holds; `words` is the range the
    /// validation allows (outside it, validation says so with the key).
    Int {
        max: u64,
        words: &'static str,
    },
    /// `[first, last]`, two u32.
    Range,
    Duration,
    Text,
    /// An address of one family; `other` is the key for the other one.
    Ipv4 {
        other: &'static str,
        noun: &'static str,
    },
    Ipv6 {
        other: &'static str,
        noun: &'static str,
    },
    /// Probe targets: addresses, `tcp:`, `dns:`, `http://`.
    ProbeTargets,
    Prefixes,
    Socket,
    /// `user = "bcrypt hash"` pairs.
    Users,
    Table(Section),
    Uplinks,
    /// `[[rule]]` tables.
    Rules,
    /// `[[hook]]` tables.
    Hooks,
    /// A list of these strings.
    Choices(&'static [&'static str]),
    /// Anything: the value's own parser names what is wrong.
    Any,
    /// A list of strings.
    Names,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Top,
    Uplink,
    Health,
    Routing,
    Guard,
    Metrics,
    Rule,
    Hook,
}

impl Section {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Top => "the top level",
            Self::Uplink => "[[uplink]]",
            Self::Health => "[health]",
            Self::Routing => "[routing]",
            Self::Guard => "[guard]",
            Self::Metrics => "[metrics]",
            Self::Rule => "[[rule]]",
            Self::Hook => "[[hook]]",
        }
    }

    pub(super) fn keys(self) -> &'static [(&'static str, Kind)] {
        match self {
            Self::Top => TOP,
            Self::Uplink => UPLINK,
            Self::Health => HEALTH,
            Self::Routing => ROUTING,
            Self::Guard => GUARD,
            Self::Metrics => METRICS,
            Self::Rule => RULE,
            Self::Hook => HOOK,
        }
    }
}

pub(super) const U32: u64 = u32::MAX as u64;
const MODES: &[&str] = &["monitor", "enforce", "steer"];

const TOP: &[(&str, Kind)] = &[
    ("mode", Kind::Choice(MODES)),
    ("enforce_asymmetric", Kind::Bool),
    ("policy", Kind::Choice(&["failover", "balance"])),
    ("failback", Kind::Choice(&["keep", "reset"])),
    ("balance_hash", Kind::Choice(&["destination", "flow"])),
    ("uplink", Kind::Uplinks),
    ("rule", Kind::Rules),
    ("hook", Kind::Hooks),
    ("health", Kind::Table(Section::Health)),
    ("routing", Kind::Table(Section::Routing)),
    ("guard", Kind::Table(Section::Guard)),
    ("datapath", Kind::Table(Section::Guard)),
    ("metrics", Kind::Table(Section::Metrics)),
];

const UPLINK: &[(&str, Kind)] = &[
    ("interface", Kind::Text),
    ("primary", Kind::Bool),
    ("gateway", Kind::Ipv4 { other: "gateway6", noun: "gateways" }),
    ("gateway6", Kind::Ipv6 { other: "gateway", noun: "gateways" }),
    ("table", Kind::Int { max: U32, words: "a whole number from 1 to 4294967295 other than 253–255" }),
    ("allow", Kind::Prefixes),
    ("mode", Kind::Choice(MODES)),
    ("enforce_asymmetric", Kind::Bool),
    ("probe", Kind::ProbeTargets),
    ("quorum", Kind::Int { max: U32, words: "a whole number from 1 to the uplink's probe targets" }),
    ("probe_interval", Kind::Duration),
    ("dhcp_lease", Kind::Text),
    ("probe_source", Kind::Ipv4 { other: "probe_source6", noun: "sources" }),
    ("probe_source6", Kind::Ipv6 { other: "probe_source", noun: "sources" }),
    ("optional", Kind::Bool),
    ("priority", Kind::Int { max: U32, words: "a whole number from 0 to 4294967295" }),
    ("weight", Kind::Int { max: U32, words: "a whole number from 1 to 256" }),
];

const HEALTH: &[(&str, Kind)] = &[
    ("interval", Kind::Duration),
    ("timeout", Kind::Duration),
    ("down_after", Kind::Int { max: U32, words: "a whole number from 1 to 100" }),
    ("up_after", Kind::Int { max: U32, words: "a whole number from 1 to 100" }),
    ("assume", Kind::Choice(&["unhealthy", "healthy"])),
    ("quorum", Kind::Int { max: U32, words: "a whole number from 1 to 8" }),
    ("window", Kind::Duration),
    ("latency_high", Kind::Duration),
    ("latency_low", Kind::Duration),
    ("loss_high", Kind::Int { max: U32, words: "a whole percentage from 0 to 100" }),
    ("loss_low", Kind::Int { max: U32, words: "a whole percentage from 0 to 100" }),
    ("passive", Kind::Bool),
    ("rx_silence", Kind::Duration),
    ("retransmit_percent", Kind::Int { max: U32, words: "a whole percentage from 0 (off) to 99" }),
    ("retransmit_window", Kind::Duration),
    ("probe_when_idle", Kind::Bool),
];

const ROUTING: &[(&str, Kind)] = &[
    ("table_range", Kind::Range),
    ("priority_range", Kind::Range),
    ("protocol", Kind::Int { max: 255, words: "a whole number from 0 to 255" }),
    ("rt_tables_dir", Kind::Text),
    ("state_dir", Kind::Text),
    ("source_rules", Kind::Choice(&["prefix", "address"])),
    ("to_rules", Kind::Bool),
    (
        "default_table",
        Kind::Int { max: U32, words: "a whole number from 1 to 4294967295 other than 253–255" },
    ),
    ("main_metric", Kind::Int { max: U32, words: "a whole number from 0 to 4294967295" }),
    ("force_protocol", Kind::Bool),
];

const GUARD: &[(&str, Kind)] =
    &[("pin_dir", Kind::Text), ("attach", Kind::Choice(&["auto", "tcx", "clsact"]))];

const METRICS: &[(&str, Kind)] = &[
    ("listen", Kind::Socket),
    ("top_offenders", Kind::Int { max: u64::MAX, words: "a whole number from 0 to 10" }),
    ("tls_cert", Kind::Text),
    ("tls_key", Kind::Text),
    ("basic_auth_users", Kind::Users),
];

const RULE: &[(&str, Kind)] = &[
    ("to", Kind::Prefixes),
    ("proto", Kind::Any),
    ("dport", Kind::Any),
    ("sport", Kind::Any),
    ("uid", Kind::Any),
    ("fwmark", Kind::Any),
    ("uplink", Kind::Names),
];

const HOOK: &[(&str, Kind)] = &[
    ("on", Kind::Choices(crate::config::HookEvent::NAMES)),
    ("exec", Kind::Text),
    ("args", Kind::Any),
    ("timeout", Kind::Duration),
    ("uplink", Kind::Names),
];

const SECTIONS: [Section; 8] = [
    Section::Top,
    Section::Uplink,
    Section::Health,
    Section::Routing,
    Section::Guard,
    Section::Metrics,
    Section::Rule,
    Section::Hook,
];

/// The keys of a table by its name (`""` for the top level), for the test
/// that keeps this schema and serde's structs in step.
#[cfg(test)]
pub(in crate::config) fn known_keys(table: &str) -> Vec<&'static str> {
    let section = match table {
        "uplink" => Section::Uplink,
        "health" => Section::Health,
        "routing" => Section::Routing,
        "guard" => Section::Guard,
        "metrics" => Section::Metrics,
        "rule" => Section::Rule,
        "hook" => Section::Hook,
        _ => Section::Top,
    };
    section.keys().iter().map(|(k, _)| *k).collect()
}

/// ` did you mean `health`?`, or where the key belongs instead.
pub(super) fn unknown_hint(section: Section, key: &str) -> String {
    if section != Section::Top && TOP.iter().any(|(k, _)| *k == key) {
        return format!(
            "; `{key}` is a top-level key, and TOML puts every key after a {} header into that table: move it above the first table",
            section.name()
        );
    }
    if let Some(other) = SECTIONS
        .iter()
        .find(|s| **s != section && **s != Section::Top && s.keys().iter().any(|(k, _)| *k == key))
    {
        if section == Section::Uplink && key == "interval" {
            return "; it belongs in [health]; an uplink's own cadence is `probe_interval`".to_owned();
        }
        return format!("; it belongs in {}", other.name());
    }
    let keys = || section.keys().iter().map(|(k, _)| *k).filter(|k| *k != "datapath");
    if let Some(longer) = keys().find(|k| key.starts_with(k) || k.starts_with(key)) {
        return format!("; did you mean `{longer}`?");
    }
    let nearest = section
        .keys()
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| *k != "datapath")
        .map(|k| (strsim::damerau_levenshtein(k, key), k))
        .min();
    match nearest {
        Some((distance, nearest)) if distance <= 2.max(key.len() / 3) && distance < key.len() => {
            format!("; did you mean `{nearest}`?")
        }
        _ => {
            let keys =
                section.keys().iter().map(|(k, _)| *k).filter(|k| *k != "datapath").collect::<Vec<_>>();
            format!(" in {}; known keys: {}", section.name(), keys.join(", "))
        }
    }
}
