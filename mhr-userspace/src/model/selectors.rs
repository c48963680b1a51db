//! The selectors of a steering rule besides `from`/`to`: the IP protocol,
//! source and destination port ranges, a uid range and a firewall mark
//! (the kernel's FRA_IP_PROTO, FRA_SPORT_RANGE, FRA_DPORT_RANGE,
//! FRA_UID_RANGE, FRA_FWMARK/FRA_FWMASK), and the flow a lookup carries
//! to be matched against them.

use serde::{Deserialize, Serialize};

/// A rule's selectors; `None` matches anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Selectors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipproto: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<(u32, u32)>,
    /// Mark and mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<(u32, u32)>,
}

/// What a lookup says about the packet besides its addresses (`ip route
/// get … ipproto tcp dport 443 uid 1000 mark 1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub ipproto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub uid: Option<u32>,
    pub mark: Option<u32>,
}

/// `tcp`, `udp`, `icmp`, `ipv6-icmp` by number, as `ip` names them.
pub fn ipproto_name(number: u8) -> String {
    match number {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "ipv6-icmp".to_owned(),
        other => other.to_string(),
    }
}

pub fn ipproto_number(name: &str) -> Option<u8> {
    match name {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "ipv6-icmp" | "icmpv6" => Some(58),
        number => number.parse().ok(),
    }
}

fn range<T: PartialEq + std::fmt::Display>((first, last): (T, T)) -> String {
    if first == last { first.to_string() } else { format!("{first}-{last}") }
}

/// `A` or `A-B`.
pub fn parse_range<T: std::str::FromStr + Copy>(text: &str) -> Option<(T, T)> {
    match text.split_once('-') {
        Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
        None => text.parse().ok().map(|one| (one, one)),
    }
}

impl Selectors {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// ` ipproto tcp dport 443 …` as `ip rule` takes them.
    pub fn args(&self) -> String {
        let mut out = String::new();
        if let Some(number) = self.ipproto {
            out += &format!(" ipproto {}", ipproto_name(number));
        }
        if let Some(ports) = self.sport {
            out += &format!(" sport {}", range(ports));
        }
        if let Some(ports) = self.dport {
            out += &format!(" dport {}", range(ports));
        }
        if let Some((first, last)) = self.uid {
            out += &format!(" uidrange {first}-{last}");
        }
        if let Some((mark, mask)) = self.fwmark {
            out += &format!(" fwmark {mark:#x}/{mask:#x}");
        }
        out
    }

    /// Whether a packet of `flow` is selected: a selector the flow says
    /// nothing about does not match (the kernel compares with zero).
    pub fn matches(&self, flow: &Flow) -> bool {
        let within = |range: Option<(u16, u16)>, port: Option<u16>| {
            range.is_none_or(|(first, last)| port.is_some_and(|p| (first..=last).contains(&p)))
        };
        self.ipproto.is_none_or(|p| flow.ipproto == Some(p))
            && within(self.sport, flow.sport)
            && within(self.dport, flow.dport)
            && self.uid.is_none_or(|(first, last)| (first..=last).contains(&flow.uid.unwrap_or(0)))
            && self.fwmark.is_none_or(|(mark, mask)| flow.mark.unwrap_or(0) & mask == mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_as_ip_rule_words_and_match_flows() {
        let selectors = Selectors {
            ipproto: Some(6),
            dport: Some((443, 443)),
            uid: Some((1000, 1999)),
            fwmark: Some((0x1, 0xff)),
            ..Selectors::default()
        };
        assert_eq!(selectors.args(), " ipproto tcp dport 443 uidrange 1000-1999 fwmark 0x1/0xff");
        let flow =
            Flow { ipproto: Some(6), dport: Some(443), uid: Some(1000), mark: Some(0x101), sport: None };
        assert!(selectors.matches(&flow));
        assert!(!selectors.matches(&Flow { dport: Some(80), ..flow }));
        assert!(!selectors.matches(&Flow { ipproto: Some(17), ..flow }));
        assert!(!selectors.matches(&Flow { uid: Some(2000), ..flow }));
        assert!(!selectors.matches(&Flow { mark: Some(0x2), ..flow }));
        assert!(Selectors::default().matches(&Flow::default()));
        assert_eq!(parse_range::<u16>("1000-2000"), Some((1000, 2000)));
        assert_eq!(parse_range::<u16>("53"), Some((53, 53)));
        assert_eq!(ipproto_number("udp"), Some(17));
    }
}
