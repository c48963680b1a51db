//! What the lab's routers do to the host's upstream: silence it, make it
//! lossy, put it back.

use super::{CLIENT, SeedLab, router::nft};
use crate::Result;

impl SeedLab {
    /// Router `index` keeps its links and answers ARP/ND but forwards
    /// nothing: an upstream that went silent (its internet side is lost).
    pub fn silence_upstream(&self, index: usize) -> Result<()> {
        nft(
            &self.routers[index],
            "table inet mhr_lab_block {\n  chain forward {\n    type filter hook forward priority -20; policy drop;\n  }\n}\n",
        )
    }

    /// Router `index` drops `percent` of what it forwards to the internet
    /// client, at random: a lossy upstream (this kernel has no netem).
    /// Replies come back whole, so a sender's retransmissions follow the
    /// loss closely. Undone by [`SeedLab::restore_upstream`].
    pub fn lossy_upstream(&self, index: usize, percent: u32) -> Result<()> {
        nft(
            &self.routers[index],
            &format!(
                "table inet mhr_lab_block {{\n  chain forward {{\n    type filter hook forward priority -20; policy accept;\n    ip daddr {CLIENT} numgen random mod 100 < {percent} drop\n  }}\n}}\n"
            ),
        )
    }

    /// Undoes [`SeedLab::silence_upstream`].
    pub fn restore_upstream(&self, index: usize) -> Result<()> {
        nft(&self.routers[index], "delete table inet mhr_lab_block\n")
    }
}
