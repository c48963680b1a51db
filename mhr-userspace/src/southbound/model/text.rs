//! The model's host as text, one object per line, the way `ip` writes them:
//!
//! ```text
//! link ens3 index 2 up carrier
//! addr ens3 10.0.3.10/24
//! ip -4 route add default via 10.0.3.1 dev ens3 metric 100 proto 16 table main
//! ip -4 rule add from 10.0.3.10 lookup 7100 priority 7100 protocol 210
//! neighbour-failed ens3 10.0.3.1
//! ```
//!
//! Scenario tests describe the host before in it and compare the host
//! after with it; `#` starts a comment.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    Address, Family, Framing, Link, MAIN_TABLE, NextHop, Observed, Route, Rule, SCOPE_LINK, SCOPE_UNIVERSE,
    rule_command, selectors::parse_range,
};

const SCOPE_HOST: u8 = 254;

/// A line the parser could not read, with its number (from 1).
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}: {text}")]
pub struct TextError {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

pub fn parse(text: &str) -> Result<Observed, TextError> {
    let mut host = Observed::default();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fail = |reason: String| TextError { line: number + 1, text: line.to_owned(), reason };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["link", name, "index", index, flags @ ..] => {
                let index = index.parse().map_err(|_| fail(format!("bad index {index}")))?;
                host.links.push(link(name, index, flags).map_err(fail)?);
            }
            ["addr", name, address, flags @ ..] => {
                let interface = index_of(&host, name).map_err(fail)?;
                let net: IpNet = address.parse().map_err(|_| fail(format!("bad address {address}")))?;
                host.addresses.push(Address { interface, address: net.addr(), prefix_len: net.prefix_len() });
                if flags.contains(&"unpreferred") {
                    host.unpreferred.insert((interface, net.addr()));
                }
            }
            ["neighbour-failed", name, address] => {
                let interface = index_of(&host, name).map_err(fail)?;
                let address = address.parse().map_err(|_| fail(format!("bad address {address}")))?;
                host.failed_neighbours.insert((interface, address));
            }
            ["ip", flag, "route", "add", args @ ..] => {
                let family = family(flag).map_err(fail)?;
                host.routes.push(route(&host, family, args).map_err(fail)?);
            }
            ["ip", "nexthop", "add", args @ ..] => {
                let nexthop =
                    super::nexthops::parse(None, args, |name| index_of(&host, name)).map_err(fail)?;
                host.nexthops.get_or_insert_default().push(nexthop);
            }
            ["ip", flag, "nexthop", "add", args @ ..] => {
                let family = family(flag).map_err(fail)?;
                let nexthop =
                    super::nexthops::parse(Some(family), args, |name| index_of(&host, name)).map_err(fail)?;
                host.nexthops.get_or_insert_default().push(nexthop);
            }
            ["ip", flag, "rule", "add", args @ ..] => {
                let family = family(flag).map_err(fail)?;
                host.rules.push(rule(family, args).map_err(fail)?);
            }
            _ => {
                return Err(fail(
                    "not a link, addr, neighbour-failed, ip nexthop add, ip route add or ip rule add line"
                        .into(),
                ));
            }
        }
    }
    // This kernel has nexthop objects (Linux 5.13+), whether any are there or not.
    host.nexthops.get_or_insert_default();
    super::nexthops::expand_parsed(&mut host);
    Ok(host)
}

/// The host, one object per line, in an order that does not depend on
/// the order changes were made in.
pub fn render(host: &Observed) -> String {
    let names = host.names();
    let mut out = String::new();
    let mut links = host.links.clone();
    links.sort_by_key(|l| l.index);
    for link in &links {
        out += &format!("link {} index {}", link.name, link.index);
        out += if link.up { " up" } else { " down" };
        out += if link.carrier { " carrier" } else { " no-carrier" };
        if link.point_to_point {
            out += " p2p";
        }
        if link.framing == Framing::Ip {
            out += " ip";
        }
        out += "\n";
    }
    let mut addresses = host.addresses.clone();
    addresses.sort();
    for a in &addresses {
        out += &format!("addr {} {}/{}", names.interface(a.interface), a.address, a.prefix_len);
        if host.unpreferred.contains(&(a.interface, a.address)) {
            out += " unpreferred";
        }
        out += "\n";
    }
    for (interface, address) in &host.failed_neighbours {
        out += &format!("neighbour-failed {} {address}\n", names.interface(*interface));
    }
    let mut rules = host.rules.clone();
    rules.sort_by_key(|r| (r.family, r.priority, r.table, r.source, r.destination));
    for rule in &rules {
        out += &rule_command("add", rule);
        if rule.other_selectors {
            out += " other-selectors";
        }
        out += "\n";
    }
    out += &super::nexthops::render(host);
    let mut routes = host.routes.clone();
    routes.sort_by_key(|r| (r.family(), r.table, r.destination, r.metric, r.protocol));
    for route in &routes {
        out += &names.route_command("add", route);
        out += "\n";
    }
    out
}

