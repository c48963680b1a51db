//! What mhr keeps on disk: the table names in rt_tables.d (which also keep
//! an uplink's table stable across runs), the last gateway of every uplink
//! (so a flapped link gets its default back before its DHCP client
//! renews), the daemon's health view (for `status`), and the main-table
//! default routes earlier versions moved (so they can be put back). All are
//! written atomically; a corrupt file is set aside, not fatal.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::model::{MovedRoute, RememberedGateways};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not writable or has no room: mhr needs it for its records")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

pub fn tables_path(rt_tables_dir: &Path) -> PathBuf {
    crate::paths::table_names(rt_tables_dir)
}

pub fn moved_path(state_dir: &Path) -> PathBuf {
    crate::paths::moved_routes(state_dir)
}

/// Interface → table, from mhr's rt_tables.d file (empty when absent).
pub fn read_tables(rt_tables_dir: &Path) -> Result<BTreeMap<String, u32>, StateError> {
    let path = tables_path(rt_tables_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let parsed = String::from_utf8(bytes).map_err(|err| err.to_string()).and_then(|text| parse_tables(&text));
    // Only a hint for table allocation, rewritten by the next apply: a
    // corrupt one must not stop `status` or `down`.
    parsed.or_else(|reason| {
        set_aside(&path, &reason);
        Ok(BTreeMap::new())
    })
}

fn parse_tables(text: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut tables = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(id), Some(name), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {}: expected `<table> <name>`", number + 1));
        };
        let id = id.parse().map_err(|_| format!("line {}: `{id}` is not a table number", number + 1))?;
        tables.insert(name.to_owned(), id);
    }
    Ok(tables)
}

pub fn render_tables(tables: &BTreeMap<u32, String>) -> String {
    let mut text =
        String::from("# Written by mhr: one routing table per uplink. `mhr down` removes this file.\n");
    for (id, name) in tables {
        text += &format!("{id} {name}\n");
    }
    text
}

/// Writes the table names, or removes the file when there are none.
pub fn write_tables(rt_tables_dir: &Path, tables: &BTreeMap<u32, String>) -> Result<(), StateError> {
    let path = tables_path(rt_tables_dir);
    if tables.is_empty() {
        return remove_optional(&path);
    }
    write_atomically(&path, &render_tables(tables))
}

pub fn read_moved(state_dir: &Path) -> Result<Vec<MovedRoute>, StateError> {
    read_json(&moved_path(state_dir))
}

pub fn read_gateways(state_dir: &Path) -> Result<RememberedGateways, StateError> {
    read_json(&crate::paths::gateways(state_dir))
}

pub fn write_gateways(state_dir: &Path, gateways: &RememberedGateways) -> Result<(), StateError> {
    write_json(&crate::paths::gateways(state_dir), gateways)
}

pub fn health_path(state_dir: &Path) -> PathBuf {
    crate::paths::health(state_dir)
}

/// Written every health round: not fsynced (it is a view, not a record).
pub fn write_health<T: Serialize>(state_dir: &Path, health: &T) -> Result<(), StateError> {
    let path = health_path(state_dir);
    let text = serde_json::to_string_pretty(health)
        .map_err(|err| StateError::Write { path: path.clone(), source: io::Error::other(err) })?;
    write_file(&path, &text, false)
}

pub fn read_health<T: serde::de::DeserializeOwned + Default>(state_dir: &Path) -> Result<T, StateError> {
    read_json(&health_path(state_dir))
}

pub fn read_retired_health<T: serde::de::DeserializeOwned + Default>(
    state_dir: &Path,
) -> Result<T, StateError> {
    read_json(&crate::paths::retired_health(state_dir))
}

/// Moves a stopping daemon's health view out of the way of `status` and
/// `apply` (no daemon judges any more), keeping it for the next start.
pub fn retire_health(state_dir: &Path) -> Result<(), StateError> {
    let retired = crate::paths::retired_health(state_dir);
    match std::fs::rename(health_path(state_dir), &retired) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(StateError::Write { path: retired, source: err })
        }
        _ => Ok(()),
    }
}

/// A JSON state file; absent means empty. A corrupt one is renamed aside
/// (`NAME.corrupt-UNIXTIME`) with a warning and read as empty: mhr rebuilds
/// what it can from the kernel instead of refusing to work.
fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, StateError> {
    // Bytes, not text: invalid UTF-8 is corruption like any other.
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => return Err(StateError::Read { path: path.to_owned(), source }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok(value),
        Err(err) => {
            set_aside(path, &err.to_string());
            Ok(T::default())
        }
    }
}

/// Renames a corrupt file of mhr's to `NAME.corrupt-UNIXTIME` and warns.
fn set_aside(path: &Path, error: &str) {
    let stamp = crate::clock::unix_seconds();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    let moved = std::fs::rename(path, &aside);
    tracing::warn!(
        path = %path.display(),
        aside = %aside.display(),
        renamed = moved.is_ok(),
        %error,
        "file is corrupt: set aside, continuing without it"
    );
}

/// A JSON state file, `None` when absent (or corrupt: set aside).
pub fn read_json_optional<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    read_json::<Option<T>>(path)
}

