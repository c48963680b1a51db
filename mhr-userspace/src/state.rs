//! What mhr keeps on disk: the table names in rt_tables.d (which also keep
//! an uplink's table stable across runs) and the main-table default routes
//! it moved (so `down` can put them back). Both are written atomically.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::Route;

const TABLES_FILE: &str = "mhr.conf";
const MOVED_FILE: &str = "moved-routes.json";

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
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// A default route mhr took out of main.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MovedRoute {
    /// By name: the interface may come back with another index.
    pub interface: String,
    pub route: Route,
}

pub fn tables_path(rt_tables_dir: &Path) -> PathBuf {
    rt_tables_dir.join(TABLES_FILE)
}

pub fn moved_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MOVED_FILE)
}

/// Interface → table, from mhr's rt_tables.d file (empty when absent).
pub fn read_tables(rt_tables_dir: &Path) -> Result<BTreeMap<String, u32>, StateError> {
    let path = tables_path(rt_tables_dir);
    let Some(text) = read_optional(&path)? else {
        return Ok(BTreeMap::new());
    };
    parse_tables(&text).map_err(|reason| StateError::Corrupt { path, reason })
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
    let path = moved_path(state_dir);
    let Some(text) = read_optional(&path)? else {
        return Ok(Vec::new());
    };
    serde_json::from_str(&text).map_err(|err| StateError::Corrupt { path, reason: err.to_string() })
}

/// Writes the moved routes, or removes the file when there are none.
pub fn write_moved(state_dir: &Path, moved: &[MovedRoute]) -> Result<(), StateError> {
    let path = moved_path(state_dir);
    if moved.is_empty() {
        return remove_optional(&path);
    }
    let text = serde_json::to_string_pretty(moved)
        .map_err(|err| StateError::Write { path: path.clone(), source: io::Error::other(err) })?;
    write_atomically(&path, &text)
}

fn read_optional(path: &Path) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read { path: path.to_owned(), source }),
    }
}

fn remove_optional(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Write { path: path.to_owned(), source }),
    }
}

/// Temp file (per process), fsync, rename: a crash or power loss leaves the
/// old or the new content, never half.
fn write_atomically(path: &Path, text: &str) -> Result<(), StateError> {
    use std::io::Write as _;

    let fail = |source| StateError::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(());
    }
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(fail)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let moved = vec![MovedRoute { interface: "ens4".into(), route }];
        write_moved(&dir, &moved).unwrap();
        assert_eq!(read_moved(&dir).unwrap(), moved);
        write_moved(&dir, &[]).unwrap();
        assert!(!moved_path(&dir).exists());
        assert!(read_moved(&dir).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