fn link(name: &str, index: u32, flags: &[&str]) -> Result<Link, String> {
    let mut link = Link {
        index,
        name: name.to_owned(),
        up: true,
        carrier: true,
        point_to_point: false,
        framing: Framing::Ethernet,
    };
    for flag in flags {
        match *flag {
            "up" => link.up = true,
            "down" => link.up = false,
            "carrier" => link.carrier = true,
            "no-carrier" => link.carrier = false,
            "p2p" => link.point_to_point = true,
            "ip" => link.framing = Framing::Ip,
            other => return Err(format!("unknown link flag {other}")),
        }
    }
    Ok(link)
}

fn index_of(host: &Observed, name: &str) -> Result<u32, String> {
    host.link(name).map(|l| l.index).ok_or_else(|| format!("no link {name} (links come first)"))
}

fn family(flag: &str) -> Result<Family, String> {
    match flag {
        "-4" => Ok(Family::V4),
        "-6" => Ok(Family::V6),
        other => Err(format!("family flag {other}: -4 or -6")),
    }
}

fn table(word: &str) -> Result<u32, String> {
    match word {
        "main" => Ok(MAIN_TABLE),
        number => number.parse().map_err(|_| format!("bad table {number}")),
    }
}

fn number<T: std::str::FromStr>(what: &str, word: Option<&&str>) -> Result<T, String> {
    let word = word.ok_or_else(|| format!("{what} needs a value"))?;
    word.parse().map_err(|_| format!("bad {what} {word}"))
}

fn net(word: &str, family: Family) -> Result<IpNet, String> {
    if word == "default" {
        return Ok(family.default_route());
    }
    word.parse::<IpNet>()
        .or_else(|_| word.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("bad prefix {word}"))
}

fn route(host: &Observed, family: Family, args: &[&str]) -> Result<Route, String> {
    let (first, mut rest) = args.split_first().ok_or("a route needs a destination")?;
    let mut route = Route {
        table: MAIN_TABLE,
        destination: net(first, family)?,
        gateway: None,
        interface: None,
        source: None,
        protocol: 4,
        scope: SCOPE_UNIVERSE,
        metric: None,
        onlink: false,
        multipath: Vec::new(),
        nexthop_group: None,
    };
    while let Some((word, after)) = rest.split_first() {
        rest = after;
        let value = rest.first();
        let mut take = true;
        match *word {
            "via" => route.gateway = Some(number("gateway", value)?),
            "dev" => route.interface = Some(index_of(host, value.ok_or("dev needs a name")?)?),
            "src" => route.source = Some(number("src", value)?),
            "metric" => route.metric = Some(number("metric", value)?),
            "proto" => route.protocol = number("proto", value)?,
            "table" => route.table = table(value.ok_or("table needs a value")?)?,
            "scope" => {
                route.scope = match value.copied() {
                    Some("link") => SCOPE_LINK,
                    Some("host") => SCOPE_HOST,
                    Some("global") => SCOPE_UNIVERSE,
                    other => return Err(format!("bad scope {other:?}")),
                }
            }
            "onlink" => {
                route.onlink = true;
                take = false;
            }
            "nhid" => route.nexthop_group = Some(number("nhid", value)?),
            "nexthop" => {
                let mut hop = NextHop { gateway: None, interface: 0, weight: 1 };
                take = false;
                while let Some((key, after)) = rest.split_first() {
                    let value = after.first();
                    match *key {
                        "via" => hop.gateway = Some(number("gateway", value)?),
                        "dev" => hop.interface = index_of(host, value.ok_or("dev needs a name")?)?,
                        "weight" => hop.weight = number("weight", value)?,
                        _ => break,
                    }
                    rest = &after[1.min(after.len())..];
                }
                route.multipath.push(hop);
            }
            other => return Err(format!("unknown route word {other}")),
        }
        if take {
            rest = &rest[1.min(rest.len())..];
        }
    }
    Ok(route)
}

