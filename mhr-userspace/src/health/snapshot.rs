//! The daemon's health view on disk (`health.json`, written every round):
//! what `mhr status` and `mhr check` read, and what the next start
//! remembers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FamilyHealth, HealthBook};
use crate::model::Family;

/// The daemon's health view, for `mhr status` and `mhr check`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    pub pid: u32,
    /// Unix seconds when written.
    pub written: u64,
    pub uplinks: Vec<HealthRecord>,
    /// Per family, the uplinks holding main's default.
    pub active: BTreeMap<Family, Vec<String>>,
    /// Why the daemon's guard is not running (it retries with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub interface: String,
    pub family: Family,
    #[serde(flatten)]
    pub health: FamilyHealth,
}

impl HealthSnapshot {
    pub fn of(book: &HealthBook, active: &BTreeMap<Family, Vec<String>>, now: u64) -> Self {
        Self {
            pid: std::process::id(),
            written: now,
            uplinks: book
                .entries()
                .map(|((interface, family), health)| HealthRecord {
                    interface: interface.clone(),
                    family: *family,
                    health: health.clone(),
                })
                .collect(),
            active: active.clone(),
            guard_error: None,
        }
    }

    pub fn get(&self, interface: &str, family: Family) -> Option<&FamilyHealth> {
        self.uplinks.iter().find(|r| r.interface == interface && r.family == family).map(|r| &r.health)
    }
}

/// How old a remembered judgement may be to count at start-up.
pub const REMEMBER_FOR: u64 = 600;

/// Uplink families with probe targets.
pub fn probed(config: &crate::config::Config) -> Vec<(String, Family)> {
    config
        .uplinks
        .iter()
        .flat_map(|u| {
            [Family::V4, Family::V6]
                .into_iter()
                .filter(|family| u.probes(*family).next().is_some())
                .map(|family| (u.interface.clone(), family))
        })
        .collect()
}

/// Puts back the last judgement of an earlier run (a daemon killed leaves
/// `health.json`, one stopped `health-last.json`) when it is at most
/// [`REMEMBER_FOR`] old: a restart during a failover keeps the failover.
pub fn remember(book: &mut HealthBook, state_dir: &std::path::Path, now: u64) {
    let read = |snapshot: Result<HealthSnapshot, crate::state::StateError>| {
        snapshot.ok().filter(|s| s.written > 0 && s.written + REMEMBER_FOR >= now)
    };
    let newest =
        [read(crate::state::read_health(state_dir)), read(crate::state::read_retired_health(state_dir))]
            .into_iter()
            .flatten()
            .max_by_key(|s| s.written);
    let Some(snapshot) = newest else { return };
    for record in snapshot.uplinks {
        tracing::info!(
            uplink = %record.interface,
            family = %record.family,
            healthy = record.health.healthy,
            age_seconds = now.saturating_sub(snapshot.written),
            "remembered health"
        );
        book.remember(&record.interface, record.family, record.health);
    }
}