/// Writes a JSON state file atomically and durably.
pub fn write_json_durably<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    write_json(path, value)
}

/// Removes a file; absent is fine.
pub fn remove_file(path: &Path) -> Result<(), StateError> {
    remove_optional(path)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| StateError::Write { path: path.to_owned(), source: io::Error::other(err) })?;
    write_atomically(path, &text)
}

/// Writes the moved routes, or removes the file when there are none.
pub fn write_moved(state_dir: &Path, moved: &[MovedRoute]) -> Result<(), StateError> {
    let path = moved_path(state_dir);
    if moved.is_empty() {
        return remove_optional(&path);
    }
    write_json(&path, &moved)
}

fn remove_optional(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Write { path: path.to_owned(), source }),
    }
}

/// A fresh temp file beside `path` (random name, `O_EXCL`: a planted
/// symlink is never followed), fsync, rename: a crash or power loss leaves
/// the old or the new content, never half, and no temp file behind.
fn write_atomically(path: &Path, text: &str) -> Result<(), StateError> {
    write_file(path, text, true)
}

/// Room mhr's records need (a few KiB each, with margin).
const RECORD_RESERVE: usize = 16 * 1024;

/// Whether mhr can write its records in `dir` (creating it if missing):
/// a file of [`RECORD_RESERVE`] bytes is written and synced, so a
/// read-only or full directory fails `apply` with nothing changed.
pub fn check_writable(dir: &Path) -> Result<(), StateError> {
    use std::io::Write as _;

    let fail = |source| StateError::NotWritable { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut probe = tempfile::Builder::new().prefix(".mhr-check-").tempfile_in(dir).map_err(fail)?;
    probe.write_all(&[0; RECORD_RESERVE]).map_err(fail)?;
    probe.as_file().sync_all().map_err(fail)
}

fn write_file(path: &Path, text: &str, durable: bool) -> Result<(), StateError> {
    use std::io::Write as _;

    let fail = |source| StateError::Write { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(());
    }
    let mut file = tempfile::Builder::new().prefix(".mhr-").tempfile_in(dir).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    if durable {
        file.as_file().sync_all().map_err(fail)?;
    }
    file.persist(path).map_err(|err| fail(err.error))?;
    if durable {
        // The rename itself survives a power loss only once the directory is synced.
        sync_dir(dir).map_err(fail)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a file and syncs its directory (absent is fine): for records
/// whose disappearance means something (a confirmation).
pub fn remove_file_durably(path: &Path) -> Result<(), StateError> {
    remove_optional(path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match sync_dir(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(StateError::Write { path: path.to_owned(), source: err })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, GatewaySource, RememberedGateway, Route};

    #[test]
    fn tables_round_trip_through_the_rt_tables_format() {
        let tables = BTreeMap::from([(7100, "ens3".to_owned()), (7101, "ens4".to_owned())]);
        let text = render_tables(&tables);
        assert!(text.contains("7100 ens3\n7101 ens4\n"));
        let parsed = parse_tables(&text).unwrap();
        assert_eq!(parsed, BTreeMap::from([("ens3".to_owned(), 7100), ("ens4".to_owned(), 7101)]));
    }

    #[test]
    fn corrupt_tables_file_names_the_line() {
        assert_eq!(parse_tables("7100 ens3\nbogus\n").unwrap_err(), "line 2: expected `<table> <name>`");
        assert!(parse_tables("x ens3\n").unwrap_err().contains("not a table number"));
    }

    #[test]
    fn state_files_are_written_atomically_and_removed_when_empty() {
        let dir = std::env::temp_dir().join(format!("mhr-state-test-{}", std::process::id()));
        let route = Route {
            table: 254,
            destination: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.0.4.1".parse().unwrap()),
            interface: Some(3),
            source: None,
            protocol: 16,
            scope: 0,
            metric: Some(200),
            onlink: false,
            multipath: Vec::new(),
            nexthop_group: None,
        };
        let moved = vec![MovedRoute { interface: "ens4".into(), route }];
        write_moved(&dir, &moved).unwrap();
        assert_eq!(read_moved(&dir).unwrap(), moved);
        write_moved(&dir, &[]).unwrap();
        assert!(!moved_path(&dir).exists());
        assert!(read_moved(&dir).unwrap().is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(leftovers.is_empty(), "no temp files left behind: {leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_state_file_is_set_aside_and_read_as_empty() {
        let dir = std::env::temp_dir().join(format!("mhr-corrupt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(crate::paths::gateways(&dir), "{ not json").unwrap();
        assert!(read_gateways(&dir).unwrap().is_empty());
        assert!(!crate::paths::gateways(&dir).exists());
        let aside: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(aside.iter().any(|name| name.starts_with("gateways.json.corrupt-")), "{aside:?}");
        let remembered = RememberedGateways::from([(
            "ens3".to_owned(),
            BTreeMap::from([(
                Family::V4,
                RememberedGateway {
                    gateway: "10.0.3.1".parse().unwrap(),
                    learned_from: GatewaySource::MainTable,
                },
            )]),
        )]);
        write_gateways(&dir, &remembered).unwrap();
        assert_eq!(read_gateways(&dir).unwrap(), remembered);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
