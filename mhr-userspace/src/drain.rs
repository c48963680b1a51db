//! Drained uplinks (`mhr drain`): taken out of use for maintenance. A
//! drained uplink carries no main default, no balanced flows and no
//! steering, while its table and `from` rules stay (replies to its
//! addresses stay symmetric). Kept in `state_dir/drained.json`, so a drain
//! survives a daemon restart; one with an end expires by itself.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::state::{self, StateError};

/// One drain: since when, and until when (None: until `mhr undrain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

impl Drain {
    pub fn active(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// Drains by uplink interface.
pub type Drains = BTreeMap<String, Drain>;

/// The drains in force at `now` (expired ones are left out).
pub fn read(state_dir: &Path, now: u64) -> Result<Drains, StateError> {
    let all: Drains = state::read_json_optional(&crate::paths::drained(state_dir))?.unwrap_or_default();
    Ok(all.into_iter().filter(|(_, drain)| drain.active(now)).collect())
}

/// Drains `uplink` from `now` for `duration` (None: until undrained); a
/// drain already there is replaced (its end moves). Expired drains go.
pub fn drain(
    state_dir: &Path,
    uplink: &str,
    now: u64,
    duration: Option<std::time::Duration>,
) -> Result<Drain, StateError> {
    let _lock = lock(state_dir)?;
    let mut drains = read(state_dir, now)?;
    let since = drains.get(uplink).map_or(now, |d| d.since);
    let drain = Drain { since, until: duration.map(|d| now.saturating_add(d.as_secs().max(1))) };
    drains.insert(uplink.to_owned(), drain);
    write(state_dir, &drains)?;
    Ok(drain)
}

/// Ends `uplink`'s drain; whether there was one in force.
pub fn undrain(state_dir: &Path, uplink: &str, now: u64) -> Result<bool, StateError> {
    let _lock = lock(state_dir)?;
    let mut drains = read(state_dir, now)?;
    let was = drains.remove(uplink).is_some();
    write(state_dir, &drains)?;
    Ok(was)
}

/// Held while a drain is read, changed and written: two `mhr drain` at
/// once must not lose one. Not the writer lock, which `mhr run` holds.
fn lock(state_dir: &Path) -> Result<std::fs::File, StateError> {
    let path = crate::paths::drained_lock(state_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StateError::Write { path: path.clone(), source })?;
    file.lock().map_err(|source| StateError::Write { path, source })?;
    Ok(file)
}

fn write(state_dir: &Path, drains: &Drains) -> Result<(), StateError> {
    let path = crate::paths::drained(state_dir);
    if drains.is_empty() { state::remove_file(&path) } else { state::write_json_durably(&path, drains) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_drain_is_kept_replaced_expired_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        assert!(read(state, 100).unwrap().is_empty());
        drain(state, "ens3", 100, None).unwrap();
        let timed = drain(state, "ens4", 100, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(timed, Drain { since: 100, until: Some(160) });
        assert_eq!(read(state, 159).unwrap().len(), 2);
        assert_eq!(read(state, 160).unwrap().keys().collect::<Vec<_>>(), ["ens3"], "ens4's drain expired");
        // Draining again moves the end, keeps the start.
        let longer = drain(state, "ens3", 130, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(longer, Drain { since: 100, until: Some(140) });
        assert!(undrain(state, "ens3", 131).unwrap());
        assert!(!undrain(state, "ens3", 131).unwrap(), "nothing left to end");
        assert!(crate::paths::drained(state).exists(), "ens4's drain runs until 160");
        assert!(undrain(state, "ens4", 131).unwrap());
        assert!(!crate::paths::drained(state).exists(), "no drains: no file");
        let forever = drain(state, "ens3", u64::MAX - 5, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(forever.until, Some(u64::MAX), "saturates, no overflow");
        assert_eq!(crate::clock::rfc3339(u64::MAX), format!("@{}", u64::MAX), "no panic past 9999");
    }
}
