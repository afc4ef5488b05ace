//! The house is one-way: a module imports only from its own layer or the
//! layers below (ARCHITECTURE.md, "Layers"). This test reads every
//! `crate::…` path in `src/` (tests excluded) and names each line that
//! reaches up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom up. Root items of `lib.rs` (`http_client`,
/// `redirect_target`) are adapters.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "domain", "dns", "event", "names", "provider", "secret", "window",
        ],
    ),
    (
        "pure logic",
        &[
            "detect",
            "anomaly",
            "verdict",
            "bounce",
            "health",
            "sns",
            "summary",
            "passive",
            "autowatch",
        ],
    ),
    (
        "adapters",
        &[
            "store",
            "resolve",
            "schedule",
            "clock",
            "http_client",
            "redirect_target",
            "passive_dns",
        ],
    ),
    (
        "services",
        &[
            "monitor", "judge", "alerts", "delivery", "forward", "undo", "report", "metrics",
        ],
    ),
    (
        "edges",
        &["config", "api", "daemon", "replay", "main", "cli"],
    ),
];

/// Upward imports not yet removed: each must go, and the test fails when
/// one disappears without leaving this list, so the list only shrinks.
/// Empty: keep it so.
const NOT_YET: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, members)| members.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_imports_only_from_its_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let path = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut upward = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unknown = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || rel.ends_with("/tests.rs") {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            unknown.push(format!("src/{rel}: module {module} is in no layer"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("#[cfg(test)]") {
                break; // the tests below may use anything
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            for c in path.captures_iter(line) {
                let target = &c[1];
                if target == module {
                    continue;
                }
                let Some(theirs) = layer_of(target) else {
                    unknown.push(format!(
                        "src/{rel}:{}: crate::{target} is in no layer",
                        i + 1
                    ));
                    continue;
                };
                if theirs > own {
                    seen.insert((module.clone(), target.to_string()));
                    if !NOT_YET.contains(&(module.as_str(), target)) {
                        upward.push(format!(
                            "src/{rel}:{}: {module} ({}) imports {target} ({}): {}",
                            i + 1,
                            LAYERS[own].0,
                            LAYERS[theirs].0,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "place these in a layer:\n{}",
        unknown.join("\n")
    );
    assert!(
        upward.is_empty(),
        "imports from a layer above:\n{}",
        upward.join("\n")
    );
    let gone: Vec<_> = NOT_YET
        .iter()
        .filter(|(a, b)| !seen.contains(&(a.to_string(), b.to_string())))
        .collect();
    assert!(
        gone.is_empty(),
        "no longer imported, strike from NOT_YET: {gone:?}"
    );
}
