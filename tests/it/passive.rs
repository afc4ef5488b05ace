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
fn replay_takes_the_export_as_history_before_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("export.jsonl"), EXPORT).unwrap();
    let bounce = |at: &str| {
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono::Utc);
        crate::unknown_user("kim@example.de", at, "mx01.mail.icloud.com")
    };
    std::fs::write(
        dir.path().join("b.jsonl"),
        [
            bounce("2025-10-29T12:30:00Z"),
            bounce("2025-10-22T12:30:00Z"),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let out = mxwatch(
        dir.path(),
        &[
            "replay",
            "--dnsdb",
            "export.jsonl",
            "--bounces",
            "b.jsonl",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json_lines(&out);
    let verdict = |at: &str| {
        rows.iter()
            .find(|r| r["at"].as_str().unwrap().starts_with(at))
            .map(|r| r["verdict"].clone())
            .unwrap()
    };
    assert_eq!(verdict("2025-10-29"), "transient", "{rows:?}");
    assert_eq!(verdict("2025-10-22"), "suppress", "{rows:?}");
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

/// `history import --format dnsdb FILE` into the database `db` in `dir`.
pub(crate) fn import_dnsdb(dir: &std::path::Path, db: &str, file: &str) -> std::process::Output {
    mxwatch(
        dir,
        &[
            "--database",
            db,
            "history",
            "import",
            "--format",
            "dnsdb",
            file,
        ],
    )
}

/// `history lookup` against providers answering in their documented shapes.
pub(crate) async fn lookup(
    dir: &std::path::Path,
    base: &str,
    st_base: &str,
) -> std::process::Output {
    std::fs::write(
        dir.join("watchlist.yaml"),
        format!(
            "domains: [example.de]\npassive_dns:\n  - provider: dnsdb\n    key_env: MXWATCH_TEST_DNSDB_KEY\n    base_url: '{base}'\n  - provider: securitytrails\n    key_file: st.key\n    base_url: '{st_base}'\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("st.key"), "st-secret-key-2\n").unwrap();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(&dir)
            .args(["--database", "mx.db", "history", "lookup", "example.de"])
            .env_remove("MXWATCH_CONFIG")
            .env("MXWATCH_TEST_DNSDB_KEY", "dnsdb-secret-key-1")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_ask_each_provider_as_documented_and_keep_the_answers() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/dnsdb/v2/lookup/rrset/name/example.de/MX"))
        .and(header("X-API-Key", "dnsdb-secret-key-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(EXPORT))
        .expect(1)
        .mount(&server)
        .await;
    // Two pages: the answer says so, and the second is asked for.
    Mock::given(method("GET"))
        .and(path("/v1/history/example.de/dns/mx"))
        .and(wiremock::matchers::query_param("page", "1"))
        .and(header("APIKEY", "st-secret-key-2"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"{"type":"mx/dns","pages":2,"records":[{"values":[{"host":"mx00.example.de","priority":10},{"host":"mx01.example.de","priority":20}],"organizations":["Example"],"first_seen":"2014-04-20","last_seen":"2025-11-30"}]}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/history/example.de/dns/mx"))
        .and(wiremock::matchers::query_param("page", "2"))
        .and(header("APIKEY", "st-secret-key-2"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"{"type":"mx/dns","pages":2,"records":[{"values":[{"host":"mx.old-provider.example","priority":10}],"organizations":["Old"],"first_seen":"2010-01-01","last_seen":"2014-04-19"}]}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = lookup(dir.path(), &server.uri(), &server.uri()).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("4 sightings of 1 domains: 4 runs and 1 windows added"),
        "{err}"
    );
    assert!(!err.contains("secret-key"), "a key was printed: {err}");
    let v = verdict_at(dir.path(), "2025-10-29T12:30:00Z");
    assert_eq!(v["verdict"], "transient", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_or_a_hostile_answer_stores_nothing() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let spent = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "120"))
        .mount(&spent)
        .await;
    let hostile = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/history/example.de/dns/mx"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"records":[{"values":[{"host":"..","priority":"x"}]}]}"#),
        )
        .mount(&hostile)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = lookup(dir.path(), &spent.uri(), &hostile.uri()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("dnsdb: quota spent (HTTP 429); ask again in 2m"),
        "{err}"
    );
    assert!(
        err.contains("example.de: securitytrails: records[0]"),
        "{err}"
    );
    assert!(
        err.contains("0 sightings of 0 domains: 0 runs and 0 windows added"),
        "{err}"
    );
}
