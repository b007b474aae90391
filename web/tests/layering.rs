//! The web crate's modules depend on each other in one direction only:
//! server → routes → handlers → extract → state → error → layout, limits.
//! Each module of `web/src` has a layer here; a `crate::` (or `super::`) path may name only
//! a module of a lower layer, so no two modules can ever import each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// Each module and its layer; a module may use only modules of a lower layer. A new module
/// must be placed here.
const LAYERS: &[(&str, u32)] = &[
    ("layout", 0),
    ("limits", 0),
    ("error", 1),
    ("state", 2),
    ("extract", 3),
    // What the page and API handlers share; they reach it as `super::`.
    ("handlers", 4),
    ("handlers::api", 5),
    ("handlers::health", 5),
    ("handlers::pages", 5),
    ("routes", 6),
    ("server", 7),
    ("lib", 8),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The module a file holds: `server.rs` → `server`, `handlers/mod.rs` → `handlers`,
/// `handlers/api.rs` → `handlers::api`.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative.with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths after each `crate::` or `super::` in code (comments skipped), as segments;
/// use groups are expanded: `crate::{a, b::{c, d}}` is `a`, `b::c` and `b::d`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            expand(&[], &code[i + prefix.len()..], &mut found);
        }
    }
    found
}

/// Reads one path (segments, then perhaps a `{…}` group) from the start of `rest`.
fn expand(head: &[String], rest: &str, out: &mut Vec<Vec<String>>) {
    let mut segments = head.to_vec();
    let mut rest = rest.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed use group");
            let (mut item_start, mut depth) = (0, 0);
            let inner = &group[..end];
            for (i, c) in inner.char_indices().chain([(end, ',')]) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&segments, &inner[item_start..i], out);
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            break;
        }
        rest = &rest[name.len()..];
        segments.push(name);
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    if segments.len() > head.len() {
        out.push(segments);
    }
}

/// The module a path names: its first segment, or the first two under `handlers`.
fn target(segments: &[String]) -> String {
    match segments {
        [first, second, ..] if first == "handlers" && layer(&format!("handlers::{second}")).is_some() => {
            format!("handlers::{second}")
        }
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    let mut edges = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = module_of(relative);
        if module == "main" {
            continue; // the binary: uses the library by its name, `gatehoused::`
        }
        let own =
            layer(&module).unwrap_or_else(|| panic!("web/src/{}: give module {module} a layer", relative.display()));
        let text = std::fs::read_to_string(&file).unwrap();
        let code: String =
            text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        let mut used: Vec<String> = paths_after(&code, "crate::").iter().map(|s| target(s)).collect();
        // `super::` in a file of a folder is its parent; in a top-level file it can only be
        // the file's own inline test module reaching back.
        if let Some((parent, _)) = module.rsplit_once("::") {
            let parent: Vec<String> = parent.split("::").map(str::to_string).collect();
            used.extend(paths_after(&code, "super::").into_iter().map(|s| target(&[parent.clone(), s].concat())));
        }
        // A folder's `mod.rs` declares its children and uses none of them (`api::…`).
        for (child, _) in LAYERS.iter().filter_map(|(m, l)| Some((m.strip_prefix(&format!("{module}::"))?, l))) {
            used.extend(paths_after(&code, &format!("{child}::")).iter().map(|_| format!("{module}::{child}")));
        }
        for dep in used {
            if dep == module {
                continue;
            }
            let theirs = layer(&dep).unwrap_or_else(|| panic!("{module} uses crate::{dep}, which has no layer"));
            assert!(
                theirs < own,
                "{module} (layer {own}) uses {dep} (layer {theirs}): dependencies must point to lower layers"
            );
            edges.push(format!("{module} → {dep}"));
        }
        checked += 1;
    }
    assert!(checked >= 10, "the modules were read: {checked}");
    for expected in ["routes → handlers::api", "handlers::pages → extract", "extract → state", "state → error"]
    {
        assert!(edges.iter().any(|e| e == expected), "{expected} was found: {edges:?}");
    }
}
