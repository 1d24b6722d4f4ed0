//! The layers of `ami-core`, read from its source: `model` imports nothing from `validate` or `aws` and no AWS SDK,
//! `validate` nothing from `aws` and no SDK, `aws` nothing outside the layers (its tests may use the `testing`
//! fixtures), and the top-level modules' imports have no cycle.
//!
//! A module's imports are its `crate::` paths (`use crate::{a, b}` groups included) and the `super::` paths that
//! climb out of its layer, outside comments. A path through a name `lib.rs` re-exports (`crate::tags`,
//! `crate::Error`) counts as an import of the module that holds it. Test code (`#[cfg(test)]` items and `tests.rs`
//! files) is left out of the cycle check only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const LAYERS: [&str; 3] = ["model", "validate", "aws"];
/// Crates the plain layers must not name: the AWS SDK, its runtime, its configuration, the Lambda runtime.
const SDK_CRATES: [&str; 4] = ["aws_sdk_", "aws_smithy_", "aws_config", "lambda_runtime"];

struct Source {
    /// Path under `src`, with `/`.
    path: String,
    /// The top-level module the file belongs to (`lib` for lib.rs).
    top: String,
    /// Module path length: `model/platform/tests.rs` is 3, `aws/mod.rs` 1.
    depth: usize,
    production: String,
    test: String,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The text without comment lines (doc comments name paths without importing them).
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn read(src: &Path, file: &Path) -> Source {
    let rel = file.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
    let parts: Vec<&str> = rel.split('/').collect();
    let top = parts[0].trim_end_matches(".rs").to_string();
    let depth = parts.len() - usize::from(parts.last() == Some(&"mod.rs"));
    let text = code(&fs::read_to_string(file).unwrap());
    let (production, test) = if parts.last() == Some(&"tests.rs") {
        (String::new(), text)
    } else {
        split_tests(&text)
    };
    Source {
        path: rel,
        top,
        depth,
        production,
        test,
    }
}

/// The text without and with its `#[cfg(test)]` items (rustfmt's layout: a gated `mod`, `fn` or `impl` ends with
/// the `}` at its own indentation, anything else with the first line ending in `;`).
fn split_tests(text: &str) -> (String, String) {
    let lines: Vec<&str> = text.lines().collect();
    let (mut production, mut test): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if !(line.starts_with("#[cfg(test)]") || line.starts_with("#[cfg(all(test")) {
            production.push(lines[i]);
            i += 1;
            continue;
        }
        let indent = lines[i].len() - line.len();
        let mut item = i;
        while item + 1 < lines.len() && lines[item].trim_start().starts_with("#[") {
            item += 1;
        }
        let head = lines[item].trim_start();
        let braced = !head.ends_with(';')
            && ["mod ", "pub(crate) mod ", "fn ", "pub(crate) fn ", "impl"]
                .iter()
                .any(|k| head.starts_with(k));
        let close = format!("{}}}", " ".repeat(indent));
        let end = (item..lines.len())
            .find(|&k| {
                if braced {
                    lines[k].trim_end() == close
                } else {
                    lines[k].trim_end().ends_with(';')
                }
            })
            .unwrap_or(lines.len() - 1);
        test.extend(&lines[i..=end]);
        i = end + 1;
    }
    (production.join("\n"), test.join("\n"))
}

fn ident_at(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The first names after `crate::` (each name of a `crate::{...}` group), and after `super::` chains that climb to
/// the crate root from a module `depth` deep.
fn imports(text: &str, depth: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with('$') || text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut level, mut start) = (1, 0);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => level += 1,
                    '}' | ',' if level == 1 => {
                        let name = ident_at(group[start..j].trim_start());
                        if !name.is_empty() {
                            names.insert(name);
                        }
                        start = j + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    '}' => level -= 1,
                    _ => {}
                }
            }
        } else {
            names.insert(ident_at(rest));
        }
    }
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with("super::") {
            continue; // counted from the chain's first `super`
        }
        let mut rest = &text[i..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        if climbs >= depth {
            names.insert(ident_at(rest));
        }
    }
    names
}

struct Crate {
    sources: Vec<Source>,
    /// A name at the crate root -> the top-level module that holds it.
    owner: BTreeMap<String, String>,
    /// Modules written inline in lib.rs, with their text.
    inline: BTreeMap<String, String>,
}

