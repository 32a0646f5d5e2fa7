//! Repository rules, checked by `cargo xtask tidy`, by `cargo xtask ci` and by a `#[test]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Which workspace crates each crate may depend on (ARCHITECTURE.md, "Invariants"). `*` means
/// any workspace crate.
/// Dev-dependencies may also use `store-testkit`, and a benchmark its peer backend
/// ([`BENCH_PEERS`]).
const LAYERS: &[(&str, &[&str])] = &[
    ("store-core", &[]),
    ("store-testkit", &["store-core"]),
    ("store-memory", &["store-core"]),
    ("store-sql", &["store-core"]),
    ("store-raft", &["store-core"]),
    ("store-crdt", &["store-core"]),
    (
        "store-config",
        &[
            "store-core",
            "store-memory",
            "store-sql",
            "store-raft",
            "store-crdt",
        ],
    ),
    ("store-client", &["store-core"]),
    ("store-node", &["*"]),
    ("xtask", &[]),
];

/// `(crate, dev-dependency)`: a benchmark that runs another backend as its peer, in the same
/// run: store.kv.crdt's local reads and writes against store.memory.
const BENCH_PEERS: &[(&str, &str)] = &[("store-crdt", "store-memory")];

struct Package {
    name: String,
    manifest: PathBuf,
    /// `(dependency name, kind)`; kind is `normal`, `dev` or `build`.
    deps: Vec<(String, String)>,
    /// Source files of lib and bin targets.
    roots: Vec<PathBuf>,
}

fn packages(root: &Path) -> Result<Vec<Package>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let mut result = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let deps = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["path"].is_string())
            .map(|d| {
                let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                (str_of(&d["name"]), kind)
            })
            .collect();
        let roots = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k == "lib" || k == "bin")
            })
            .map(|t| PathBuf::from(str_of(&t["src_path"])))
            .collect();
        result.push(Package {
            name: str_of(&p["name"]),
            manifest: PathBuf::from(str_of(&p["manifest_path"])),
            deps,
            roots,
        });
    }
    Ok(result)
}

/// Runs every rule; the error lists every violation, the success value is a one-line summary.
pub(crate) fn check(root: &Path) -> Result<String> {
    let packages = packages(root)?;
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut problems = Vec::new();

    for p in &packages {
        // Layering.
        match layers.get(p.name.as_str()) {
            None => problems.push(format!(
                "{}: not in the layering table of xtask/src/tidy.rs",
                p.name
            )),
            Some(allowed) => {
                for (dep, kind) in &p.deps {
                    let ok = allowed.contains(&"*")
                        || allowed.contains(&dep.as_str())
                        || (kind == "dev" && dep == "store-testkit")
                        || (kind == "dev"
                            && BENCH_PEERS.contains(&(p.name.as_str(), dep.as_str())));
                    if !ok {
                        problems.push(format!(
                            "{}: may not depend on {dep} ({kind} dependency); allowed: {allowed:?}",
                            p.name
                        ));
                    }
                }
            }
        }
        // Crate docs.
        for src in &p.roots {
            let text = std::fs::read_to_string(src)
                .with_context(|| format!("cannot read {}", src.display()))?;
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                problems.push(format!(
                    "{}: {} must start with a `//!` crate doc",
                    p.name,
                    src.display()
                ));
            }
        }
        // Workspace lints.
        let manifest = std::fs::read_to_string(&p.manifest)
            .with_context(|| format!("cannot read {}", p.manifest.display()))?;
        if !inherits_lints(&manifest) {
            problems.push(format!(
                "{}: Cargo.toml must have `[lints]` with `workspace = true`",
                p.name
            ));
        }
    }

    let bullets = behaviour_bullets(root)?;
    let cases = suite_cases(root)?;
    for b in bullets.difference(&cases) {
        problems.push(format!(
            "store-core documents behaviour `{b}` but store-testkit's conformance_suite! has no such case"
        ));
    }
    for c in cases.difference(&bullets) {
        problems.push(format!(
            "store-testkit case `{c}` has no `# Behavior` bullet of that name in store-core"
        ));
    }

    let files = self_contained(root, &mut problems)?;

    if problems.is_empty() {
        Ok(format!(
            "tidy: {} crates layered and documented, {} behaviour bullets = {} suite cases, \
             {files} files point at nothing outside the repository",
            packages.len(),
            bullets.len(),
            cases.len()
        ))
    } else {
        let mut msg = format!("tidy found {} problem(s):", problems.len());
        for p in problems {
            let _ = write!(msg, "\n  - {p}");
        }
        bail!(msg)
    }
}

/// Text that points a reader outside the repository: a file beside the checkout that someone who
/// clones the project does not have. Written in pieces so this file does not match itself.
const OUTSIDE: &[&str] = &[
    concat!("..", "/shared"),
    concat!("shared", "/SPEC"),
    concat!("SPEC", ".md"),
    concat!("SPEC", " §"),
];

/// Checks every tracked source and documentation file (CI's own scripts aside, which may use
/// what the machine offers) for references outside the repository; returns how many it read.
fn self_contained(root: &Path, problems: &mut Vec<String>) -> Result<usize> {
    let out = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z"])
        .output()
        .context("cannot run `git ls-files` (tidy reads the tracked files)")?;
    if !out.status.success() {
        bail!(
            "`git ls-files` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut read = 0;
    for name in String::from_utf8_lossy(&out.stdout).split('\0') {
        let text_file = [".rs", ".md", ".toml", ".yaml", ".yml"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if name.is_empty() || name.starts_with(".ci/") || !text_file {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(name)) else {
            continue; // deleted in the working tree
        };
        read += 1;
        for (n, line) in text.lines().enumerate() {
            if let Some(hit) = OUTSIDE.iter().find(|p| line.contains(**p)) {
                problems.push(format!(
                    "{name}:{}: `{hit}` points outside the repository; point at docs/ or rustdoc",
                    n + 1
                ));
            }
        }
    }
    Ok(read)
}

fn inherits_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints && line.replace(' ', "") == "workspace=true" {
            return true;
        }
    }
    false
}

/// Names of the `/// - \`name\`: …` bullets in store-core's trait docs.
fn behaviour_bullets(root: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for file in ["store-core/src/store.rs", "store-core/src/ext.rs"] {
        let text = std::fs::read_to_string(root.join(file))
            .with_context(|| format!("cannot read {file}"))?;
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("/// - `") else {
                continue;
            };
            if let Some((name, tail)) = rest.split_once('`')
                && tail.starts_with(':')
            {
                names.insert(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// Case names listed in store-testkit's `conformance_suite!` macro.
fn suite_cases(root: &Path) -> Result<BTreeSet<String>> {
    let file = "store-testkit/src/lib.rs";
    let text =
        std::fs::read_to_string(root.join(file)).with_context(|| format!("cannot read {file}"))?;
    let start = text
        .find("$crate::__cases!($options; $factory;")
        .context("store-testkit: conformance_suite! case list not found")?;
    let list = &text[start..];
    let end = list.find(");").context("unterminated case list")?;
    Ok(list[..end]
        .lines()
        .skip(1)
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy() {
        if let Err(e) = check(&crate::root()) {
            panic!("{e:#}");
        }
    }

    #[test]
    fn lints_detection() {
        assert!(inherits_lints(
            "[package]\nname='x'\n\n[lints]\nworkspace = true\n"
        ));
        assert!(!inherits_lints("[lints.rust]\nunsafe_code='forbid'\n"));
        assert!(!inherits_lints("[package]\nworkspace = true\n"));
    }
}
