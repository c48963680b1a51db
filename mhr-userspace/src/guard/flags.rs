//! Flagged-packet records from the guard's ring buffer, decoded.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use mhr_common::guard::{FlagRecord, Verdict};
use serde::Serialize;

use super::maps::{GuardMaps, source_address};

/// Where a loaded guard's flagged packets come from: its ring buffer, and
/// its maps to name uplinks by slot.
pub struct FlagSource {
    pub ring: aya::maps::RingBuf<aya::maps::MapData>,
    pub names: GuardMaps,
}

/// One flagged packet. It has one schema everywhere: `watch` (text and
/// `--json`) and the daemon's log lines use the same field names:
/// uplink, ifindex, verdict, src, dst, proto, sport, dport, vlan, len,
/// dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlaggedPacket {
    pub uplink: String,
    pub ifindex: u32,
    pub verdict: &'static str,
    #[serde(rename = "src")]
    pub source: Option<IpAddr>,
    #[serde(rename = "dst")]
    pub destination: Option<IpAddr>,
    #[serde(rename = "proto", serialize_with = "serialize_protocol")]
    pub protocol: u8,
    #[serde(rename = "sport")]
    pub source_port: u16,
    #[serde(rename = "dport")]
    pub destination_port: u16,
    #[serde(rename = "len")]
    pub length: u32,
    pub vlan: u16,
    pub dropped: bool,
}

fn serialize_protocol<S: serde::Serializer>(protocol: &u8, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&ip_protocol_name(*protocol))
}

impl FlaggedPacket {
    /// Decodes a ring buffer item; `None` if it is not a whole record.
    pub fn decode(bytes: &[u8], names: &BTreeMap<u32, String>) -> Option<Self> {
        if bytes.len() < size_of::<FlagRecord>() {
            return None;
        }
        // SAFETY: FlagRecord is plain old data and the buffer is long
        // enough; read_unaligned copes with any alignment.
        let record: FlagRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Self {
            uplink: names.get(&record.slot).cloned().unwrap_or_else(|| format!("slot{}", record.slot)),
            ifindex: record.ifindex,
            verdict: Verdict::from_u8(record.verdict).map_or("unknown", Verdict::name),
            source: source_address(record.family, &record.source),
            destination: source_address(record.family, &record.destination),
            protocol: record.protocol,
            source_port: record.source_port,
            destination_port: record.destination_port,
            length: record.length,
            vlan: record.vlan,
            dropped: record.dropped != 0,
        })
    }
}

pub fn ip_protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        other => other.to_string(),
    }
}

fn show(address: Option<IpAddr>) -> String {
    address.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

impl fmt::Display for FlaggedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uplink={} verdict={} src={} dst={} proto={}",
            self.uplink,
            self.verdict,
            show(self.source),
            show(self.destination),
            ip_protocol_name(self.protocol)
        )?;
        if self.source_port != 0 || self.destination_port != 0 {
            write!(f, " sport={} dport={}", self.source_port, self.destination_port)?;
        }
        if self.vlan != 0 {
            write!(f, " vlan={}", self.vlan)?;
        }
        write!(f, " len={} dropped={}", self.length, self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mhr_common::guard::PacketFamily;

    #[test]
    fn records_decode_into_readable_lines() {
        let mut record = FlagRecord {
            ifindex: 3,
            slot: 1,
            length: 142,
            source_port: 40000,
            destination_port: 53,
            verdict: Verdict::Spoofed as u8,
            family: PacketFamily::Ipv4 as u8,
            protocol: 17,
            dropped: 1,
            vlan: 0,
            _pad: 0,
            source: [0; 16],
            destination: [0; 16],
        };
        record.source[..4].copy_from_slice(&[192, 0, 2, 66]);
        record.destination[..4].copy_from_slice(&[10, 0, 4, 1]);
        // SAFETY: viewing a plain old data struct as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const record).cast::<u8>(), size_of::<FlagRecord>()) };
        let names = BTreeMap::from([(1, "ens4".to_owned())]);
        let packet = FlaggedPacket::decode(bytes, &names).unwrap();
        assert_eq!(
            packet.to_string(),
            "uplink=ens4 verdict=spoofed src=192.0.2.66 dst=10.0.4.1 proto=udp sport=40000 dport=53 len=142 dropped=true"
        );
        assert_eq!(FlaggedPacket::decode(&bytes[..10], &names), None);
        let json = serde_json::to_value(&packet).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "dport", "dropped", "dst", "ifindex", "len", "proto", "sport", "src", "uplink", "verdict",
                "vlan"
            ],
            "the same names as the text line and the daemon's log"
        );
        assert_eq!(json["proto"], "udp");
    }
}
