//! Bounce parse throughput: every message of the bundled corpus (Sisimai's
//! bounce emails in LF, CRLF and CR, the ESP payloads, the Postfix lines),
//! whole pipeline from bytes to classified, normalised bounces, on one
//! thread.
//!
//!     cargo bench --bench parse            # at least 5 s of parsing
//!     cargo bench --bench parse -- 20      # at least 20 s
//!
//! Prints a Markdown table for BENCHMARKS.md. Not a test: nothing asserts.

// Real processes and real files run on wall time here (clippy.toml keeps
// the library on its Clock).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use mxwatch::bounce::parse::{self, Format};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5.0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut inputs: Vec<(Format, Vec<u8>)> = Vec::new();
    let mut emails = Vec::new();
    files(&root.join("sisimai"), &mut emails);
    emails.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    for p in &emails {
        inputs.push((Format::Email, std::fs::read(p).unwrap()));
    }
    let mut hooks = Vec::new();
    files(&root.join("webhooks"), &mut hooks);
    hooks.retain(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("PROVENANCE.json"));
    for p in &hooks {
        inputs.push((Format::Json, std::fs::read(p).unwrap()));
    }
    for f in [
        "mta-logs/postfix-grok-patterns-tests.jsonl",
        "mta-logs/timandes-mail-log-parser-tests.jsonl",
    ] {
        for line in std::fs::read_to_string(root.join(f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = v["message"]
                .as_str()
                .or(v["line"].as_str())
                .unwrap()
                .to_string();
            inputs.push((Format::Postfix, text.into_bytes()));
        }
    }
    let bytes: usize = inputs.iter().map(|(_, b)| b.len()).sum();
    let now = Utc::now();
    let start = Instant::now();
    let (mut messages, mut bounces, mut rounds) = (0usize, 0usize, 0usize);
    while start.elapsed().as_secs_f64() < seconds {
        for (format, b) in &inputs {
            let out = parse::parse(b, Some(*format), now);
            bounces += out.bounces.len();
            messages += 1;
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("| figure | value |\n|---|---|");
    println!(
        "| corpus | {} inputs ({} emails, {} ESP payloads, {} log lines), {:.1} MiB |",
        inputs.len(),
        emails.len(),
        hooks.len(),
        inputs.len() - emails.len() - hooks.len(),
        bytes as f64 / 1048576.0
    );
    println!("| rounds over the corpus | {rounds} in {secs:.1} s |");
    println!(
        "| throughput, one thread | **{:.0} messages/s** ({:.1} MiB/s) |",
        messages as f64 / secs,
        (bytes * rounds) as f64 / 1048576.0 / secs
    );
    println!(
        "| bounces produced per round | {} |",
        bounces / rounds.max(1)
    );
    println!("| peak RSS | {:.0} MiB |", peak_rss_mib());
    hostile(now);
}

/// The shapes of issue 11's attacks: each must stay linear in its size.
fn hostile(now: chrono::DateTime<Utc>) {
    let mut addresses = String::from("From: MAILER-DAEMON@a.test\nSubject: Undelivered Mail\n\n");
    for i in 0..300_000 {
        addresses.push_str(&format!("<user{i}@a.test>: 550 5.1.1 user unknown\n"));
    }
    let mut nested = String::from("From: MAILER-DAEMON@a.test\nSubject: nested\n");
    for _ in 0..35_000 {
        nested.push_str("Content-Type: message/rfc822\n\nFrom: a@b.test\n");
    }
    nested.push_str("\nhello\n");
    let empties = "{}\n".repeat(16 << 20 >> 2);
    println!("\n| attack shape | size | time | result |\n|---|---|---|---|");
    for (name, format, bytes) in [
        (
            "email listing 300,000 addresses",
            Format::Email,
            addresses.as_bytes(),
        ),
        (
            "35,000 nested message/rfc822 parts",
            Format::Email,
            nested.as_bytes(),
        ),
        ("`{}` lines", Format::Json, empties.as_bytes()),
    ] {
        let start = Instant::now();
        let out = parse::parse(bytes, Some(format), now);
        println!(
            "| {name} | {:.1} MiB | {:.2} s | {} bounces, {} problems kept, {} counted |",
            bytes.len() as f64 / 1048576.0,
            start.elapsed().as_secs_f64(),
            out.bounces.len(),
            out.problems.len(),
            out.problems_omitted
        );
    }
    println!("| peak RSS after them | | | {:.0} MiB |", peak_rss_mib());
    second_round(now);
}

/// The shapes of issue 20's attacks, each with the peak RSS it leaves
/// (`VmHWM` is reset before each, where the kernel allows it).
fn second_round(now: chrono::DateTime<Utc>) {
    let who: Vec<String> = (0..8_000).map(|i| format!("<u{i}@a.test>")).collect();
    let one_line = format!(
        "From: MAILER-DAEMON@a.test\nTo: s@example.org\nSubject: Undelivered Mail\n\n{}: 550 5.1.1 user unknown\n",
        who.join(" ")
    );
    let unit = "Content-Type: message/rfc822\n\nFrom: a@b.test\n";
    let nested = format!(
        "From: MAILER-DAEMON@a.test\nSubject: nested\n{}\nhello\n",
        unit.repeat((16 << 20) / unit.len() - 10)
    );
    let multi = format!(
        "From: MAILER-DAEMON@a.test\nSubject: nested\nContent-Type: multipart/mixed; boundary=b\n\n{}--b--\n",
        "--b\nContent-Type: multipart/mixed; boundary=b\n\n".repeat(330_000)
    );
    println!("\n| issue 20 shape | size | time | result | peak RSS |\n|---|---|---|---|---|");
    for (name, bytes) in [
        ("8,000 addresses on one line", one_line.as_bytes()),
        ("16 MiB of nested message/rfc822", nested.as_bytes()),
        ("330,000 nested multiparts", multi.as_bytes()),
    ] {
        reset_peak();
        let start = Instant::now();
        let out = parse::parse(bytes, Some(Format::Email), now);
        let diag: usize = out
            .bounces
            .iter()
            .map(|b| b.diagnostic.as_deref().map_or(0, str::len))
            .sum();
        println!(
            "| {name} | {:.2} MiB | {:.2} s | {} bounces, {:.1} MiB of diagnostics, {} problems | {:.0} MiB |",
            bytes.len() as f64 / 1048576.0,
            start.elapsed().as_secs_f64(),
            out.bounces.len(),
            diag as f64 / 1048576.0,
            out.problems.len(),
            peak_rss_mib()
        );
    }
    passive_import();
}

/// Clears the peak RSS the kernel reports (`/proc/self/clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Issue 20, item 8: SecurityTrails records sharing a `first_seen`
/// imported in quadratic time (20,000: 24.5 s). `history import` of
/// 5,000 and 20,000 of them, by the release binary.
fn passive_import() {
    println!("\n| SecurityTrails records sharing first_seen | import time |\n|---|---|");
    for n in [5_000, 20_000] {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"values":[{{"host":"mx{i}.example.net","priority":10}}],"first_seen":"2020-01-01","last_seen":"2020-01-02"}}"#
                )
            })
            .collect();
        let answer = format!(r#"{{"pages":1,"records":[{}]}}"#, records.join(","));
        std::fs::write(dir.path().join("st.json"), answer).unwrap();
        let start = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(dir.path())
            .args([
                "--database",
                "mx.db",
                "history",
                "import",
                "--format",
                "securitytrails",
            ])
            .args(["--domain", "example.de", "st.json"])
            .env_remove("MXWATCH_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("| {n} | {:.2} s |", start.elapsed().as_secs_f64());
    }
}
