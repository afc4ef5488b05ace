//! A real Postfix (Debian's package, set up by `.ci/postfix start`) sends
//! mail to a scripted SMTP server here on 127.0.0.2:2525 that answers each
//! recipient with a reply real servers give; the DSNs Postfix mails back
//! and the lines it logs must parse to what was scripted. `.ci/run` runs it:
//!
//!     .ci/postfix start && cargo test --test it real_mta -- --ignored; .ci/postfix stop

use std::collections::BTreeMap;
use std::time::Duration;

use mxwatch::bounce::parse::{self, Format};
use mxwatch::bounce::{Bounce, Kind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One scripted reply: to whom, when, what, and what it must parse to.
/// Temporary replies are repeated until the MTA's queue lifetime expires,
/// then bounced: an expiry, never hard.
struct Reply {
    local: String,
    at_data: bool,
    reply: String,
    kind: Kind,
    hard: bool,
}

/// The script, shared with `scripts/smtp-script.py` (the Exim fixtures).
fn script() -> Vec<Reply> {
    include_str!("../fixtures/mta/replies.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, '\t').collect();
            Reply {
                local: f[0].to_string(),
                at_data: f[1] == "data",
                kind: f[2].parse().unwrap(),
                hard: f[3] == "true",
                reply: f[4].replace("\\n", "\r\n"),
            }
        })
        .collect()
}