fn rule(family: Family, args: &[&str]) -> Result<Rule, String> {
    let mut rule = Rule {
        family,
        priority: 0,
        table: MAIN_TABLE,
        source: None,
        destination: None,
        protocol: 0,
        suppress_prefixlength: None,
        selectors: Default::default(),
        other_selectors: false,
    };
    let mut rest = args;
    while let Some((word, after)) = rest.split_first() {
        let value = after.first();
        rest = &after[1.min(after.len())..];
        match *word {
            "from" => {
                let value = value.ok_or("from needs a value")?;
                rule.source = (*value != "all").then(|| net(value, family)).transpose()?;
            }
            "to" => rule.destination = Some(net(value.ok_or("to needs a value")?, family)?),
            "lookup" => rule.table = table(value.ok_or("lookup needs a table")?)?,
            "suppress_prefixlength" => {
                rule.suppress_prefixlength = Some(number("suppress_prefixlength", value)?)
            }
            "ipproto" => {
                let value = value.ok_or("ipproto needs a value")?;
                rule.selectors.ipproto =
                    Some(crate::model::selectors::ipproto_number(value).ok_or("ipproto needs a protocol")?);
            }
            "sport" | "dport" | "uidrange" => {
                let text = value.ok_or("a range needs a value")?;
                let bad = || format!("{word} {text}: not a range");
                match *word {
                    "sport" => rule.selectors.sport = Some(parse_range(text).ok_or_else(bad)?),
                    "dport" => rule.selectors.dport = Some(parse_range(text).ok_or_else(bad)?),
                    _ => rule.selectors.uid = Some(parse_range(text).ok_or_else(bad)?),
                }
            }
            "fwmark" => {
                let text = value.ok_or("fwmark needs a value")?;
                let hex = |t: &str| u32::from_str_radix(t.trim_start_matches("0x"), 16).ok();
                let (mark, mask) = text.split_once('/').unwrap_or((text, "0xffffffff"));
                rule.selectors.fwmark =
                    Some((hex(mark).ok_or("fwmark: hex")?, hex(mask).ok_or("fwmark: hex")?));
            }
            "priority" | "pref" => rule.priority = number("priority", value)?,
            "protocol" => rule.protocol = number("protocol", value)?,
            "other-selectors" => {
                rule.other_selectors = true;
                rest = after;
            }
            other => return Err(format!("unknown rule word {other}")),
        }
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const HOST: &str = "\
link ens3 index 2 up carrier
link wg0 index 5 up carrier p2p ip
addr ens3 10.0.3.10/24
addr ens3 2001:db8:3::10/64 unpreferred
neighbour-failed ens3 10.0.3.1
ip -4 rule add from 10.0.3.10 lookup 7100 priority 7100 protocol 210
ip -4 rule add from all lookup main suppress_prefixlength 0 priority 7298 protocol 210
ip -4 rule add from all lookup 500 priority 100 protocol 0 other-selectors
ip -4 route add default via 10.0.3.1 dev ens3 metric 100 proto 16 table main
ip -4 route add 10.0.3.0/24 dev ens3 src 10.0.3.10 scope link proto 2 table main
ip -4 route add default proto 210 table 7199 nexthop via 10.0.3.1 dev ens3 weight 1 nexthop dev wg0 weight 3
ip -6 route add default via fe80::1 dev ens3 onlink metric 1024 proto 16 table main
";

    #[test]
    fn the_text_reads_back_as_it_was_written() {
        let host = parse(HOST).expect("parses");
        assert_eq!(host.links.len(), 2);
        assert_eq!(host.routes.len(), 4);
        assert_eq!(host.routes[2].multipath.len(), 2);
        assert_eq!(host.routes[2].multipath[1], NextHop { gateway: None, interface: 5, weight: 3 });
        assert!(host.routes[3].onlink && host.routes[3].family() == Family::V6);
        assert_eq!(host.rules[1].suppress_prefixlength, Some(0));
        assert!(host.rules[2].other_selectors);
        let again = parse(&render(&host)).expect("its own rendering parses");
        assert_eq!(render(&again), render(&host));
        assert_eq!(again.routes.iter().collect::<BTreeSet<_>>(), host.routes.iter().collect());
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        let err = parse("link ens3 index 2\naddr ens9 10.0.0.1/24\n").expect_err("ens9 is no link");
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("no link ens9"), "{err}");
    }
}
