//! Dependencies between the top-level modules of `src/` point one way (docs/architecture.md).
//!
//! Reads every `src/**/*.rs`, collects the `crate::<module>` paths each top-level module uses
//! (in `use` lines and inline paths, `crate::{a, b::c}` groups included) and fails, printing
//! the cycle and the files behind each arrow, if the graph has one. Test code (`#[cfg(test)]`
//! items and the `tests.rs` / `*_tests.rs` files they include) is left out: a test may build
//! fixtures from modules above the one it checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// module -> (module it uses -> files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src_dir() -> PathBuf {
    // Read at run time so the test binary can be pointed at another checkout.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    Path::new(&root).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/store/sled/mod.rs` -> `store`), or `None`
/// for the crate roots.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

fn is_test_file(file: &Path) -> bool {
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    name == "tests" || name.ends_with("_tests")
}

/// The text without `//` comments (doc comments included) and `/* */` blocks. Not a full
/// lexer: string literals containing `//` only lose their tail, which holds no paths that
/// matter here.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            // A raw string: up to its `"#`, quotes inside included.
            let end = raw.find("\"#").map_or(rest.len(), |e| e + 5);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else if let Some(char_len) = char_literal_len(rest) {
            // `'"'` or `'\''`: not the start of a string.
            out.push_str(&rest[..char_len]);
            rest = &rest[char_len..];
        } else if rest.starts_with('"') {
            // Skip a string literal whole, so `"https://..."` is not taken for a comment.
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            let end = (i + 1).min(rest.len());
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The length of the char literal `text` starts with (`'x'`, `'\n'`, `'\''`), if it does
/// (a lifetime `'a` is not one).
fn char_literal_len(text: &str) -> Option<usize> {
    let body = text.strip_prefix('\'')?;
    let len = if let Some(escaped) = body.strip_prefix('\\') {
        1 + escaped.find('\'')? + 1
    } else {
        body.chars().next()?.len_utf8()
    };
    (body[len..].starts_with('\'') && len <= 10).then_some(len + 2)
}

/// The text without the items marked `#[cfg(test)]` (up to their `;` or matching `}`).
fn strip_test_items(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let end = match (item.find('{'), item.find(';')) {
            (Some(open), semi) if semi.is_none_or(|s| open < s) => {
                let mut depth = 0usize;
                let mut close = item.len();
                for (i, c) in item[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                close
            }
            (_, Some(semi)) => semi + 1,
            _ => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn ident_at(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first segment of every `crate::` path in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue; // `mycrate::`, not `crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at depth 0.
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.insert(ident_at(&group[start..i]).to_string());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident_at(&group[start..i]).to_string());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident_at(rest).to_string());
        }
    }
    found.remove("");
    found
}

fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(from) = top_module(src, file) else {
            continue;
        };
        graph.entry(from.clone()).or_default();
        if is_test_file(file) {
            continue;
        }
        let text = fs::read_to_string(file).expect("readable source");
        let code = strip_test_items(&strip_comments(&text));
        for to in crate_paths(&code) {
            if to != from && modules.contains(&to) {
                let rel = file
                    .strip_prefix(src)
                    .expect("under src")
                    .display()
                    .to_string();
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(rel);
            }
        }
    }
    graph
}

/// A cycle, as the modules along it (the first repeated at the end), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &'a Graph,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let start = path.iter().position(|n| n == next).expect("on the path");
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

fn describe(graph: &Graph, cycle: &[String]) -> String {
    let mut text = format!("dependency cycle: {}\n", cycle.join(" -> "));
    for pair in cycle.windows(2) {
        let files = &graph[&pair[0]][&pair[1]];
        let files: Vec<_> = files.iter().map(String::as_str).collect();
        text.push_str(&format!(
            "  {} -> {} in {}\n",
            pair[0],
            pair[1],
            files.join(", ")
        ));
    }
    text
}

#[test]
fn top_level_modules_depend_on_each_other_in_one_direction() {
    let graph = module_graph(&src_dir());
    assert!(
        graph.contains_key("api") && graph.contains_key("store"),
        "{graph:?}"
    );
    // The map, for `cargo test --test architecture -- --nocapture` (docs/architecture.md).
    for (from, to) in &graph {
        let to: Vec<_> = to.keys().map(String::as_str).collect();
        println!("{from} -> {}", to.join(" "));
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "{}\nEach layer may use the ones below it only (docs/architecture.md): move the \
             shared piece down, or pass it in as a parameter.",
            describe(&graph, &cycle)
        );
    }
}

#[test]
fn the_parser_sees_grouped_inline_and_commented_paths_as_they_are() {
    let code = strip_test_items(&strip_comments(
        "use crate::{model::X, store::{Store, StoreError}, clock};\n\
         // crate::commented\n\
         /// [`crate::doc_comment`]\n\
         let u = \"https://example.com\"; let q = '\"'; let r = r#\"a \" // b\"#;\n\
         fn g<'a>(x: &'a str) -> crate::lifetime::U { todo!() }\n\
         fn f() -> crate::inline::T { mycrate::not_it() }\n\
         #[cfg(test)]\nmod tests { use crate::only_in_tests; }\n\
         #[cfg(test)]\nuse crate::test_import;\n",
    ));
    let found: Vec<_> = crate_paths(&code).into_iter().collect();
    assert_eq!(found, ["clock", "inline", "lifetime", "model", "store"]);
}

#[test]
fn a_cycle_is_found_and_named() {
    fn arrow(graph: &mut Graph, a: &str, b: &str) {
        graph
            .entry(a.to_string())
            .or_default()
            .entry(b.to_string())
            .or_default()
            .insert(format!("{a}.rs"));
    }
    let mut graph = Graph::new();
    arrow(&mut graph, "api", "store");
    arrow(&mut graph, "store", "model");
    arrow(&mut graph, "model", "clock");
    assert_eq!(find_cycle(&graph), None);
    arrow(&mut graph, "clock", "store");
    let cycle = find_cycle(&graph).expect("store -> model -> clock -> store");
    assert_eq!(cycle, ["store", "model", "clock", "store"]);
    assert!(describe(&graph, &cycle).contains("clock -> store in clock.rs"));
}
