//! `[[rule]]`: steering rules. Each sends the traffic it selects (by
//! destination prefixes, IP protocol, ports, the sending process's uid,
//! a firewall mark) through the first usable uplink of its list; with none
//! usable it is withdrawn and that traffic takes main's default.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::model::{Family, Selectors, selectors::ipproto_number};

/// At most this many `[[rule]]` entries: each has a priority of its own in
/// a block reserved ahead of mhr's default lookup.
pub const MAX_RULES: usize = 32;

/// A number, or text such as `"tcp"`, `"1000-2000"` or `"0x10/0xff"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Written {
    Number(i64),
    Text(String),
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(number) => write!(f, "{number}"),
            Self::Text(text) => write!(f, "\"{text}\""),
        }
    }
}

fn written<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Written>, D::Error> {
    Option::<Written>::deserialize(deserializer)
}

/// One `[[rule]]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SteeringRule {
    /// Destination prefixes (none: any destination, both families).
    #[serde(default)]
    pub to: Vec<IpNet>,
    /// `tcp`, `udp`, `icmp` or a protocol number.
    #[serde(default, deserialize_with = "written")]
    pub proto: Option<Written>,
    /// A destination port or range (`443`, `"8000-8999"`); needs tcp or udp.
    #[serde(default, deserialize_with = "written")]
    pub dport: Option<Written>,
    /// A source port or range; needs tcp or udp.
    #[serde(default, deserialize_with = "written")]
    pub sport: Option<Written>,
    /// The sending process's uid or a range (`1000`, `"1000-1999"`).
    #[serde(default, deserialize_with = "written")]
    pub uid: Option<Written>,
    /// A firewall mark, with an optional mask (`16`, `"0x10/0xff"`).
    #[serde(default, deserialize_with = "written")]
    pub fwmark: Option<Written>,
    /// Uplinks in order of preference: the first usable one is taken.
    #[serde(default)]
    pub uplink: Vec<String>,
}

