//! A probe target as written in an uplink's `probe` list: `"203.0.113.1"`
//! (ICMP echo), `"tcp:203.0.113.1:443"` (a TCP connect), `"dns:192.0.2.53"`
//! (a DNS query, port 53 unless given) or `"http://203.0.113.1/health"` (an
//! HTTP GET). Targets are address literals: a name would be resolved
//! through main's resolver and default, not through the uplink it tests.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Family;

/// How one target is probed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeTarget {
    /// An ICMP (or ICMPv6) echo; any reply counts.
    Icmp(IpAddr),
    /// A TCP connect; an accepted or a refused connection counts (both
    /// prove the path).
    Tcp(SocketAddr),
    /// A DNS query for the root's SOA over UDP; any answer counts.
    Dns(SocketAddr),
    /// An HTTP/1.1 GET; a 2xx or 3xx status counts.
    Http { address: SocketAddr, path: String },
}

/// Why a `probe` entry was refused, in the words the config check prints.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "unknown probe scheme \"{0}\": use an address (ICMP), tcp:ADDRESS:PORT, dns:ADDRESS or http://ADDRESS/PATH"
    )]
    UnknownScheme(String),
    #[error("\"{0}\" is not an IPv4 or IPv6 address (probe targets are address literals, not names)")]
    BadAddress(String),
    #[error("port 0 cannot be probed (ports are 1-65535)")]
    PortZero,
    #[error("\"{0}\" is not a port (1-65535)")]
    BadPort(String),
    #[error("tcp: needs a port, as in tcp:203.0.113.1:443 or tcp:[2001:db8::1]:443")]
    MissingPort,
    #[error("https is not probed (no TLS): use http:// or tcp:ADDRESS:443")]
    Https,
}

impl ProbeTarget {
    pub fn address(&self) -> IpAddr {
        match self {
            Self::Icmp(address) => *address,
            Self::Tcp(socket) | Self::Dns(socket) | Self::Http { address: socket, .. } => socket.ip(),
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.address())
    }

    /// The method's name, for logs and metrics.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Icmp(_) => "icmp",
            Self::Tcp(_) => "tcp",
            Self::Dns(_) => "dns",
            Self::Http { .. } => "http",
        }
    }
}

/// `ADDRESS` or `[ADDRESS]` (IPv6 with a port needs brackets).
fn parse_address(text: &str) -> Result<IpAddr, TargetError> {
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    bare.parse().map_err(|_| TargetError::BadAddress(text.to_owned()))
}

fn parse_port(text: &str) -> Result<u16, TargetError> {
    match text.parse::<u16>() {
        Ok(0) => Err(TargetError::PortZero),
        Ok(port) => Ok(port),
        Err(_) => Err(TargetError::BadPort(text.to_owned())),
    }
}

/// `ADDRESS:PORT`, `[V6]:PORT`, or without a port `default` (None: required).
fn parse_socket(text: &str, default: Option<u16>) -> Result<SocketAddr, TargetError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| TargetError::BadAddress(text.to_owned()))?;
        match after.strip_prefix(':') {
            Some(port) => (v6, Some(port)),
            None if after.is_empty() => (v6, None),
            None => return Err(TargetError::BadAddress(text.to_owned())),
        }
    } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
        // A bare IPv6 address: its colons are not a port.
        (text, None)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let address = parse_address(host)?;
    let port = match port {
        Some(port) => parse_port(port)?,
        None => default.ok_or(TargetError::MissingPort)?,
    };
    Ok(SocketAddr::new(address, port))
}

impl FromStr for ProbeTarget {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(Self::Icmp(address));
        }
        if let Some(rest) = text.strip_prefix("http://") {
            let (authority, path) = rest.find('/').map_or((rest, "/"), |slash| rest.split_at(slash));
            let address = parse_socket(authority, Some(80))?;
            return Ok(Self::Http { address, path: path.to_owned() });
        }
        if text.starts_with("https://") {
            return Err(TargetError::Https);
        }
        match text.split_once(':') {
            Some(("tcp", rest)) => Ok(Self::Tcp(parse_socket(rest, None)?)),
            Some(("dns", rest)) => Ok(Self::Dns(parse_socket(rest, Some(53))?)),
            Some(("icmp", rest)) => Ok(Self::Icmp(parse_address(rest)?)),
            Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphabetic()) => {
                Err(TargetError::UnknownScheme(scheme.to_owned()))
            }
            _ => Err(TargetError::BadAddress(text.to_owned())),
        }
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Icmp(address) => write!(f, "{address}"),
            Self::Tcp(socket) => write!(f, "tcp:{socket}"),
            Self::Dns(socket) if socket.port() == 53 => write!(f, "dns:{}", socket.ip()),
            Self::Dns(socket) => write!(f, "dns:{socket}"),
            Self::Http { address, path } if address.port() == 80 => match address.ip() {
                IpAddr::V4(v4) => write!(f, "http://{v4}{path}"),
                IpAddr::V6(v6) => write!(f, "http://[{v6}]{path}"),
            },
            Self::Http { address, path } => write!(f, "http://{address}{path}"),
        }
    }
}

impl<'de> Deserialize<'de> for ProbeTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for ProbeTarget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_reads_and_writes_back_as_written() {
        for text in [
            "203.0.113.1",
            "2001:db8::1",
            "tcp:203.0.113.1:443",
            "tcp:[2001:db8::1]:443",
            "dns:192.0.2.53",
            "dns:192.0.2.53:5353",
            "dns:[2001:db8::53]:5353",
            "http://203.0.113.1/health",
            "http://203.0.113.1:8080/",
            "http://[2001:db8::1]/health?full=1",
        ] {
            let target: ProbeTarget = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(target.to_string(), text);
        }
    }

    #[test]
    fn defaults_and_families() {
        let dns: ProbeTarget = "dns:2001:db8::53".parse().unwrap();
        assert_eq!(dns, ProbeTarget::Dns("[2001:db8::53]:53".parse().unwrap()));
        assert_eq!(dns.family(), Family::V6);
        let http: ProbeTarget = "http://192.0.2.8".parse().unwrap();
        assert_eq!(http, ProbeTarget::Http { address: "192.0.2.8:80".parse().unwrap(), path: "/".into() });
        assert_eq!(http.family(), Family::V4);
        assert_eq!(
            "icmp:192.0.2.1".parse::<ProbeTarget>().unwrap(),
            ProbeTarget::Icmp("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        let error = |text: &str| text.parse::<ProbeTarget>().unwrap_err();
        assert_eq!(error("udp:192.0.2.1:53"), TargetError::UnknownScheme("udp".into()));
        assert_eq!(error("tcp:192.0.2.1:0"), TargetError::PortZero);
        assert_eq!(error("http://192.0.2.1:0/"), TargetError::PortZero);
        assert_eq!(error("tcp:192.0.2.1"), TargetError::MissingPort);
        assert_eq!(error("tcp:192.0.2.1:http"), TargetError::BadPort("http".into()));
        assert_eq!(error("tcp:192.0.2.1:70000"), TargetError::BadPort("70000".into()));
        assert_eq!(error("http://example.com/"), TargetError::BadAddress("example.com".into()));
        assert_eq!(error("https://192.0.2.1/"), TargetError::Https);
        assert_eq!(error("192.0.2.300"), TargetError::BadAddress("192.0.2.300".into()));
        assert!(error("udp:192.0.2.1:53").to_string().contains("tcp:ADDRESS:PORT"));
    }
}
