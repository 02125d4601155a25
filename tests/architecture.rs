//! The runtime's shape, checked by reading its source: layers whose arrows point down, seams that
//! alone touch threads, time and locks, and files of a readable size.
//!
//! These are the rules of the README's "Architecture" section; a change that breaks one fails here
//! with the file and line that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The lower layers, bottom first. A module of these layers may import only modules of strictly
/// lower layers (so no import cycle can pass through it). The modules above them (`slot`, `actor`,
/// `actor_ref`, `timer`, `call`, `supervisor`, `system`, `testing`, `__private`) form the user's API
/// and may use each other, but nothing below may import them.
const LAYERS: &[&[&str]] = &[
    &["sync"],
    &["clock"],
    &["rt", "policy", "envelope"],
    &["crash"],
    &["error", "config"],
    &["stats", "reply", "mailbox", "lease", "meters", "journal"],
    &["registry"],
    &["monitor"],
    &["shared", "store"],
    &["watchdog"],
];

/// The seams: the only files that may name these paths.
const SEAMS: &[(&str, &[&str])] = &[
    ("sync.rs", &["std::sync::", "std::sync::{"]),
    (
        "rt.rs",
        &["std::thread::", "tokio::spawn", "tokio::task::", "tokio::runtime::"],
    ),
    ("clock.rs", &["tokio::time::"]),
];

const MAX_CODE_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`supervisor/engine.rs` -> `supervisor`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .to_string();
    let name = first.trim_end_matches(".rs").to_string();
    if name == "private" {
        "__private".into()
    } else {
        name
    }
}

/// The file's code lines (no comments, no blank lines), up to its unit tests, with line numbers.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("#[cfg(test)]") || t.starts_with("#[cfg(all(test") {
            break;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        let code = match t.find("//") {
            Some(at) if !t[..at].contains('"') => &t[..at],
            _ => t,
        };
        out.push((i + 1, code.to_string()));
    }
    out
}

/// Every `crate::<module>` a file names in its code.
fn imports(lines: &[(usize, String)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in lines {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push((*n, name));
            }
            rest = after;
        }
        // `use crate::{a, b::c}` groups.
        if let Some(at) = line.find("crate::{") {
            for part in line[at + "crate::{".len()..].split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((*n, name));
                }
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn the_lower_layers_import_only_what_is_below_them() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut broken = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &all {
        let module = module_of(path);
        let text = fs::read_to_string(path).unwrap();
        for (line, used) in imports(&code_lines(&text)) {
            if used == module || used == "self" || used == "super" {
                continue;
            }
            graph.entry(module.clone()).or_default().insert(used.clone());
            let Some(mine) = layer_of(&module) else { continue };
            match layer_of(&used) {
                Some(theirs) if theirs < mine => {}
                _ => broken.push(format!(
                    "{}:{line}: `{module}` imports `{used}`, which is not below it",
                    path.display()
                )),
            }
        }
    }
    assert!(broken.is_empty(), "arrows must point down:\n{}", broken.join("\n"));
    // The check has something to check: the layers are really used.
    assert!(graph["error"].contains("crash"), "{graph:?}");
    assert!(graph["shared"].contains("registry"), "{graph:?}");
    assert!(graph["slot"].contains("shared"), "{graph:?}");
}

#[test]
fn only_the_seams_touch_threads_time_and_locks() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut broken = Vec::new();
    for path in &all {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = fs::read_to_string(path).unwrap();
        for (line, code) in code_lines(&text) {
            for (seam, banned) in SEAMS {
                if file == *seam {
                    continue;
                }
                if let Some(b) = banned.iter().find(|b| code.contains(**b)) {
                    broken.push(format!("{}:{line}: `{b}` outside the {seam} seam", path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn no_runtime_file_is_over_600_lines_of_code() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut big = Vec::new();
    for path in &all {
        let text = fs::read_to_string(path).unwrap();
        // Unit tests count as code here too: only comments and blank lines are free.
        let code = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .count();
        if code > MAX_CODE_LINES {
            big.push(format!("{}: {code} lines of code", path.display()));
        }
    }
    assert!(
        big.is_empty(),
        "files over {MAX_CODE_LINES} lines of code:\n{}",
        big.join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // A planted upward import and a planted seam leak are found by the same parsing.
    let lines = code_lines("use crate::slot::Slot;\n// use crate::system;\nlet x = 1; // crate::actor\n");
    let found: Vec<String> = imports(&lines).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, vec!["slot".to_string()]);
    let grouped = code_lines("use crate::{clock::Clock, sync::Arc};\n");
    let found: BTreeSet<String> = imports(&grouped).into_iter().map(|(_, m)| m).collect();
    assert!(found.contains("clock") && found.contains("sync"), "{found:?}");
    assert!(layer_of("policy") < layer_of("shared"));
    assert_eq!(layer_of("slot"), None);
    let tail = code_lines("use crate::sync::Arc;\n#[cfg(test)]\nmod tests { use crate::slot; }\n");
    assert_eq!(imports(&tail).len(), 1, "unit tests are not part of the layering");
}
