//! The guard as the commands and the daemon deploy it under a config:
//! which uplinks it protects for a plan, and loading, applying and removing
//! it. Kept apart from the routing engine, which knows nothing of it.

use super::{Guard, GuardAttachment, GuardError, GuardUplink};
use crate::{config::Config, model::Framing, plan::Desired};

pub struct Deployment<'a> {
    config: &'a Config,
}

impl<'a> Deployment<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self { config }
    }

    /// What the guard protects: every planned uplink whose packets it can
    /// parse (Ethernet or bare IP) with the addresses it holds, `allow`
    /// prefixes and mode. Other link types are left unguarded rather than
    /// misread.
    pub fn uplinks(&self, desired: &Desired) -> Vec<GuardUplink> {
        desired
            .uplinks
            .iter()
            .filter(|plan| plan.framing != Framing::Other)
            .filter_map(|plan| {
                let uplink = self.config.uplinks.iter().find(|u| u.interface == plan.interface)?;
                Some(GuardUplink {
                    interface: plan.interface.clone(),
                    ifindex: plan.index,
                    // A down uplink's addresses are still its own: a packet
                    // from one elsewhere is asymmetric, not spoofed.
                    addresses: plan.held.clone(),
                    allow: uplink.allow.clone(),
                    enforcement: self.config.enforcement(uplink),
                    l3: plan.framing == Framing::Ip,
                    steer_to: super::SteerRoute::of(plan),
                })
            })
            .collect()
    }

    /// Whether the maps hold every uplink and address of `desired`: checked
    /// before `apply` changes anything.
    pub fn check_capacity(&self, desired: &Desired) -> Result<(), GuardError> {
        super::check_capacity(&self.uplinks(desired))
    }

    /// Loads the guard, reusing its pinned maps (counters continue).
    pub fn load(&self) -> Result<Guard, GuardError> {
        Guard::load(&self.config.guard.pin_dir)
    }

    /// Fills the guard's maps and attaches it to every uplink, replacing an
    /// earlier program atomically.
    pub fn apply(&self, guard: &mut Guard, desired: &Desired) -> Result<Vec<GuardAttachment>, GuardError> {
        let uplinks = self.uplinks(desired);
        guard.configure(&uplinks)?;
        guard.attach(&uplinks, self.config.guard.attach)
    }

    /// Detaches the guard everywhere and removes its pins, those of other
    /// layout versions included. Returns what was done, one line each.
    pub fn down(&self) -> Result<Vec<String>, GuardError> {
        let interfaces: Vec<String> = self.config.uplinks.iter().map(|u| u.interface.clone()).collect();
        let pin_dir = &self.config.guard.pin_dir;
        let other = super::versions::remove_other_versions(pin_dir)?;
        let mut done: Vec<String> =
            other.into_iter().map(|line| format!("another layout version's guard: {line}")).collect();
        done.extend(super::teardown(pin_dir, &interfaces)?.into_iter().map(|pin| format!("detached {pin}")));
        Ok(done)
    }

    /// Removes everything under the pin directory, whatever its version or
    /// shape, and guard filters on every interface (`down --purge-pins`).
    pub fn purge(&self) -> Result<Vec<String>, GuardError> {
        super::versions::purge(&self.config.guard.pin_dir)
    }
}
