//! ESP payloads and MTA log lines from the shared corpus, each with the
//! fields it must give; `bounces parse` and `bounces ingest` end to end.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::cli::mxwatch;
use mxwatch::bounce::parse::{self, Format};
use mxwatch::bounce::{Action, Bounce, Kind, Source};
use serde_json::Value;

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn parse_fixture(p: &str) -> parse::Parsed {
    parse::parse(&std::fs::read(fixture(p)).unwrap(), None, Utc::now())
}

type Got = (
    String,
    Option<String>,
    Option<u16>,
    Kind,
    Option<Action>,
    Source,
);

/// (recipient, status, reply code, kind, action, source)
type Want = (
    &'static str,
    Option<&'static str>,
    Option<u16>,
    Kind,
    Option<Action>,
    Source,
);

fn check(p: &str, want: &[Want], skipped: usize) {
    let out = parse_fixture(p);
    assert!(out.problems.is_empty(), "{p}: {:?}", out.problems);
    assert_eq!(out.skipped, skipped, "{p}: skipped events");
    let got: Vec<Got> = out
        .bounces
        .iter()
        .map(|b: &Bounce| {
            (
                b.recipient.clone(),
                b.status.clone(),
                b.reply_code,
                b.kind,
                b.action,
                b.source,
            )
        })
        .collect();
    let want: Vec<_> = want
        .iter()
        .map(|w| (w.0.to_string(), w.1.map(str::to_string), w.2, w.3, w.4, w.5))
        .collect();
    assert_eq!(got, want, "{p}");
    assert!(
        out.bounces.iter().all(|b| b.at.is_some()),
        "{p}: every event has a time"
    );
}

use Action::{Delayed, Failed};
use Kind::*;

#[test]
fn amazon_ses() {
    let ses = Source::Ses;
    check(
        "webhooks/amazon-ses/notification-examples--bounce-notification-with-a-dsn.json",
        &[(
            "jane@example.com",
            Some("5.1.1"),
            Some(550),
            UserUnknown,
            Some(Failed),
            ses,
        )],
        0,
    );
    check(
        "webhooks/amazon-ses/notification-examples--bounce-notification-without-a-dsn.json",
        &[
            ("jane@example.com", None, None, Other, Some(Failed), ses),
            ("richard@example.com", None, None, Other, Some(Failed), ses),
        ],
        0,
    );
    for p in [
        "webhooks/amazon-ses/event-publishing-retrieving-sns-examples--bounce-record.json",
        "webhooks/amazon-ses/event-publishing-retrieving-firehose-examples--bounce-record.json",
    ] {
        check(
            p,
            &[(
                "recipient@example.com",
                Some("5.1.1"),
                Some(550),
                UserUnknown,
                Some(Failed),
                ses,
            )],
            0,
        );
    }
    for p in [
        "webhooks/amazon-ses/event-publishing-retrieving-sns-examples--deliverydelay-record.json",
        "webhooks/amazon-ses/event-publishing-retrieving-firehose-examples--deliverydelay-record.json",
    ] {
        check(
            p,
            &[(
                "recipient@example.com",
                Some("4.4.1"),
                Some(421),
                Network,
                Some(Delayed),
                ses,
            )],
            0,
        );
    }
}

#[test]
fn ses_inside_an_sns_envelope() {
    let inner = std::fs::read_to_string(fixture(
        "webhooks/amazon-ses/notification-examples--bounce-notification-with-a-dsn.json",
    ))
    .unwrap();
    let envelope = serde_json::json!({"Type": "Notification", "MessageId": "x", "Message": inner});
    let out = parse::parse(envelope.to_string().as_bytes(), None, Utc::now());
    assert_eq!(out.bounces.len(), 1);
    assert_eq!(out.bounces[0].recipient, "jane@example.com");
    let confirm = serde_json::json!({"Type": "SubscriptionConfirmation", "SubscribeURL": "https://example.invalid"});
    let out = parse::parse(confirm.to_string().as_bytes(), None, Utc::now());
    assert!(out.bounces.is_empty() && out.problems.is_empty());
    assert_eq!(out.skipped, 1);
}