/// Why a rule's key is refused: the key and what is wrong, in words.
pub type RuleProblem = (&'static str, String);

fn range<T>(key: &'static str, value: &Written, min: i64, max: i64, what: &str) -> Result<(T, T), RuleProblem>
where
    T: TryFrom<i64>,
{
    let bad = || (key, format!("must be {what} from {min} to {max} or a range \"A-B\", not {value}"));
    let (first, last) = match value {
        Written::Number(number) => (*number, *number),
        Written::Text(text) => match text.split_once('-') {
            Some((first, last)) => {
                (first.trim().parse().map_err(|_| bad())?, last.trim().parse().map_err(|_| bad())?)
            }
            None => {
                let one = text.trim().parse().map_err(|_| bad())?;
                (one, one)
            }
        },
    };
    if first > last || first < min || last > max {
        return Err(bad());
    }
    let convert = |n: i64| T::try_from(n).map_err(|_| bad());
    Ok((convert(first)?, convert(last)?))
}

fn mark(value: &Written) -> Result<(u32, u32), RuleProblem> {
    let bad = || {
        (
            "fwmark",
            format!(
                "must be a mark from 1 to 0xffffffff, with an optional mask (\"0x10/0xff\"), not {value}"
            ),
        )
    };
    let number = |text: &str| -> Option<u32> {
        let text = text.trim();
        match text.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    };
    let (mark, mask) = match value {
        Written::Number(n) => (u32::try_from(*n).map_err(|_| bad())?, u32::MAX),
        Written::Text(text) => match text.split_once('/') {
            Some((mark, mask)) => (number(mark).ok_or_else(bad)?, number(mask).ok_or_else(bad)?),
            None => (number(text).ok_or_else(bad)?, u32::MAX),
        },
    };
    if mark == 0 || mark & mask != mark {
        return Err(bad());
    }
    Ok((mark, mask))
}

impl SteeringRule {
    /// The kernel selectors this rule compiles to, or every problem.
    pub fn selectors(&self) -> Result<Selectors, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut selectors = Selectors::default();
        if let Some(proto) = &self.proto {
            let number = match proto {
                Written::Number(n) => u8::try_from(*n).ok().filter(|n| *n > 0),
                Written::Text(text) => ipproto_number(text.trim()).filter(|n| *n > 0),
            };
            match number {
                Some(number) => selectors.ipproto = Some(number),
                None => problems.push((
                    "proto",
                    format!("must be \"tcp\", \"udp\", \"icmp\", \"ipv6-icmp\" or a protocol number from 1 to 255, not {proto}"),
                )),
            }
        }
        for (key, value) in [("dport", &self.dport), ("sport", &self.sport)] {
            let Some(value) = value else { continue };
            // The kernel refuses a rule port range that ends at 65535.
            match range::<u16>(key, value, 1, 65534, "a port") {
                Ok(ports) if key == "dport" => selectors.dport = Some(ports),
                Ok(ports) => selectors.sport = Some(ports),
                Err(problem) => problems.push(problem),
            }
            let proto_valid = self.proto.is_none() || selectors.ipproto.is_some();
            if proto_valid && !matches!(selectors.ipproto, Some(6 | 17 | 132)) {
                problems.push((
                    key,
                    "needs proto = \"tcp\", \"udp\" or 132 (sctp): ports belong to a protocol".to_owned(),
                ));
            }
        }
        if let Some(value) = &self.uid {
            match range::<u32>("uid", value, 0, i64::from(u32::MAX - 1), "a uid") {
                Ok(uids) => selectors.uid = Some(uids),
                Err(problem) => problems.push(problem),
            }
        }
        if let Some(value) = &self.fwmark {
            match mark(value) {
                Ok(fwmark) => selectors.fwmark = Some(fwmark),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() { Ok(selectors) } else { Err(problems) }
    }

    /// The families the rule steers: those of its `to` prefixes (or both),
    /// less the one its protocol does not exist in (ICMP is IPv4's, ICMPv6
    /// IPv6's).
    pub fn families(&self) -> Vec<Family> {
        let only = match self.selectors().ok().and_then(|s| s.ipproto) {
            Some(1) => Some(Family::V4),
            Some(58) => Some(Family::V6),
            _ => None,
        };
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| self.to.is_empty() || self.to.iter().any(|p| Family::of(&p.addr()) == *f))
            .filter(|f| only.is_none_or(|only| only == *f))
            .collect()
    }

    /// Whether this rule can never match after `earlier`: it selects
    /// nothing `earlier` does not, and whenever `earlier` is withdrawn (all
    /// its uplinks unusable) so is this one (its uplinks are among them).
    pub fn covered_by(&self, earlier: &Self) -> bool {
        let (Ok(mine), Ok(theirs)) = (self.selectors(), earlier.selectors()) else { return false };
        let within = |mine: Option<(u16, u16)>, theirs: Option<(u16, u16)>| match (mine, theirs) {
            (_, None) => true,
            (Some((a, b)), Some((c, d))) => c <= a && b <= d,
            (None, Some(_)) => false,
        };
        let to = earlier.to.is_empty()
            || (!self.to.is_empty() && self.to.iter().all(|p| earlier.to.iter().any(|q| q.contains(p))));
        to && theirs.ipproto.is_none_or(|p| mine.ipproto == Some(p))
            && within(mine.dport, theirs.dport)
            && within(mine.sport, theirs.sport)
            && match (mine.uid, theirs.uid) {
                (_, None) => true,
                (Some((a, b)), Some((c, d))) => c <= a && b <= d,
                (None, Some(_)) => false,
            }
            && theirs.fwmark.is_none_or(|f| mine.fwmark == Some(f))
            && self.uplink.iter().all(|u| earlier.uplink.contains(u))
    }
}

/// Every problem of the `[[rule]]` entries, each at its key.
pub(super) fn validate(config: &super::Config, problems: &mut Vec<(super::check::Loc, super::ConfigError)>) {
    use super::{ConfigError, check::Loc};
    let mut bad = |index: usize, key: &'static str, reason: String| {
        problems.push((Loc::Rule(index, key), ConfigError::BadRule { rule: index + 1, key, reason }));
    };
    if config.rules.len() > MAX_RULES {
        bad(
            MAX_RULES,
            "uplink",
            format!("is one rule too many: at most {MAX_RULES} rules ({} written)", config.rules.len()),
        );
    }
    let names: Vec<&str> = config.uplinks.iter().map(|u| u.interface.as_str()).collect();
    for (index, rule) in config.rules.iter().enumerate() {
        if rule.uplink.is_empty() {
            bad(
                index,
                "uplink",
                "is missing: name the uplinks to use, in order, e.g. uplink = [\"ens4\"]".to_owned(),
            );
        }
        for uplink in rule.uplink.iter().filter(|u| !names.contains(&u.as_str())) {
            bad(
                index,
                "uplink",
                format!("names `{uplink}`, which is not a configured uplink (uplinks: {})", names.join(", ")),
            );
        }
        let selectors = match rule.selectors() {
            Ok(selectors) => selectors,
            Err(found) => {
                for (key, reason) in found {
                    bad(index, key, reason);
                }
                continue;
            }
        };
        if rule.to.is_empty() && selectors.is_empty() {
            bad(index, "to", "or another selector is needed (proto, dport, sport, uid, fwmark): a rule without one would steer everything".to_owned());
        }
        if let Some(earlier) = config.rules[..index].iter().position(|e| rule.covered_by(e)) {
            bad(
                index,
                "to",
                format!(
                    "can never match: rule #{} selects all it does, for the same uplinks; put the narrower rule first",
                    earlier + 1
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> SteeringRule {
        toml::from_str(&format!("uplink = [\"ens4\"]\n{text}")).unwrap()
    }

    #[test]
    fn selectors_read_numbers_names_and_ranges() {
        let https = rule("proto = \"tcp\"\ndport = 443\nuid = \"1000-1999\"\nfwmark = \"0x10/0xff\"");
        let selectors = https.selectors().unwrap();
        assert_eq!(selectors.args(), " ipproto tcp dport 443 uidrange 1000-1999 fwmark 0x10/0xff");
        let range = rule("proto = 17\nsport = \"5000-5100\"").selectors().unwrap();
        assert_eq!((range.ipproto, range.sport), (Some(17), Some((5000, 5100))));
        assert_eq!(rule("to = [\"2001:db8::/32\"]").families(), [Family::V6]);
        assert_eq!(rule("proto = \"udp\"").families(), [Family::V4, Family::V6]);
        assert_eq!(rule("proto = \"icmp\"").families(), [Family::V4], "ICMP is IPv4's");
        assert_eq!(rule("proto = \"ipv6-icmp\"").families(), [Family::V6]);
    }

    #[test]
    fn bad_selectors_name_the_key_and_the_range() {
        let problems = |text: &str| rule(text).selectors().unwrap_err();
        assert_eq!(problems("proto = \"tcp\"\ndport = 0")[0].0, "dport");
        assert!(problems("proto = \"tcp\"\ndport = 0")[0].1.contains("a port from 1 to 65534"));
        assert_eq!(
            problems("proto = \"tcp\"\nsport = \"32768-65535\"")[0].0,
            "sport",
            "the kernel refuses 65535"
        );
        assert!(problems("proto = \"tcp\"\ndport = \"900-100\"")[0].1.contains("not \"900-100\""));
        assert!(problems("proto = \"gre\"")[0].1.contains("not \"gre\""));
        assert_eq!(
            problems("dport = 443")[0],
            ("dport", "needs proto = \"tcp\", \"udp\" or 132 (sctp): ports belong to a protocol".to_owned())
        );
        assert_eq!(problems("proto = \"icmp\"\ndport = 443")[0].0, "dport");
        assert_eq!(problems("fwmark = \"0x10/0x01\"")[0].0, "fwmark", "a mark outside its mask");
        assert!(problems("uid = -1")[0].1.contains("a uid from 0"));
    }

    #[test]
    fn a_rule_inside_an_earlier_one_is_covered() {
        let web = rule("proto = \"tcp\"\ndport = \"80-443\"");
        let https = rule("proto = \"tcp\"\ndport = 443");
        let udp = rule("proto = \"udp\"\ndport = 443");
        let fallback: SteeringRule =
            toml::from_str("uplink = [\"ens5\"]\nproto = \"tcp\"\ndport = 443").unwrap();
        assert!(!fallback.covered_by(&web), "another uplink: it matches while the earlier one is withdrawn");
        assert!(https.covered_by(&web));
        assert!(!web.covered_by(&https));
        assert!(!udp.covered_by(&web));
        let narrow = rule("to = [\"192.0.2.0/25\"]\nproto = \"tcp\"");
        let wide = rule("to = [\"192.0.2.0/24\"]");
        assert!(narrow.covered_by(&wide));
        assert!(!wide.covered_by(&narrow));
    }
}
