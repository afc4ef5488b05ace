//! Conformance with Sisimai over its real bounce corpus
//! (`tests/fixtures/sisimai`, BSD-2-Clause). Prints the agreement table
//! (`cargo test --test it conformance -- --nocapture`) and asserts the
//! targets on the rows the corpus calls reliable: those whose expected
//! answers agree across Sisimai's implementations.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use mxwatch::bounce::parse::{self, Format};
use mxwatch::bounce::{Bounce, Kind};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sisimai")
}

/// The whole email path: what `mxwatch bounces parse` does with a file.
fn parse_file(path: &Path) -> Vec<Bounce> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse::parse(&raw, Some(Format::Email), chrono::Utc::now()).bounces
}

struct Row {
    path: String,
    index: usize,
    recipient: String,
    status: String,
    reason: String,
    reliable: bool,
    pseudo: bool,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(fixtures().join("expected.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("reason").is_some())
        .map(|v| Row {
            path: v["path"].as_str().unwrap().to_string(),
            index: v["index"].as_u64().unwrap_or(1) as usize,
            recipient: v["recipient"].as_str().unwrap_or("").to_lowercase(),
            status: v["status"].as_str().unwrap_or("").to_string(),
            reason: v["reason"].as_str().unwrap().to_string(),
            reliable: v["tests_agree_across_impls"].as_bool().unwrap_or(false),
            pseudo: v["status_is_sisimai_pseudo_code"]
                .as_bool()
                .unwrap_or(false),
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    rows: usize,
    recipient: usize,
    status_rows: usize,
    status: usize,
    kinds: BTreeMap<&'static str, usize>,
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        100.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

#[test]
fn agreement_with_sisimai() {
    if let Some(f) = std::env::var_os("MXWATCH_DEBUG_FILE") {
        println!("{:#?}", parse_file(&fixtures().join(f)));
    }
    let rows = rows();
    let mut parsed: HashMap<String, Vec<Bounce>> = HashMap::new();
    for r in &rows {
        parsed
            .entry(r.path.clone())
            .or_insert_with(|| parse_file(&fixtures().join(&r.path)));
    }
    let mut all = Tally::default();
    let mut by_reason: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut uu_expected, mut uu_found, mut uu_said, mut uu_right) = (0, 0, 0, 0);
    let mut misses = Vec::new();
    let (mut expiries, mut expiries_hard) = (0, 0);
    for r in rows.iter().filter(|r| r.reliable) {
        let ours = &parsed[&r.path];
        let found = ours
            .iter()
            .find(|b| b.recipient == r.recipient)
            .or_else(|| ours.get(r.index.saturating_sub(1)));
        let recipient_ok = ours.iter().any(|b| b.recipient == r.recipient);
        let status_counts = !r.pseudo && !r.status.is_empty();
        let status_ok =
            status_counts && found.and_then(|b| b.status.as_deref()) == Some(r.status.as_str());
        let kind = found.map(|b| b.kind.as_str()).unwrap_or("(none)");
        for t in [&mut all, by_reason.entry(r.reason.clone()).or_default()] {
            t.rows += 1;
            t.recipient += usize::from(recipient_ok);
            t.status_rows += usize::from(status_counts);
            t.status += usize::from(status_ok);
            *t.kinds.entry(kind).or_default() += 1;
        }
        let said_uu = found.is_some_and(|b| b.kind == Kind::UserUnknown);
        if let Some(b) = found.filter(|b| b.kind == Kind::Expired) {
            expiries += 1;
            expiries_hard += usize::from(b.hard && b.reply_code.is_none_or(|c| c < 500));
        }
        if r.reason == "userunknown" {
            uu_expected += 1;
            uu_found += usize::from(said_uu);
        }
        if said_uu {
            uu_said += 1;
            uu_right += usize::from(r.reason == "userunknown");
        }
        if !recipient_ok
            || (status_counts && !status_ok)
            || (said_uu != (r.reason == "userunknown"))
        {
            misses.push(format!(
                "{}: want {} {} {} / got {:?}",
                r.path,
                r.recipient,
                r.status,
                r.reason,
                found.map(|b| (
                    &b.recipient,
                    &b.status,
                    b.kind.as_str(),
                    b.diagnostic
                        .as_deref()
                        .unwrap_or("")
                        .chars()
                        .take(150)
                        .collect::<String>()
                ))
            ));
        }
    }

    println!(
        "\nSisimai agreement on {} reliable rows ({} files):\n",
        all.rows,
        parsed.len()
    );
    println!("| field | agreement |\n|---|---|");
    println!(
        "| recipient | {}/{} = {:.1} % |",
        all.recipient,
        all.rows,
        pct(all.recipient, all.rows)
    );
    println!(
        "| status (rows with a real, non-pseudo status) | {}/{} = {:.1} % |",
        all.status,
        all.status_rows,
        pct(all.status, all.status_rows)
    );
    println!(
        "| `user_unknown` recall on `userunknown` rows | {uu_found}/{uu_expected} = {:.1} % |",
        pct(uu_found, uu_expected)
    );
    println!(
        "| `user_unknown` precision | {uu_right}/{uu_said} = {:.1} % |",
        pct(uu_right, uu_said)
    );
    println!("| expiries marked hard without a permanent reply | {expiries_hard} of {expiries} |");
    println!("\n| Sisimai reason | rows | recipient | status | our kinds |\n|---|---|---|---|---|");
    for (reason, t) in &by_reason {
        let kinds: Vec<String> = t.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "| {reason} | {} | {:.0} % | {} | {} |",
            t.rows,
            pct(t.recipient, t.rows),
            if t.status_rows == 0 {
                "-".to_string()
            } else {
                format!("{:.0} % of {}", pct(t.status, t.status_rows), t.status_rows)
            },
            kinds.join(", ")
        );
    }
    if std::env::var_os("MXWATCH_SHOW_MISSES").is_some() {
        for m in &misses {
            println!("{m}");
        }
    }
    assert!(
        pct(all.recipient, all.rows) >= 97.0,
        "recipient agreement below 97 %"
    );
    assert!(
        pct(all.status, all.status_rows) >= 95.0,
        "status agreement below 95 %"
    );
    assert!(
        pct(uu_found, uu_expected) >= 95.0,
        "user_unknown recall below 95 %"
    );
    assert!(
        pct(uu_right, uu_said) >= 95.0,
        "user_unknown precision below 95 %"
    );
    // An expiry is our side giving up; suppressing on it is wrong.
    assert_eq!(expiries_hard, 0, "expiries marked hard");
}

#[test]
fn lf_crlf_and_cr_variants_parse_identically() {
    let text = std::fs::read_to_string(fixtures().join("newline-variants.jsonl")).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let variant = v["corpus_path"]
            .as_str()
            .unwrap()
            .trim_start_matches("corpus/");
        let twin = v["same_message_as"]
            .as_str()
            .unwrap()
            .trim_start_matches("corpus/");
        let a = parse_file(&fixtures().join(variant));
        let b = parse_file(&fixtures().join(twin));
        assert_eq!(a, b, "{variant} vs {twin}");
        // And as the command line reads them, format detected (some start
        // with an mbox `From ` line): same bounces, same problems.
        let detected = |p: &str| {
            let raw = std::fs::read(fixtures().join(p)).unwrap();
            let out = parse::parse(&raw, None, chrono::Utc::now());
            let problems: Vec<String> = out.problems.into_iter().map(|p| p.message).collect();
            (out.bounces, problems)
        };
        assert_eq!(
            detected(variant),
            detected(twin),
            "{variant} vs {twin}, detected"
        );
        n += 1;
    }
    assert!(n >= 90, "only {n} variants");
}
