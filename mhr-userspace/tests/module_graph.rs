//! The README says of `mhr-userspace/src`: every module is named in its
//! layout, and there are no import cycles between the top-level modules.
//! Both are read from the sources here, so neither can drift unnoticed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");

/// The top-level modules: `src/X.rs` and `src/X/`, the binary, the crate
/// root and test modules aside.
fn top_level_modules() -> BTreeSet<String> {
    let entries = fs::read_dir(SRC).expect("src is readable");
    entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            match name.strip_suffix(".rs") {
                Some(stem) if stem == "main" || stem == "lib" || stem.ends_with("tests") => None,
                Some(stem) => Some(stem.to_owned()),
                None if path.is_dir() => Some(name),
                None => None,
            }
        })
        .collect()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The module a file belongs to (`src/daemon/mod.rs` → `daemon`).
fn owner(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(SRC).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.strip_suffix(".rs").unwrap_or(first).to_owned())
}

/// The code a module's imports are read from: tests and comments aside
/// (a doc link is no import).
fn code(text: &str) -> String {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    before_tests.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level names `crate::` leads to in `code`: `crate::a::b` and each
/// first name inside `crate::{a::x, b, c::{..}}`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut segment_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && c == ',' {
                    segment_start = true;
                } else if segment_start && (c.is_alphanumeric() || c == '_') {
                    word.push(c);
                } else if segment_start && !word.is_empty() {
                    names.insert(std::mem::take(&mut word));
                    segment_start = false;
                }
            }
            if !word.is_empty() {
                names.insert(word);
            }
        } else {
            let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            names.insert(word);
        }
    }
    names
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = top_level_modules();
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = owner(&file).filter(|m| modules.contains(m)) else { continue };
        if file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("tests")) {
            continue;
        }
        let text = fs::read_to_string(&file).expect("a readable source file");
        let targets: Vec<String> = crate_references(&code(&text))
            .into_iter()
            .filter(|t| modules.contains(t) && *t != from)
            .collect();
        graph.entry(from).or_default().extend(targets);
    }
    graph
}

/// One cycle in `graph`, as the path that closes it, if there is any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 20, "the graph was read: {graph:?}");
    assert!(graph["engine"].contains("plan") && graph["daemon"].contains("engine"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_the_reader_reads_grouped_imports() {
    let names = crate_references(
        "use crate::{\n    apply::{self, X},\n    model::Y,\n    plan,\n};\nlet a = crate::state::read();",
    );
    assert_eq!(names, ["apply", "model", "plan", "state"].map(str::to_owned).into());
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(find_cycle(&graph), Some(["a", "b", "c", "a"].map(str::to_owned).to_vec()));
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [("a".to_owned(), ["b".to_owned()].into()), ("b".to_owned(), BTreeSet::new())].into();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn the_readme_layout_names_every_top_level_module() {
    let readme = fs::read_to_string(README).expect("the README");
    let layout = readme.split("Inside `mhr-userspace/src`").nth(1).expect("the README describes src");
    let layout = layout.split("\n\n").next().unwrap_or_default();
    let missing: Vec<String> = top_level_modules()
        .into_iter()
        .filter(|m| !layout.contains(&format!("`{m}`")) && !layout.contains(&format!("`{m}/`")))
        .collect();
    assert!(missing.is_empty(), "modules the README's layout does not name: {missing:?}");
}
