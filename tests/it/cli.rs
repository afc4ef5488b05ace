//! The command line, as a user runs it: the real binary, real time, the
//! in-process DNS server on loopback.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{Behaviour, TestDns};

/// Runs the binary in `dir`, with no config or database from the environment.
pub fn mxwatch(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mxwatch"))
        .current_dir(dir)
        .args(args)
        .env_remove("MXWATCH_CONFIG")
        .env_remove("MXWATCH_DATABASE")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs the binary off the runtime's threads, so the DNS server keeps answering.
pub async fn mxwatch_async(dir: &std::path::Path, args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        mxwatch(&dir, &refs)
    })
    .await
    .unwrap()
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_check_accepts_the_bundled_example_and_locates_errors() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = mxwatch(root, &["config", "check", "watchlist.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 13 domains"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "domains:\n  - example.com\n  - name: example.org\n    schedule: '*/5 * * *'\n",
    )
    .unwrap();
    let out = mxwatch(dir.path(), &["config", "check", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // The line and column of the entry, and the path of the field in it.
    assert!(
        err.contains("bad.yaml:4:5: domains[1].schedule: \"*/5 * * *\" is not a crontab schedule"),
        "{err}"
    );
}

/// `mxwatch … | head -1`: once the reader has gone, output ends quietly;
/// nothing panics (Rust's `print!` does, on a closed pipe).
#[test]
fn a_reader_that_has_gone_ends_the_output_without_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let line = "Aug 28 10:12:10 mx postfix/smtp[28345]: 7A7D47BDC: to=<u{i}@example.de>, relay=mx.example.de[192.0.2.1]:25, dsn=5.1.1, status=bounced (host mx.example.de[192.0.2.1] said: 550 5.1.1 user unknown (in reply to RCPT TO command))";
    let many: String = (0..2000)
        .map(|i| line.replace("{i}", &i.to_string()) + "\n")
        .collect();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, many).unwrap();
    let log = log.to_str().unwrap();
    for args in [
        &["config", "check", "watchlist.yaml"][..],
        &["bounces", "parse", "--format", "postfix", log],
        &["bounces", "parse", "--format", "postfix", "--json", log],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(root)
            .args(args)
            .env_remove("MXWATCH_CONFIG")
            .stdout(writer)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_each_upstream_without_a_database() {
    let dns = TestDns::start().await;
    dns.set(
        "example.de",
        Behaviour::mx(
            &[(10, "mx01.mail.icloud.com"), (20, "mx02.mail.icloud.com")],
            300,
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let up = dns.addr.to_string();
    let out = mxwatch_async(
        dir.path(),
        &[
            "check",
            "Example.DE.",
            "missing.example",
            "--upstream",
            &up,
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["domain"], "example.de");
    let u = &lines[0]["upstreams"][0];
    assert_eq!(u["upstream"], up);
    assert_eq!(u["outcome"], "records");
    assert_eq!(u["ttl"], 300);
    assert_eq!(u["mx"][0]["exchange"], "mx01.mail.icloud.com");
    assert_eq!(u["provider"][0], "icloud");
    assert_eq!(lines[1]["upstreams"][0]["outcome"], "nxdomain");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no database written"
    );

    let text = mxwatch_async(dir.path(), &["check", "example.de", "--upstream", &up]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Apple iCloud"), "{text}");
}

/// A temp dir with a watchlist of example.de over the test's DNS server.
fn watching_example_de(dns: &TestDns) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!(
            "upstreams: ['{}']\ngrace: 0s\ndomains: [example.de]\n",
            dns.addr
        ),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_changes_and_windows_read_what_run_recorded() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let dir = watching_example_de(&dns);
    let out = mxwatch_async(dir.path(), &["run", "--once"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checked 1 domains: 1 answered"),
        "{}",
        stderr(&out)
    );
    dns.set(
        "example.de",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    let out = mxwatch_async(dir.path(), &["run", "--once"]).await;
    assert!(
        stderr(&out).contains("1 windows opened"),
        "{}",
        stderr(&out)
    );

    let windows = json_lines(&mxwatch_async(dir.path(), &["windows", "--active", "--json"]).await);
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0]["domain"], "example.de");
    assert_eq!(windows[0]["status"], "open");
    assert_eq!(windows[0]["end"], Value::Null);
    assert_eq!(
        windows[0]["after"]["mx"][0]["exchange"],
        "mx01.mail.icloud.com"
    );
    let start = windows[0]["start"].as_str().unwrap().to_string();
    assert!(start.ends_with('Z'), "RFC 3339 UTC: {start}");

    let changes = json_lines(
        &mxwatch_async(dir.path(), &["changes", "--domain", "example.de", "--json"]).await,
    );
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"provider_changed"), "{kinds:?}");

    let history =
        json_lines(&mxwatch_async(dir.path(), &["history", "example.de", "--json"]).await);
    assert_eq!(
        history.len(),
        4,
        "two runs for the upstream and two for the consensus"
    );
    let at_start = json_lines(
        &mxwatch_async(
            dir.path(),
            &["history", "example.de", "--at", &start, "--json"],
        )
        .await,
    );
    assert!(
        at_start
            .iter()
            .all(|r| r["mx"][0]["exchange"] == "mx00.example.de"),
        "{at_start:?}"
    );

    // A usage error (issue 23): exit status 2, like clap's own.
    let out = mxwatch_async(dir.path(), &["history", "not a domain"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a domain name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_cleanly_on_sigterm() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!(
            "upstreams: ['{}']\nlisten: '127.0.0.1:0'\ndomains: [example.de]\n",
            dns.addr
        ),
    )
    .unwrap();
    let mut child = crate::service::Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(dir.path())
            .args(["run"])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read the log to its end on another thread; stop the daemon once it
    // says it is watching.
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("watching") {
                let _ = ready_tx.send(());
            }
            seen.push(line);
        }
        seen
    });
    tokio::task::spawn_blocking(move || ready_rx.recv_timeout(std::time::Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the daemon starts watching");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "exit status {status}: {log:#?}");
    assert!(
        log.iter().any(|l| l.contains("SIGTERM: stopping")),
        "{log:#?}"
    );
    assert!(log.last().unwrap().contains("stopped"), "{log:#?}");
    assert!(dir.path().join("mxwatch.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_judges_a_bounce_against_the_recorded_history() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let dir = watching_example_de(&dns);
    assert!(
        mxwatch_async(dir.path(), &["run", "--once"])
            .await
            .status
            .success()
    );
    let unknown = [
        "verdict",
        "kim@example.de",
        "--status",
        "5.1.1",
        "--reply-code",
        "550",
        "--diagnostic",
        "550 5.1.1 <kim@example.de>: user lookup success but no user record found",
        "--json",
    ];

    // The domain's own MX: a plain unknown user.
    let v = &json_lines(&mxwatch_async(dir.path(), &unknown).await)[0];
    assert_eq!(v["verdict"], "suppress", "{v}");
    assert_eq!(v["suppress"], true);
    assert_eq!(v["kind"], "user_unknown");

    // Refused by a host the domain does not use, of another provider.
    let mut wrong = unknown.to_vec();
    wrong.extend(["--remote-mta", "mx01.mail.icloud.com"]);
    let v = &json_lines(&mxwatch_async(dir.path(), &wrong).await)[0];
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["evidence"][0]["kind"], "wrong_mx");

    // The domain flips to iCloud: an open MX window covers the bounce.
    dns.set(
        "example.de",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    assert!(
        mxwatch_async(dir.path(), &["run", "--once"])
            .await
            .status
            .success()
    );
    let v = &json_lines(&mxwatch_async(dir.path(), &unknown).await)[0];
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["suppress"], false);
    assert_eq!(v["evidence"][0]["kind"], "mx_change");
    assert_eq!(v["evidence"][0]["scope"], "domain");
    assert_eq!(v["evidence"][0]["end"], Value::Null);
    assert!(
        v["evidence"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("mx01.mail.icloud.com")
    );

    // The same bounce long before any of it: suppress.
    let mut before = unknown.to_vec();
    before.extend(["--at", "2020-01-01T00:00:00Z"]);
    let v = &json_lines(&mxwatch_async(dir.path(), &before).await)[0];
    assert_eq!(v["verdict"], "suppress", "{v}");

    // Soft and not-the-recipient's-fault bounces.
    let full = [
        "verdict",
        "kim@example.de",
        "--status",
        "4.2.2",
        "--reply-code",
        "452",
        "--diagnostic",
        "mailbox full",
        "--json",
    ];
    assert_eq!(
        json_lines(&mxwatch_async(dir.path(), &full).await)[0]["verdict"],
        "retry"
    );
    let spam = [
        "verdict",
        "kim@example.de",
        "--status",
        "5.7.1",
        "--reply-code",
        "550",
        "--diagnostic",
        "550 5.7.1 blocked as spam",
        "--json",
    ];
    assert_eq!(
        json_lines(&mxwatch_async(dir.path(), &spam).await)[0]["verdict"],
        "ignore"
    );
}

#[test]
fn replay_backtests_bounces_against_recorded_observations() {
    let dir = tempfile::tempdir().unwrap();
    let own = r#""mx":[{"preference":10,"exchange":"mx00.web.de"}]"#;
    let icloud = r#""mx":[{"preference":10,"exchange":"mx01.mail.icloud.com"}]"#;
    std::fs::write(
        dir.path().join("obs.jsonl"),
        format!(
            "{{\"domain\":\"web.de\",\"at\":\"2021-04-26T10:00:00Z\",\"outcome\":\"records\",{own},\"ttl\":300}}\n\
             {{\"domain\":\"web.de\",\"at\":\"2021-04-26T11:00:00Z\",\"outcome\":\"records\",{icloud},\"ttl\":300}}\n\
             {{\"domain\":\"web.de\",\"at\":\"2021-04-26T13:00:00Z\",\"outcome\":\"records\",{own},\"ttl\":300}}\n"
        ),
    )
    .unwrap();
    let line = |who: &str, at: &str| {
        format!(
            "{{\"recipient\":\"{who}\",\"domain\":\"web.de\",\"at\":\"{at}\",\"status\":\"5.1.1\",\"reply_code\":550,\"kind\":\"user_unknown\",\"hard\":true,\"source\":\"jsonl\"}}\n"
        )
    };
    std::fs::write(
        dir.path().join("bounces.jsonl"),
        line("a@web.de", "2021-04-26T09:00:00Z") + &line("b@web.de", "2021-04-26T12:00:00Z"),
    )
    .unwrap();
    let out = mxwatch(
        dir.path(),
        &[
            "replay",
            "--observations",
            "obs.jsonl",
            "--bounces",
            "bounces.jsonl",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["verdict"], "suppress");
    assert_eq!(lines[1]["verdict"], "transient");
    assert_eq!(lines[1]["initial_verdict"], "transient");
    assert_eq!(lines[1]["evidence"][0]["kind"], "mx_change");
    assert!(
        stderr(&out).contains("2 bounces replayed: 1 suppressions prevented, 0 reinstatements"),
        "{}",
        stderr(&out)
    );
}

/// A bounce that came shortly before its domain's first check is judged
/// again when the check lands, with what the DNS said then (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_just_before_the_first_check_is_judged_again_by_it() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let dir = watching_example_de(&dns);
    // Refused by iCloud two minutes ago; nothing is known of example.de yet.
    #[allow(clippy::disallowed_methods)]
    let at = chrono::Utc::now() - chrono::Duration::minutes(2);
    std::fs::write(
        dir.path().join("b.jsonl"),
        crate::unknown_user("kim@example.de", at, "mx01.mail.icloud.com") + "\n",
    )
    .unwrap();
    let out = mxwatch_async(dir.path(), &["bounces", "ingest", "b.jsonl"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let list = mxwatch_async(dir.path(), &["bounces", "list", "--json"]).await;
    assert_eq!(json_lines(&list)[0]["verdict"], "suppress");

    // The first check: example.de's MX are its own, not iCloud's.
    let out = mxwatch_async(dir.path(), &["run", "--once"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let list = mxwatch_async(dir.path(), &["bounces", "list", "--json"]).await;
    assert_eq!(
        json_lines(&list)[0]["verdict"],
        "transient",
        "{:?}",
        json_lines(&list)
    );
    let undo = mxwatch_async(dir.path(), &["reinstatements", "--json"]).await;
    let undo = json_lines(&undo);
    assert_eq!(undo.len(), 1, "{undo:?}");
    assert_eq!(undo[0]["recipient"], "kim@example.de");
    assert!(
        undo[0]["reason"]
            .as_str()
            .unwrap()
            .contains("mx01.mail.icloud.com"),
        "{undo:?}"
    );
}

/// Issue 19, item 4: replay judges what the recording holds. Run from a
/// folder whose watchlist lists other domains (never checked by the
/// recording, they would have to vouch for our resolver and never do), it
/// answers as from an empty folder, and says which watchlist it used.
#[test]
fn replay_judges_the_recordings_domains_whatever_the_watchlist_lists() {
    let own = r#""mx":[{"preference":10,"exchange":"mx00.example.de"}]"#;
    let icloud = r#""mx":[{"preference":10,"exchange":"mx01.mail.icloud.com"}]"#;
    let obs: String = (0..12)
        .map(|i| {
            let mx = if i < 2 { own } else { icloud };
            format!(
                "{{\"domain\":\"example.de\",\"at\":\"2021-04-26T10:{:02}:00Z\",\"outcome\":\"records\",{mx},\"ttl\":300}}\n",
                i * 5
            )
        })
        .collect();
    let bounce = "{\"recipient\":\"kim@example.de\",\"at\":\"2021-04-26T10:12:00Z\",\"status\":\"5.1.1\",\
                  \"reply_code\":550,\"remote_mta\":\"mx01.mail.icloud.com\"}\n";
    let run = |watchlist: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("obs.jsonl"), &obs).unwrap();
        std::fs::write(dir.path().join("b.jsonl"), bounce).unwrap();
        if let Some(w) = watchlist {
            std::fs::write(dir.path().join("watchlist.yaml"), w).unwrap();
        }
        let out = mxwatch(
            dir.path(),
            &[
                "replay",
                "--observations",
                "obs.jsonl",
                "--bounces",
                "b.jsonl",
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        (json_lines(&out), stderr(&out))
    };
    let (alone, said_alone) = run(None);
    let (listed, said_listed) = run(Some(
        "domains: [a.example, b.example, c.example, d.example, e.example]\n",
    ));
    assert_eq!(alone[0]["verdict"], "transient", "{alone:?}");
    assert_eq!(
        listed, alone,
        "the folder's watchlist must not change the verdicts"
    );
    assert!(
        said_alone.contains("judged with default settings (no watchlist at watchlist.yaml)"),
        "{said_alone}"
    );
    assert!(
        said_alone.contains("the watched domains are the 1 the recording checks"),
        "{said_alone}"
    );
    assert!(
        said_listed.contains("judged with the settings of watchlist.yaml"),
        "{said_listed}"
    );
}

/// An empty listing says so on standard error and prints nothing on
/// standard output; with `--json` it says nothing at all (issue 23).
#[test]
fn empty_listings_say_so_and_json_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    mxwatch::store::Store::open(&dir.path().join("empty.db")).unwrap();
    let db = ["--database", "empty.db"];
    for (args, words) in [
        (vec!["windows", "--active"], "no open windows"),
        (vec!["windows"], "no windows"),
        (
            vec!["changes", "--since", "2026-01-01"],
            "no changes since 2026-01-01T00:00:00Z",
        ),
        (vec!["reinstatements"], "no reinstatements"),
        (
            vec!["bounces", "list", "--domain", "example.de"],
            "no bounces stored for example.de",
        ),
        (
            vec!["alerts", "list", "--failed"],
            "no failed alert deliveries",
        ),
        (
            vec!["forward", "list", "--held"],
            "no held forwarded events",
        ),
        (vec!["undo", "list", "--waiting"], "no waiting undo actions"),
        (vec!["history", "example.de"], "no history of example.de"),
    ] {
        let all: Vec<&str> = db.iter().copied().chain(args.iter().copied()).collect();
        let out = mxwatch(dir.path(), &all);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr(&out).trim(), words, "{args:?}");
        let json: Vec<&str> = all.iter().copied().chain(["--json"]).collect();
        let out = mxwatch(dir.path(), &json);
        assert!(out.status.success() && out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr(&out), "", "{args:?} --json");
    }
}

/// Completions and the manual page come from the same definitions as the
/// parser, so they name every command (issue 23).
#[test]
fn completions_and_the_manual_page_name_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = mxwatch(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for cmd in ["forward", "undo", "replay", "reinstatements"] {
            assert!(text.contains(cmd), "{shell} completions lack {cmd}");
        }
    }
    let out = mxwatch(dir.path(), &["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH mxwatch 1"), "{page}");
    assert!(
        page.contains("undo") && page.contains("completions"),
        "{page}"
    );
    let out = mxwatch(dir.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "a usage error exits 2");
}

/// `mxwatch domains`: each watched domain with its provider, last check
/// and open window; `--auto` only those watched because they bounced
/// (issue 23).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_lists_the_watched_with_provider_last_check_and_window() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let dir = watching_example_de(&dns);
    let out = mxwatch_async(dir.path(), &["domains"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("example.de") && text.contains("never checked"),
        "{text}"
    );
    mxwatch_async(dir.path(), &["run", "--once"]).await;
    dns.set(
        "example.de",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    mxwatch_async(dir.path(), &["run", "--once"]).await;
    let out = mxwatch_async(dir.path(), &["domains", "--json"]).await;
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let d = &rows[0];
    assert_eq!(
        (d["domain"].as_str(), d["listed"].as_bool()),
        (Some("example.de"), Some(true))
    );
    assert_eq!(d["provider"][0], "icloud", "{d}");
    assert!(d["last_check"].is_string(), "{d}");
    assert_eq!(d["window"]["kind"], "mx_change", "{d}");
    let out = mxwatch_async(dir.path(), &["domains"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("listed") && text.contains("open mx_change window since"),
        "{text}"
    );
    let out = mxwatch_async(dir.path(), &["domains", "--auto"]).await;
    assert!(out.stdout.is_empty());
    assert_eq!(stderr(&out).trim(), "no auto-watched domains");
}

/// With `--log-format json`, every line on standard error is a JSON
/// object, errors and the command line's own notes included (issue 23).
#[test]
fn log_format_json_covers_every_line() {
    let dir = tempfile::tempdir().unwrap();
    mxwatch::store::Store::open(&dir.path().join("j.db")).unwrap();
    let json = ["--log-format", "json", "--database", "j.db"];
    let lines = |args: &[&str]| -> Vec<Value> {
        let all: Vec<&str> = json.iter().chain(args).copied().collect();
        let out = mxwatch(dir.path(), &all);
        stderr(&out)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: not JSON: {l}: {e}"))
            })
            .collect()
    };
    let e = lines(&["history", "not a domain"]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["level"], "ERROR");
    assert!(
        e[0]["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("not a domain name")
    );
    let note = lines(&["windows", "--active"]);
    assert_eq!(note[0]["fields"]["message"], "no open windows");
    assert_eq!(note[0]["level"], "INFO");
    std::fs::write(dir.path().join("b.txt"), "not a bounce at all\n").unwrap();
    let problems = lines(&["bounces", "parse", "b.txt"]);
    assert!(!problems.is_empty());
}

/// `history export --format replay` writes a live database's observations
/// as `replay` reads them: the incident replays with the same verdicts
/// (issue 23).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_export_replays_a_live_databases_incident() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let dir = watching_example_de(&dns);
    assert!(
        mxwatch_async(dir.path(), &["run", "--once"])
            .await
            .status
            .success()
    );
    dns.set(
        "example.de",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    assert!(
        mxwatch_async(dir.path(), &["run", "--once"])
            .await
            .status
            .success()
    );
    let out = mxwatch_async(
        dir.path(),
        &["history", "export", "--format", "replay", "example.de"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l["upstream"] != "*"),
        "the consensus is replay's to compute"
    );
    assert_eq!(
        lines.last().unwrap()["mx"][0]["exchange"],
        "mx01.mail.icloud.com"
    );
    std::fs::write(dir.path().join("obs.jsonl"), &out.stdout).unwrap();
    // A bounce from iCloud just after the flip: transient, as it would be live.
    let flip_at = lines.last().unwrap()["at"].as_str().unwrap().to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&flip_at)
        .unwrap()
        .to_utc();
    std::fs::write(
        dir.path().join("b.jsonl"),
        crate::unknown_user(
            "kim@example.de",
            at + chrono::Duration::seconds(1),
            "mx01.mail.icloud.com",
        ) + "\n",
    )
    .unwrap();
    let out = mxwatch_async(
        dir.path(),
        &[
            "replay",
            "--observations",
            "obs.jsonl",
            "--bounces",
            "b.jsonl",
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &json_lines(&out)[0];
    assert_eq!(v["verdict"], "transient", "{v}");
    let out = mxwatch_async(dir.path(), &["history", "export", "example.org"]).await;
    assert!(out.stdout.is_empty() && stderr(&out).contains("no observations of example.org"));
}

/// The log speaks at the moments that matter (issue 23): a window opening,
/// and a daemon that cannot take writes because it has no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_says_when_a_window_opens_and_when_writes_are_refused() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let dir = watching_example_de(&dns);
    let info = |args: &'static [&'static str]| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_mxwatch"))
                .current_dir(&dir)
                .args(args)
                .env_remove("MXWATCH_CONFIG")
                .env("RUST_LOG", "info")
                .output()
                .unwrap()
        })
    };
    info(&["run", "--once"]).await.unwrap();
    dns.set(
        "example.de",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    let out = info(&["run", "--once"]).await.unwrap();
    assert!(stderr(&out).contains("window opened"), "{}", stderr(&out));

    let port = crate::service::free_port();
    let yaml = std::fs::read_to_string(dir.path().join("watchlist.yaml")).unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!("listen: '127.0.0.1:{port}'\n{yaml}"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mxwatch"))
        .current_dir(dir.path())
        .args(["run"])
        .env_remove("MXWATCH_CONFIG")
        .env_remove("MXWATCH_API_TOKEN")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::service::wait_healthy(&format!("http://127.0.0.1:{port}")).await;
    crate::service::send("-TERM", &child.id().to_string());
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut s = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
        s
    })
    .await
    .unwrap();
    assert!(
        out.contains("no API token") && out.contains("writes are refused"),
        "{out}"
    );
}

/// A secret that cannot be read is named the same way by `config check`,
/// `run` and `history lookup`, each saying which commands need it
/// (issue 23).
#[test]
fn a_missing_passive_dns_key_stops_the_commands_that_need_it_alike() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        "domains: [example.de]\npassive_dns:\n  - provider: dnsdb\n    key_env: MXWATCH_TEST_NO_SUCH_KEY\n",
    )
    .unwrap();
    let need = "(`mxwatch run` and `mxwatch history lookup` need it)";
    let out = mxwatch(dir.path(), &["config", "check"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains(need), "{}", stderr(&out));
    for args in [
        &["history", "lookup", "example.de"][..],
        &["run", "--once"][..],
    ] {
        let out = mxwatch(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let said = stderr(&out);
        assert!(
            said.contains(
                "passive_dns[0].key_env: environment variable MXWATCH_TEST_NO_SUCH_KEY is not set"
            ) && said.contains(need),
            "{args:?}: {said}"
        );
    }
}