fn load() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let sources: Vec<Source> = paths.iter().map(|p| read(&src, p)).collect();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for s in &sources {
        if s.top != "lib" {
            owner.insert(s.top.clone(), s.top.clone());
        }
    }
    let lib = &sources.iter().find(|s| s.top == "lib").expect("lib.rs").production;
    // `pub use m::{a, b as c};` and `pub use m::x::{A, B};`: the names come from `m`.
    for stmt in lib.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, rest) = path.split_once("::").expect("pub use of a module's items");
        let items = rest
            .rsplit_once('{')
            .map_or(rest, |(_, items)| items.trim_end_matches('}'));
        for item in items.split(',') {
            let item = item.trim();
            let name = item
                .rsplit_once(" as ")
                .map_or(item.rsplit("::").next().unwrap_or(item), |(_, a)| a);
            if !name.is_empty() {
                owner.insert(name.trim().to_string(), module.to_string());
            }
        }
    }
    let mut inline = BTreeMap::new();
    let mut rest = lib.as_str();
    while let Some(at) = rest.find("pub mod ") {
        let after = &rest[at + "pub mod ".len()..];
        let name = ident_at(after);
        let after = &after[name.len()..];
        if let Some(body) = after.trim_start().strip_prefix('{') {
            let end = body
                .find("\n}")
                .expect("an inline module ends with `}` on its own line");
            owner.insert(name.clone(), name.clone());
            inline.insert(name, body[..end].to_string());
            rest = &body[end..];
        } else {
            rest = after;
        }
    }
    Crate { sources, owner, inline }
}

impl Crate {
    fn resolve(&self, name: &str, whence: &str) -> String {
        self.owner
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{whence}: `crate::{name}` is no top-level module or name of lib.rs"))
    }
}

fn sdk_crates_in(text: &str) -> Vec<&'static str> {
    SDK_CRATES
        .into_iter()
        .filter(|c| {
            text.match_indices(c)
                .any(|(i, _)| !text[..i].ends_with(|ch: char| ch.is_alphanumeric() || ch == '_'))
        })
        .collect()
}

fn layer_violations(krate: &Crate) -> Vec<String> {
    let mut found = Vec::new();
    for s in krate.sources.iter().filter(|s| LAYERS.contains(&s.top.as_str())) {
        let allowed: &[&str] = match s.top.as_str() {
            "model" => &["model"],
            "validate" => &["model", "validate"],
            _ => &["model", "validate", "aws"],
        };
        for (part, text) in [("", &s.production), (" (tests)", &s.test)] {
            for name in imports(text, s.depth) {
                let module = krate.resolve(&name, &s.path);
                let test_fixture = s.top == "aws" && !part.is_empty() && module == "testing";
                if !allowed.contains(&module.as_str()) && !test_fixture {
                    found.push(format!("{}{part}: imports `{module}` (crate::{name})", s.path));
                }
            }
        }
        if s.top != "aws" {
            for c in sdk_crates_in(&format!("{}\n{}", s.production, s.test)) {
                found.push(format!("{}: names the SDK crate `{c}`", s.path));
            }
        }
    }
    found
}

/// The top-level modules' production imports: module -> the modules it imports.
fn graph(krate: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let texts = krate
        .sources
        .iter()
        .filter(|s| s.top != "lib")
        .map(|s| (s.top.clone(), s.production.clone(), s.depth, s.path.clone()))
        .chain(
            krate
                .inline
                .iter()
                .map(|(m, body)| (m.clone(), body.clone(), 1, format!("lib.rs `mod {m}`"))),
        );
    for (top, text, depth, whence) in texts {
        let targets = edges.entry(top.clone()).or_default();
        for name in imports(&text, depth) {
            let module = krate.resolve(&name, &whence);
            if module != top {
                targets.insert(module);
            }
        }
    }
    edges
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn layers_import_only_downwards_and_model_and_validate_name_no_sdk() {
    let krate = load();
    for layer in LAYERS {
        assert!(
            krate.sources.iter().filter(|s| s.top == layer).count() > 1,
            "no sources found for the layer `{layer}`"
        );
    }
    let found = layer_violations(&krate);
    assert!(found.is_empty(), "imports against the layers:\n{}", found.join("\n"));
}

#[test]
fn top_level_modules_import_no_cycle() {
    let krate = load();
    let edges = graph(&krate);
    // The reading works: the layers and the modules built on them are seen to import what they do.
    for (module, imported) in [
        ("aws", "model"),
        ("aws", "validate"),
        ("validate", "model"),
        ("definition", "model"),
    ] {
        assert!(
            edges[module].contains(imported),
            "{module} imports {imported}: {edges:?}"
        );
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle between top-level modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn imports_are_read_from_groups_and_from_climbing_super_paths() {
    let text =
        "use crate::{model::steps::Run, aws};\nuse super::super::validate::check_id;\nfn f() -> crate::Result<()> {}";
    let names: Vec<String> = imports(text, 2).into_iter().collect();
    assert_eq!(names, ["Result", "aws", "model", "validate"]);
    assert!(imports("use super::super::x;", 3).is_empty(), "still inside the layer");
    let (production, test) =
        split_tests("use a;\n#[cfg(test)]\nmod tests {\n    use b;\n}\nfn c() {}\n#[cfg(test)]\nmod more;");
    assert_eq!(
        (production.as_str(), test.as_str()),
        (
            "use a;\nfn c() {}",
            "#[cfg(test)]\nmod tests {\n    use b;\n}\n#[cfg(test)]\nmod more;"
        )
    );
    assert_eq!(sdk_crates_in("use aws_sdk_ec2::types::Tag;"), ["aws_sdk_"]);
    assert!(sdk_crates_in("let my_aws_sdk_ec2 = 1;").is_empty());
}
