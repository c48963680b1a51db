//! Nexthop objects (`ip nexthop`, Linux 5.3; resilient groups 5.13): how
//! `policy = "balance"` keeps flows where they are when an uplink leaves.
//!
//! A multipath route hashes flows with hash-threshold: every next hop owns
//! a contiguous slice of the hash space, and removing one re-slices all of
//! them, moving flows between uplinks that stayed healthy. A resilient
//! group hashes into a table of buckets instead; a member that leaves
//! hands only its own buckets to the others, and one that joins takes
//! buckets only once they have been idle.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Family, Names};

/// mhr's nexthop ids start here ("mh"): far above the small ids `ip` users
/// and routing daemons hand out.
pub const NEXTHOP_ID_BASE: u32 = 0x6d68_0000;
/// Buckets of mhr's resilient groups: enough to share out any weights of
/// a few uplinks (1–256) closely.
pub const GROUP_BUCKETS: u16 = 512;
/// A bucket moves to a returning uplink once no packet hashed to it for
/// this long (seconds): its flows have ended.
pub const GROUP_IDLE_TIMER: u32 = 120;
/// And at the latest after the group has been unbalanced this long
/// (seconds), busy or not: a returning uplink gets its share.
pub const GROUP_UNBALANCED_TIMER: u32 = 600;

/// The id of mhr's resilient group for `family`.
pub fn group_id(family: Family) -> u32 {
    NEXTHOP_ID_BASE + family_bit(family)
}

/// The id of the nexthop of the uplink at `position` in the config.
pub fn member_id(position: usize, family: Family) -> u32 {
    let position = u32::try_from(position).unwrap_or(u32::MAX / 4);
    NEXTHOP_ID_BASE + 2 + 2 * position + family_bit(family)
}

fn family_bit(family: Family) -> u32 {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// One nexthop object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Nexthop {
    pub id: u32,
    pub protocol: u8,
    pub kind: NexthopKind,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NexthopKind {
    /// A gateway (or the link itself) on one device.
    Via { family: Family, gateway: Option<IpAddr>, interface: u32, onlink: bool },
    /// A resilient group of nexthops (timers in seconds).
    Resilient { members: Vec<GroupMember>, buckets: u16, idle_timer: u32, unbalanced_timer: u32 },
    /// A group of any other type, or a nexthop of a kind mhr never makes.
    Other,
}

/// A member of a group and its share (1–256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupMember {
    pub id: u32,
    pub weight: u32,
}

impl Nexthop {
    pub fn is_group(&self) -> bool {
        !matches!(self.kind, NexthopKind::Via { .. })
    }

    /// The members of a group (none for a single nexthop).
    pub fn members(&self) -> &[GroupMember] {
        match &self.kind {
            NexthopKind::Resilient { members, .. } => members,
            _ => &[],
        }
    }

    /// `ip nexthop …` arguments after the verb.
    pub fn args(&self, names: &Names) -> String {
        let mut out = format!("id {}", self.id);
        match &self.kind {
            NexthopKind::Via { gateway, interface, onlink, .. } => {
                if let Some(gateway) = gateway {
                    out += &format!(" via {gateway}");
                }
                out += &format!(" dev {}", names.interface(*interface));
                if *onlink {
                    out += " onlink";
                }
            }
            NexthopKind::Resilient { members, buckets, idle_timer, unbalanced_timer } => {
                let members: Vec<String> = members
                    .iter()
                    .map(|m| if m.weight == 1 { m.id.to_string() } else { format!("{},{}", m.id, m.weight) })
                    .collect();
                out += &format!(
                    " group {} type resilient buckets {buckets} idle_timer {idle_timer} unbalanced_timer {unbalanced_timer}",
                    members.join("/")
                );
            }
            NexthopKind::Other => out += " (not mhr's kind)",
        }
        out + &format!(" proto {}", self.protocol)
    }

    /// The `ip` command that performs `verb` (add/replace/del).
    pub fn command(&self, verb: &str, names: &Names) -> String {
        let flag = match &self.kind {
            NexthopKind::Via { family, .. } => format!(" {}", family.ip_flag()),
            _ => String::new(),
        };
        format!("ip{flag} nexthop {verb} {}", self.args(names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_by_family_and_position_and_groups_never_take_a_members() {
        let mut ids = vec![group_id(Family::V4), group_id(Family::V6)];
        for position in 0..64 {
            ids.extend([member_id(position, Family::V4), member_id(position, Family::V6)]);
        }
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }

    #[test]
    fn groups_and_gateways_render_as_ip_writes_them() {
        let names = Names([(3, "ens3".to_owned())].into_iter().collect());
        let via = Nexthop {
            id: 7,
            protocol: 210,
            kind: NexthopKind::Via {
                family: Family::V4,
                gateway: Some("10.0.3.1".parse().unwrap()),
                interface: 3,
                onlink: false,
            },
        };
        assert_eq!(via.command("add", &names), "ip -4 nexthop add id 7 via 10.0.3.1 dev ens3 proto 210");
        let group = Nexthop {
            id: 9,
            protocol: 210,
            kind: NexthopKind::Resilient {
                members: vec![GroupMember { id: 7, weight: 1 }, GroupMember { id: 8, weight: 3 }],
                buckets: 512,
                idle_timer: 120,
                unbalanced_timer: 600,
            },
        };
        assert_eq!(
            group.command("replace", &names),
            "ip nexthop replace id 9 group 7/8,3 type resilient buckets 512 idle_timer 120 unbalanced_timer 600 proto 210"
        );
    }
}
