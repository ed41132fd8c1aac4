//! The rules ARCHITECTURE.md writes down, checked over the source tree:
//! - the three crates are leaves: none depends on another (each defines the
//!   port it needs, and the root package composes them); the `uring` crate
//!   beneath them depends on none of them;
//! - `unsafe` appears only where io_uring or aligned buffers need it, each
//!   block, function or impl with a `// SAFETY:` comment just above it, and
//!   every crate keeps its `unsafe_code` lint.

use std::path::{Path, PathBuf};

const LEAVES: [&str; 3] = ["engine", "nvmf-target", "mgmt-api"];

/// The only files allowed to hold `unsafe` code: the `uring` crate's modules
/// that drive io_uring and own aligned buffers.
const UNSAFE_ALLOWED: [&str; 6] = [
    "uring/src/aligned_buf.rs",
    "uring/src/block_parts.rs",
    "uring/src/eventfd.rs",
    "uring/src/file_ring.rs",
    "uring/src/lend.rs",
    "uring/src/ring.rs",
];

/// How many lines above an `unsafe` its `// SAFETY:` comment may start.
const SAFETY_COMMENT_REACH: usize = 6;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every dependency name a manifest lists, in any dependency table.
fn dependencies(manifest: &str) -> Vec<String> {
    let doc: toml::Table = manifest.parse().expect("a TOML manifest");
    let mut names = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get(table).and_then(toml::Value::as_table) {
            names.extend(deps.keys().cloned());
        }
    }
    if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(deps) = target.get(table).and_then(toml::Value::as_table) {
                    names.extend(deps.keys().cloned());
                }
            }
        }
    }
    names
}

#[test]
fn no_leaf_crate_depends_on_another() {
    for leaf in LEAVES {
        let manifest = read(&root().join(leaf).join("Cargo.toml"));
        let deps = dependencies(&manifest);
        for other in LEAVES.iter().filter(|o| **o != leaf) {
            assert!(
                !deps.iter().any(|d| d == other),
                "{leaf} depends on {other}: the crates are leaves; define a port instead"
            );
        }
    }
    let beneath = dependencies(&read(&root().join("uring/Cargo.toml")));
    for leaf in LEAVES {
        assert!(
            !beneath.iter().any(|d| d == leaf),
            "uring depends on {leaf}: it lies beneath the leaves"
        );
    }
    // The check sees what it must: the root does depend on every leaf.
    let root_deps = dependencies(&read(&root().join("Cargo.toml")));
    for leaf in LEAVES {
        assert!(root_deps.iter().any(|d| d == leaf), "{root_deps:?}");
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment and string literals, so only code is
/// searched (good enough for this tree: no raw strings hold `unsafe`).
fn code_of(line: &str) -> String {
    let mut code = String::new();
    let mut in_string = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next();
            }
            '"' => in_string = !in_string,
            '/' if !in_string && chars.peek() == Some(&'/') => break,
            _ if !in_string => code.push(c),
            _ => {}
        }
    }
    code
}

/// Whether `code` uses the `unsafe` keyword (not `unsafe_code` and the like).
fn uses_unsafe(code: &str) -> bool {
    code.match_indices("unsafe").any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + "unsafe".len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

/// Whether the `unsafe` on line `at` is explained: a `// SAFETY:` comment
/// on it or a few lines above, or (an `unsafe fn`) a `# Safety` section in
/// the doc comment right above it.
fn explained(lines: &[&str], at: usize) -> bool {
    let near = lines[at.saturating_sub(SAFETY_COMMENT_REACH)..=at]
        .iter()
        .any(|l| l.contains("SAFETY:"));
    let doc_above = lines[..at]
        .iter()
        .rev()
        .take_while(|l| {
            let t = l.trim_start();
            t.starts_with("///") || t.starts_with("#[")
        })
        .any(|l| l.trim_start() == "/// # Safety");
    near || doc_above
}

/// A place in the source tree: a file relative to the root, and a line.
type Place = (String, usize);

/// Every `unsafe` in the crates' sources, and those not explained.
fn unsafe_uses() -> (Vec<Place>, Vec<Place>) {
    let mut files = Vec::new();
    for dir in [
        "src",
        "engine/src",
        "nvmf-target/src",
        "mgmt-api/src",
        "uring/src",
    ] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut uses = Vec::new();
    let mut unexplained = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(root())
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !uses_unsafe(&code_of(line)) {
                continue;
            }
            uses.push((relative.clone(), i + 1));
            if !explained(&lines, i) {
                unexplained.push((relative.clone(), i + 1));
            }
        }
    }
    (uses, unexplained)
}

#[test]
fn unsafe_code_lives_only_where_io_uring_and_aligned_buffers_need_it() {
    let (uses, unexplained) = unsafe_uses();
    let outside: Vec<_> = uses
        .iter()
        .filter(|(file, _)| !UNSAFE_ALLOWED.contains(&file.as_str()))
        .collect();
    assert!(
        outside.is_empty(),
        "unsafe outside the modules allowed to hold it: {outside:?}"
    );
    assert!(
        unexplained.is_empty(),
        "unsafe without a // SAFETY: comment above it: {unexplained:?}"
    );
    // The scan finds the unsafe code that is there.
    assert!(
        uses.iter().any(|(f, _)| f == "uring/src/ring.rs")
            && uses.iter().any(|(f, _)| f == "uring/src/aligned_buf.rs"),
        "{uses:?}"
    );
}

#[test]
fn every_crate_keeps_its_unsafe_code_lint() {
    for (lib, lint) in [
        ("src/lib.rs", "#![forbid(unsafe_code)]"),
        ("mgmt-api/src/lib.rs", "#![forbid(unsafe_code)]"),
        ("engine/src/lib.rs", "#![forbid(unsafe_code)]"),
        ("nvmf-target/src/lib.rs", "#![forbid(unsafe_code)]"),
        ("uring/src/lib.rs", "#![deny(unsafe_code)]"),
    ] {
        assert!(
            read(&root().join(lib)).lines().any(|l| l.trim() == lint),
            "{lib} lost {lint}"
        );
    }
}

#[test]
fn the_scanner_tells_code_from_comments_and_names() {
    assert!(uses_unsafe(&code_of("    unsafe { ptr.read() }")));
    assert!(uses_unsafe(&code_of("unsafe impl Send for X {}")));
    assert!(!uses_unsafe(&code_of("#![deny(unsafe_code)]")));
    assert!(!uses_unsafe(&code_of("// an unsafe comment")));
    assert!(!uses_unsafe(&code_of("let s = \"unsafe\";")));
    assert!(!uses_unsafe(&code_of("fn not_unsafe_at_all() {}")));
}
