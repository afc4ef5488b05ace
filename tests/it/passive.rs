//! Passive DNS history imported from an export: the verdicts for the time
//! before mxwatch watched use it (issue 14).

use serde_json::Value;

use crate::cli::{json_lines, mxwatch, stderr};

/// example.de's usual MX since 2014, and iCloud's for three hours on
/// 2025-10-29 (11:00 to 14:00 UTC), as Farsight DNSDB exports them (v2
/// framing).
const EXPORT: &str = r#"{"cond":"begin"}
{"obj":{"count":51234,"time_first":1398000000,"time_last":1764500000,"rrname":"example.de.","rrtype":"MX","bailiwick":"example.de.","rdata":["10 mx00.example.de.","20 mx01.example.de."]}}
{"obj":{"count":12,"time_first":1761735600,"time_last":1761746400,"rrname":"example.de.","rrtype":"MX","bailiwick":"example.de.","rdata":["10 mx01.mail.icloud.com.","10 mx02.mail.icloud.com."]}}
{"obj":{"count":300,"time_first":1398000000,"time_last":1764500000,"rrname":"example.de.","rrtype":"A","rdata":["192.0.2.1"]}}
{"cond":"succeeded"}
"#;

fn verdict_at(dir: &std::path::Path, at: &str) -> Value {
    let out = mxwatch(
        dir,
        &[
            "--database",
            "mx.db",
            "verdict",
            "kim@example.de",
            "--at",
            at,
            "--status",
            "5.1.1",
            "--reply-code",
            "550",
            "--diagnostic",
            "550 5.1.1 <kim@example.de>: user lookup success but no user record found",
            "--remote-mta",
            "mx01.mail.icloud.com",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    json_lines(&out).remove(0)
}

#[test]
fn an_imported_excursion_to_icloud_makes_its_hours_transient() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("export.jsonl"), EXPORT).unwrap();
    let import = [
        "--database",
        "mx.db",
        "history",
        "import",
        "--format",
        "dnsdb",
        "export.jsonl",
    ];
    let out = mxwatch(dir.path(), &import);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 runs and 1 windows added"),
        "{}",
        stderr(&out)
    );

    // Inside the three hours: the MX pointed at iCloud; a 5.1.1 from iCloud
    // is not the domain's word.
    let v = verdict_at(dir.path(), "2025-10-29T12:30:00Z");
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["evidence"][0]["kind"], "mx_change");
    let detail = v["evidence"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("passive DNS (dnsdb)") && detail.contains("1h wider"),
        "{detail}"
    );
    // A week before: the usual MX, nothing against the bounce.
    let v = verdict_at(dir.path(), "2025-10-22T12:30:00Z");
    assert_eq!(v["verdict"], "suppress", "{v}");

    // The history shows the source's runs.
    let out = mxwatch(
        dir.path(),
        &["--database", "mx.db", "history", "example.de", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = json_lines(&out);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.iter().all(|r| r["upstream"] == "passive:dnsdb"),
        "{runs:?}"
    );

    // Importing it again adds nothing.
    let again = mxwatch(dir.path(), &import);
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("0 runs and 0 windows added"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_bad_export_is_named_and_nothing_of_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"rrtype\":\"MX\",\"rrname\":\"example.de.\",\"rdata\":[\"ten mx.example.de.\"],\"time_first\":1398000000,\"time_last\":1398000001}\n",
    )
    .unwrap();
    let out = mxwatch(
        dir.path(),
        &[
            "--database",
            "mx.db",
            "history",
            "import",
            "--format",
            "dnsdb",
            "bad.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.jsonl:1: MX rdata \"ten mx.example.de.\": bad preference"),
        "{err}"
    );
    assert!(err.contains("0 runs and 0 windows added"), "{err}");
    let out = mxwatch(
        dir.path(),
        &[
            "--database",
            "mx.db",
            "history",
            "import",
            "--format",
            "securitytrails",
            "bad.jsonl",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--domain"), "{}", stderr(&out));
}
