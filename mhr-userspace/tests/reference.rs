//! docs/configuration.md's "Every key" reference names every key the
//! config accepts, in the table of its section, with each cell filled, and
//! no key the config does not know.

use std::{collections::BTreeSet, path::Path};

use mhr_userspace::config::{
    Config, GuardConfig, HealthConfig, HookConfig, MetricsConfig, RoutingConfig, SteeringRule, UplinkConfig,
};
use serde::de::DeserializeOwned;

const UNKNOWN: &str = "zzzzzzzzzzzzzzzzzzzzzzzz";

/// The field names serde accepts in a section, from its unknown-field
/// error ("expected one of `a`, `b`, …").
fn serde_keys<T: DeserializeOwned>() -> BTreeSet<String> {
    let message = match toml::from_str::<T>(&format!("{UNKNOWN} = 1\n")) {
        Ok(_) => panic!("{UNKNOWN} accepted"),
        Err(err) => err.message().to_owned(),
    };
    let list = message.split_once("expected ").map_or("", |(_, list)| list);
    let list = list.trim_start_matches("one of ").replace(" or ", ", ");
    list.split(", ").map(|k| k.trim().trim_matches('`').to_owned()).filter(|k| !k.is_empty()).collect()
}

/// The top-level keys, from the config check's unknown-key message (its
/// schema is kept equal to serde's fields by the config's unit tests).
fn top_level_keys() -> BTreeSet<String> {
    let text = format!("{UNKNOWN} = 1\n[[uplink]]\ninterface = \"ens3\"\nprimary = true\n");
    let message = Config::parse(&text, Path::new("mhr.toml")).unwrap_err().to_string();
    let list = message.split_once("known keys: ").map_or("", |(_, list)| list);
    let list = list.lines().next().unwrap_or_default();
    list.split(", ").map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect()
}

/// One row of a section's table: the key and every cell.
type Row = (String, Vec<String>);

/// Section heading → its table's rows.
fn reference() -> Vec<(String, Vec<Row>)> {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"))
            .unwrap();
    let start = docs.find("\n## Every key\n").expect("an Every key section");
    let body = &docs[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |end| end + 3)];
    let mut sections: Vec<(String, Vec<Row>)> = Vec::new();
    for line in body.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            sections.push((heading.trim().to_owned(), Vec::new()));
        } else if let (Some(row), Some((_, rows))) = (line.strip_prefix("| `"), sections.last_mut()) {
            let cells: Vec<String> = format!("`{row}").split(" | ").map(|c| c.trim().to_owned()).collect();
            let key = cells[0].trim_matches('`').to_owned();
            rows.push((key, cells));
        }
    }
    sections
}

#[test]
fn every_key_has_a_complete_row_in_its_sections_table() {
    let sections = reference();
    let expected = [
        ("Top level", top_level_keys()),
        ("[[uplink]]", serde_keys::<UplinkConfig>()),
        ("[health]", serde_keys::<HealthConfig>()),
        ("[routing]", serde_keys::<RoutingConfig>()),
        ("[guard]", serde_keys::<GuardConfig>()),
        ("[metrics]", serde_keys::<MetricsConfig>()),
        ("[[rule]]", serde_keys::<SteeringRule>()),
        ("[[hook]]", serde_keys::<HookConfig>()),
    ];
    let headings: Vec<&str> = sections.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(headings, expected.iter().map(|(h, _)| *h).collect::<Vec<_>>());
    for ((heading, rows), (_, keys)) in sections.iter().zip(&expected) {
        assert!(keys.len() >= 2, "{heading}: keys not found: {keys:?}");
        let documented: BTreeSet<String> = rows.iter().map(|(key, _)| key.clone()).collect();
        assert_eq!(&documented, keys, "{heading}: the reference's keys and the config's differ");
        assert_eq!(documented.len(), rows.len(), "{heading}: a key listed twice");
        for (key, cells) in rows {
            // key | type | unit | default | allowed | meaning
            assert_eq!(cells.len(), 6, "{heading} {key}: {cells:?}");
            assert!(cells.iter().skip(1).all(|c| !c.is_empty()), "{heading} {key}: an empty cell");
            assert!(cells[5].len() > 10, "{heading} {key}: say what it does");
        }
    }
}