#[test]
fn sendgrid() {
    let sg = Source::Sendgrid;
    let unknown = (
        "example@test.com",
        Some("5.0.0"),
        Some(500),
        UserUnknown,
        Some(Failed),
        sg,
    );
    check(
        "webhooks/sendgrid/sendgrid-docs-event-webhook--bounce.json",
        &[unknown],
        0,
    );
    check(
        "webhooks/sendgrid/sendgrid-docs-event-webhook--blocked.json",
        &[unknown],
        0,
    );
    check(
        "webhooks/sendgrid/sendgrid-docs-event-webhook--deferred.json",
        &[(
            "example@test.com",
            None,
            Some(400),
            System,
            Some(Delayed),
            sg,
        )],
        0,
    );
    check(
        "webhooks/sendgrid/sendgrid-docs-event-webhook--dropped.json",
        // "Bounced Address": SendGrid's own suppression, said as such.
        &[(
            "example@test.com",
            Some("5.0.0"),
            None,
            Suppressed,
            Some(Failed),
            sg,
        )],
        0,
    );
    check(
        "webhooks/sendgrid/sendgrid-docs-event-webhook--delivered.json",
        &[],
        1,
    );
    check(
        "webhooks/sendgrid/sendgrid-docs-event-webhook--processed.json",
        &[],
        1,
    );
}