/// Answers SMTP on `listener`, each recipient as the script says.
async fn scripted_server(listener: tokio::net::TcpListener) {
    let replies: BTreeMap<String, (bool, String)> = script()
        .into_iter()
        .map(|r| (r.local, (r.at_data, r.reply)))
        .collect();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let replies = replies.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            let say = |s: &str| format!("{s}\r\n");
            let _ = w
                .write_all(say("220 mx.example.test ESMTP scripted").as_bytes())
                .await;
            let mut at_data: Option<String> = None;
            let mut accepted = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                let upper = line.to_ascii_uppercase();
                let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                    "250 mx.example.test".to_string()
                } else if upper.starts_with("MAIL FROM") {
                    at_data = None;
                    accepted = 0;
                    "250 2.1.0 Ok".to_string()
                } else if upper.starts_with("RCPT TO") {
                    let local = line
                        .split(['<', '@'])
                        .nth(1)
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    match replies.get(local.as_str()) {
                        Some((false, reply)) => reply.clone(),
                        Some((true, reply)) => {
                            at_data = Some(reply.clone());
                            accepted += 1;
                            "250 2.1.5 Ok".to_string()
                        }
                        None => {
                            accepted += 1;
                            "250 2.1.5 Ok".to_string()
                        }
                    }
                } else if upper == "DATA" {
                    if accepted == 0 {
                        "554 5.5.1 No valid recipients".to_string()
                    } else {
                        let _ = w.write_all(say("354 go ahead").as_bytes()).await;
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                        }
                        at_data
                            .clone()
                            .unwrap_or_else(|| "250 2.0.0 Ok: queued".to_string())
                    }
                } else if upper == "QUIT" {
                    let _ = w.write_all(say("221 2.0.0 Bye").as_bytes()).await;
                    return;
                } else if upper == "RSET" || upper == "NOOP" {
                    "250 2.0.0 Ok".to_string()
                } else {
                    "502 5.5.2 Error: command not recognized".to_string()
                };
                if w.write_all(say(&reply).as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// How parsed bounces compare with the script: a row per recipient.
#[derive(Default)]
struct Agreement {
    rows: usize,
    recipient: usize,
    status: usize,
    kind: usize,
    hard: usize,
    expiries_hard: usize,
    /// Unknown users: scripted, found, said, said rightly.
    uu: [usize; 4],
    misses: Vec<String>,
}

fn agreement(bounces: &[Bounce], last_only: bool) -> Agreement {
    let mut a = Agreement::default();
    for r in script() {
        let (who, reply, kind, hard) = (&r.local, &r.reply, r.kind, r.hard);
        a.rows += 1;
        let recipient = format!("{who}@example.test");
        let mine: Vec<&Bounce> = bounces
            .iter()
            .filter(|b| b.recipient == recipient)
            .collect();
        let Some(b) = (if last_only { mine.last() } else { mine.first() }) else {
            a.misses.push(format!("{recipient}: no bounce"));
            continue;
        };
        a.recipient += 1;
        let want_status = mxwatch::bounce::classify::normalise_status(reply);
        let ok_status = b.status == want_status
            || (want_status.is_none() && b.status.as_deref() == Some("5.0.0"));
        a.status += usize::from(ok_status);
        a.kind += usize::from(b.kind == kind);
        a.hard += usize::from(b.hard == hard);
        a.expiries_hard += usize::from(!hard && b.hard);
        let (want_uu, said_uu) = (kind == Kind::UserUnknown, b.kind == Kind::UserUnknown);
        a.uu[0] += usize::from(want_uu);
        a.uu[1] += usize::from(want_uu && said_uu);
        a.uu[2] += usize::from(said_uu);
        a.uu[3] += usize::from(want_uu && said_uu);
        if !ok_status || b.kind != kind || b.hard != hard {
            a.misses.push(format!(
                "{recipient}: want {want_status:?} {kind} hard={hard}, got {:?} {} hard={} ({:?})",
                b.status, b.kind, b.hard, b.diagnostic
            ));
        }
    }
    a
}

/// Every row right, from the bounce emails and from the log.
fn all_right(dsn: &Agreement, logged: &Agreement) {
    for (what, a) in [("DSNs", dsn), ("log", logged)] {
        assert_eq!(a.recipient, a.rows, "{what}: recipients {:?}", a.misses);
        assert_eq!(a.status, a.rows, "{what}: statuses {:?}", a.misses);
        assert_eq!(a.kind, a.rows, "{what}: kinds {:?}", a.misses);
        assert_eq!(
            a.expiries_hard, 0,
            "{what}: expiries marked hard {:?}",
            a.misses
        );
    }
}

fn report(what: &str, a: &Agreement) {
    let pct = |n: usize| 100.0 * n as f64 / a.rows as f64;
    println!(
        "| {what} | {}/{} = {:.0} % | {:.0} % | {:.0} % | {:.0} % | {}/{} | {}/{} | {} |",
        a.recipient,
        a.rows,
        pct(a.recipient),
        pct(a.status),
        pct(a.kind),
        pct(a.hard),
        a.uu[1],
        a.uu[0],
        a.uu[3],
        a.uu[2],
        a.expiries_hard
    );
    for m in &a.misses {
        println!("  miss: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Postfix: .ci/postfix start (run by .ci/run)"]
async fn postfix_bounces_and_logs_parse_to_what_the_remote_said() {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:2525")
        .await
        .unwrap();
    tokio::spawn(scripted_server(listener));
    let mbox = std::path::Path::new("/var/mail/mxwatchtest");
    let log = std::path::Path::new("/var/log/mxwatch-postfix.log");
    let before = std::fs::read(mbox).unwrap_or_default().len();
    let script = script();
    for r in &script {
        let who = &r.local;
        let mut child = std::process::Command::new("/usr/sbin/sendmail")
            .args([
                "-f",
                "mxwatchtest@mta.mxwatch.test",
                &format!("{who}@example.test"),
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                format!(
                    "From: mxwatchtest@mta.mxwatch.test\nTo: {who}@example.test\nSubject: test {who}\nMessage-ID: <{who}@mta.mxwatch.test>\n\nHello {who}.\n"
                )
                .as_bytes(),
            )
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    // Every message comes back as one DSN: the refusals at once, the
    // temporary ones once the queue lifetime (25 s) is over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let dsns = loop {
        let bytes = std::fs::read(mbox).unwrap_or_default();
        let new = bytes.get(before..).unwrap_or_default().to_vec();
        let n = parse::mbox_messages(&new).len();
        if n >= script.len() {
            break new;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} of {} DSNs after 150 s; log:\n{}",
            script.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let now = chrono::Utc::now();
    let from_dsns = parse::parse(&dsns, Some(Format::Mbox), now);
    assert!(from_dsns.problems.is_empty(), "{:?}", from_dsns.problems);
    let from_log = parse::parse(&std::fs::read(log).unwrap(), Some(Format::Postfix), now);
    assert!(from_log.problems.is_empty(), "{:?}", from_log.problems);

    let dsn = agreement(&from_dsns.bounces, false);
    // The log's last word on each recipient: the bounce, or the last deferral.
    let logged = agreement(&from_log.bounces, true);
    println!(
        "\n| Postfix 3.7, {} scripted replies | recipient | status | kind | hard | unknown-user recall | precision | expiries hard |\n|---|---|---|---|---|---|---|---|",
        script.len()
    );
    report("bounce emails (DSNs)", &dsn);
    report("log lines", &logged);
    all_right(&dsn, &logged);
}

/// The same script through a real Exim 4.96, recorded by
/// `scripts/exim-fixtures` (Postfix and Exim cannot be installed together
/// on Debian, so Exim's run is kept as fixtures).
#[test]
fn exim_bounces_and_mainlog_parse_to_what_the_remote_said() {
    let now = chrono::Utc::now();
    let dsns = parse::parse(
        include_bytes!("../fixtures/mta/exim-dsns.mbox"),
        Some(Format::Mbox),
        now,
    );
    assert!(dsns.problems.is_empty(), "{:?}", dsns.problems);
    let log = parse::parse(include_bytes!("../fixtures/mta/exim-mainlog"), None, now);
    assert!(log.problems.is_empty(), "{:?}", log.problems);
    let dsn = agreement(&dsns.bounces, false);
    let logged = agreement(&log.bounces, true);
    println!(
        "\n| Exim 4.96, {} scripted replies | recipient | status | kind | hard | unknown-user recall | precision | expiries hard |\n|---|---|---|---|---|---|---|---|",
        script().len()
    );
    report("bounce emails (DSNs)", &dsn);
    report("main log (detected)", &logged);
    all_right(&dsn, &logged);
}