#[test]
fn mailgun() {
    let mg = Source::Mailgun;
    check(
        "webhooks/mailgun/mailgun-docs-api-events--failed-permanent.json",
        &[("slava@mailgun.com", None, None, Other, Some(Failed), mg)],
        0,
    );
    check(
        "webhooks/mailgun/mailgun-docs-api-events--failed-temporary.json",
        &[(
            "test@test.com",
            Some("4.7.652"),
            Some(451),
            RateLimited,
            Some(Delayed),
            mg,
        )],
        0,
    );
    check(
        "webhooks/mailgun/mailgun-docs-api-events--failed-permanent-delayed-bounce.json",
        &[(
            "christest123@test.com",
            Some("5.1.1"),
            Some(550),
            UserUnknown,
            Some(Failed),
            mg,
        )],
        0,
    );
    // The webhook form wraps the same object in `event-data`.
    let v: Value = serde_json::from_slice(
        &std::fs::read(fixture(
            "webhooks/mailgun/mailgun-docs-api-events--failed-temporary.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let hook = serde_json::json!({"signature": {}, "event-data": v});
    let out = parse::parse(hook.to_string().as_bytes(), None, Utc::now());
    assert_eq!(out.bounces.len(), 1);
    assert_eq!(out.bounces[0].recipient, "test@test.com");
}

#[test]
fn postmark() {
    let pm = Source::Postmark;
    check(
        "webhooks/postmark/postmarker-cassette-bounce-723626745.json",
        &[(
            "example@example.com",
            Some("5.1.1"),
            Some(550),
            UserUnknown,
            Some(Failed),
            pm,
        )],
        0,
    );
    check(
        "webhooks/postmark/postmarker-conftest-BOUNCE_WEBHOOK.json",
        &[(
            "john@example.com",
            None,
            None,
            UserUnknown,
            Some(Failed),
            pm,
        )],
        0,
    );
}

/// Every Postfix line of the corpus: delivery failures give one bounce with
/// the expected recipient and status; other lines give nothing, no error.
#[test]
fn postfix_lines() {
    let mut bounced = 0;
    for file in [
        "mta-logs/postfix-grok-patterns-tests.jsonl",
        "mta-logs/timandes-mail-log-parser-tests.jsonl",
    ] {
        for line in std::fs::read_to_string(fixture(file)).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let text = v["message"].as_str().or(v["line"].as_str()).unwrap();
            let exp = &v["expected_fields"];
            let out = parse::parse(text.as_bytes(), Some(Format::Postfix), Utc::now());
            let kv = exp["postfix_keyvalue_data"].as_str().unwrap_or("");
            let to = exp["to"].as_str().map(str::to_string).or_else(|| {
                kv.split(", ")
                    .find_map(|p| p.strip_prefix("to="))
                    .map(|t| t.trim_matches(|c| c == '<' || c == '>').to_string())
            });
            let status = exp["postfix_status"]
                .as_str()
                .or(exp["status"].as_str())
                .unwrap_or("");
            let failure = ["bounced", "deferred", "undeliverable-but-not-cached"].contains(&status);
            match (failure, to) {
                (true, Some(to)) if to.contains('.') && !to.ends_with("@localhost") => {
                    assert!(out.problems.is_empty(), "{text}: {:?}", out.problems);
                    assert_eq!(out.bounces.len(), 1, "{text}");
                    let b = &out.bounces[0];
                    assert_eq!(b.recipient, to.to_lowercase(), "{text}");
                    let dsn = exp["dsn"].as_str().map(str::to_string).or_else(|| {
                        kv.split(", ")
                            .find_map(|p| p.strip_prefix("dsn="))
                            .map(|d| d.trim_end_matches(',').to_string())
                    });
                    assert_eq!(b.status, dsn, "{text}");
                    assert_eq!(
                        b.action,
                        Some(if status == "deferred" {
                            Delayed
                        } else {
                            Failed
                        }),
                        "{text}"
                    );
                    bounced += 1;
                }
                (true, Some(_)) => {
                    assert!(
                        out.bounces.is_empty(),
                        "{text}: a local address is no recipient domain"
                    );
                }
                _ => {
                    assert!(out.bounces.is_empty(), "{text}");
                    assert!(out.problems.is_empty(), "{text}: {:?}", out.problems);
                }
            }
        }
    }
    assert!(bounced >= 5, "only {bounced} delivery failures checked");
}

#[test]
fn the_gmail_nosuchuser_log_line() {
    let line = "Aug 28 10:12:10 nbh2 postfix-google/smtp[28345]: 7A7D47BDC: to=<www.xx@gmail.com>, relay=gmail-smtp-in.l.google.com[74.125.133.26]:25, delay=123, delays=0.71/123/0.03/0.02, dsn=5.1.1, status=bounced (host gmail-smtp-in.l.google.com[74.125.133.26] said: 550-5.1.1 The email account that you tried to reach does not exist. Please try 550-5.1.1 double-checking the recipient's email address for typos or 550-5.1.1 unnecessary spaces. Learn more at 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser y8si9245454wmd.93 - gsmtp (in reply to RCPT TO command))";
    let out = parse::parse(line.as_bytes(), None, Utc::now());
    let b = &out.bounces[0];
    assert_eq!(
        (b.kind, b.hard, b.reply_code),
        (UserUnknown, true, Some(550))
    );
    assert_eq!(b.remote_mta.as_deref(), Some("gmail-smtp-in.l.google.com"));
}

#[test]
fn parse_reports_problems_with_location_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feed.jsonl"),
        "{\"email\":\"a@example.com\",\"event\":\"bounce\",\"status\":\"5.1.1\",\"reason\":\"550 5.1.1 no such user\",\"timestamp\":1}\nnot json\n{\"email\":\"b@example.com\",\"event\":\"delivered\",\"timestamp\":1}\n",
    )
    .unwrap();
    let good = fixture("sisimai/maildir/bsd/lhost-postfix-01.eml");
    let out = mxwatch(
        dir.path(),
        &[
            "bounces",
            "parse",
            "--json",
            "feed.jsonl",
            good.to_str().unwrap(),
            "missing.eml",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("feed.jsonl:2: invalid JSON"), "{stderr}");
    assert!(stderr.contains("missing.eml: no such file"), "{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one bad line stops nothing");
    assert_eq!(lines[0]["recipient"], "a@example.com");
    assert_eq!(lines[0]["kind"], "user_unknown");
    assert_eq!(lines[0]["source"], "sendgrid");

    let out = mxwatch(dir.path(), &["bounces", "parse", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let out = mxwatch(
        dir.path(),
        &["bounces", "parse", "--format", "nonsense", "x"],
    );
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn ingest_is_idempotent_and_list_filters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        "domains: [example.com]\n",
    )
    .unwrap();
    let maildir = fixture("sisimai/maildir/bsd");
    let ses = fixture("webhooks/amazon-ses");
    let args = [
        "bounces",
        "ingest",
        maildir.to_str().unwrap(),
        ses.to_str().unwrap(),
    ];
    let first = mxwatch(dir.path(), &args);
    let err = String::from_utf8_lossy(&first.stderr).to_string();
    let new: usize = err
        .split(" bounces parsed, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(new > 400, "{err}");
    let second = mxwatch(dir.path(), &args);
    let err2 = String::from_utf8_lossy(&second.stderr);
    assert!(err2.contains(", 0 new stored"), "{err2}");

    let listed = mxwatch(
        dir.path(),
        &["bounces", "list", "--json", "--kind", "user_unknown"],
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() > 80);
    assert!(rows.iter().all(|r| r["kind"] == "user_unknown"));
    let one = mxwatch(
        dir.path(),
        &[
            "bounces",
            "list",
            "--json",
            "--domain",
            "example.com",
            "--since",
            "2016-01-01T00:00:00Z",
        ],
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&one.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["domain"] == "example.com" && r["at"].as_str().unwrap() >= "2016")
    );
}

/// Replay over a real bounce email with scripted observations around it:
/// the same bounce is `transient` inside a scripted MX change and
/// `suppress` without one.
#[tokio::test]
async fn replay_over_a_corpus_bounce_with_scripted_observations() {
    use mxwatch::replay;
    use mxwatch::verdict::Verdict;
    let out = parse_fixture("sisimai/maildir/bsd/lhost-sendmail-01.eml");
    let b = out.bounces.first().expect("a bounce").clone();
    assert_eq!(b.kind, Kind::UserUnknown);
    let at = b.at.expect("dated");
    let obs = |offset_h: i64, host: &str| {
        format!(
            "{{\"domain\":\"{}\",\"at\":\"{}\",\"outcome\":\"records\",\"mx\":[{{\"preference\":10,\"exchange\":\"{host}\"}}],\"ttl\":300}}\n",
            b.domain,
            (at + chrono::Duration::hours(offset_h)).to_rfc3339()
        )
    };
    let own = format!("mx.{}", b.domain);
    let config = mxwatch::config::Config::from_yaml(
        "domains: []\ngrace: 1h\nsettle: 72h\n",
        std::path::Path::new("test.yaml"),
    )
    .unwrap();
    let replay_over = async |text: &str| {
        let (recorded, bad) = replay::read_observations(text);
        assert!(bad.is_empty(), "{bad:?}");
        replay::replay(&config, &recorded, std::slice::from_ref(&b), &[], &[])
            .await
            .unwrap()
    };

    // Scripted: the domain's own MX, then iCloud from an hour before the bounce, then back.
    let (res, summary) =
        replay_over(&(obs(-3, &own) + &obs(-1, "mx01.mail.icloud.com") + &obs(2, &own))).await;
    assert_eq!(res[0].final_judgement.verdict, Verdict::Transient);
    assert_eq!(summary.prevented, 1);

    // Scripted: nothing ever changed.
    let (res, summary) = replay_over(&(obs(-3, &own) + &obs(2, &own))).await;
    assert_eq!(res[0].final_judgement.verdict, Verdict::Suppress);
    assert_eq!(summary.prevented, 0);
}

/// Two ingests in two processes: the second rebuilds the anomaly detector
/// from the stored bounces, recognises the burst the two make together and
/// reinstates the suppressions of both.
#[test]
fn a_burst_split_across_ingests_is_recognised_and_its_reinstatements_listed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        "domains: [example.com]\n",
    )
    .unwrap();
    let t0 = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap();
    let line = |i: i64| {
        crate::unknown_user(
            &format!("user{i}@icloud.com"),
            t0 + chrono::Duration::minutes(i),
            "mx01.mail.icloud.com",
        )
    };
    // A day of ordinary feed first: anomaly detection has warmed up.
    let first: Vec<String> = std::iter::once(crate::history_line(t0))
        .chain((0..12).map(line))
        .collect();
    let second: Vec<String> = (12..25).map(line).collect();
    std::fs::write(dir.path().join("a.jsonl"), first.join("\n")).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), second.join("\n")).unwrap();
    let a = mxwatch(dir.path(), &["bounces", "ingest", "a.jsonl"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(String::from_utf8_lossy(&a.stderr).contains("0 suppressions reinstated"));
    let b = mxwatch(dir.path(), &["bounces", "ingest", "b.jsonl"]);
    let err = String::from_utf8_lossy(&b.stderr);
    assert!(
        err.contains("13 new stored") && err.contains("19 suppressions reinstated"),
        "{err}"
    );

    let out = mxwatch(dir.path(), &["reinstatements", "--json"]);
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 19);
    assert_eq!(rows[0]["recipient"], "user0@icloud.com");
    assert_eq!(rows[0]["window"]["kind"], "anomaly");
    let text = mxwatch(
        dir.path(),
        &["reinstatements", "--since", "2000-01-01T00:00:00Z"],
    );
    assert_eq!(String::from_utf8_lossy(&text.stdout).lines().count(), 19);
    // Ingesting again changes nothing.
    let again = mxwatch(dir.path(), &["bounces", "ingest", "a.jsonl", "b.jsonl"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 new stored"));
    let out = mxwatch(dir.path(), &["reinstatements", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 19);
}

/// The whole address or none: an SMTPUTF8 local part is taken whole
/// (`jörg@…`, not `rg@…`), an address broken by an invisible character is
/// not cut down to a stranger's, and control or invisible characters in a
/// recipient are refused with a problem, never stored (issue 11, item 4).
#[test]
fn addresses_are_taken_whole_or_not_at_all() {
    let now = chrono::Utc::now();
    let email = |body: &str| {
        format!("From: MAILER-DAEMON@a.test\nSubject: failure\n\n{body}\n").into_bytes()
    };
    let out = parse::parse(&email("<jörg@a.test>: 550 5.1.1 user unknown"), None, now);
    let got: Vec<&str> = out.bounces.iter().map(|b| b.recipient.as_str()).collect();
    assert_eq!(got, ["jörg@a.test"], "{:?}", out.problems);
    assert_eq!(out.bounces[0].kind, Kind::UserUnknown);

    let out = parse::parse(
        &email("<ab+c\u{200b}.d@a.test>: 550 5.1.1 user unknown"),
        None,
        now,
    );
    assert_eq!(out.bounces, vec![], "not `.d@a.test`");
    assert_eq!(out.problems.len(), 1);

    let jsonl = "{\"recipient\": \"a\\u0000b@a.test\", \"status\": \"5.1.1\"}\n\
                 {\"recipient\": \"ab\\u200b@a.test\", \"status\": \"5.1.1\"}\n\
                 {\"recipient\": \"ok@a.test\", \"status\": \"5.1.1\"}\n";
    let out = parse::parse(jsonl.as_bytes(), None, now);
    let got: Vec<&str> = out.bounces.iter().map(|b| b.recipient.as_str()).collect();
    assert_eq!(got, ["ok@a.test"]);
    assert_eq!(
        out.problems.iter().map(|p| p.line).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
    assert!(
        out.problems[0].message.contains("not an email address"),
        "{:?}",
        out.problems
    );
}
