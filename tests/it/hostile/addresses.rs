//! Issue 20, item 1: a quoted local part that holds an innocent address
//! (`"kim@w1.test x"@attacker.test`) was read as that address by every
//! reader but the DSN's `Final-Recipient`, so whoever signed up with it and
//! answered 550 5.1.1 from their own server got `kim@w1.test` suppressed.
//! Every reader now reads addresses by one grammar: the whole quoted
//! address, or no recipient.

use super::t0;

/// The attacker's addresses: each holds an innocent one in its quotes.
const HOSTILE: [&str; 3] = [
    "\"kim@w1.test x\"@attacker.test",
    "\"kim@w2.test,\"@attacker.test",
    "\"kim@w3.test>\"@attacker.test",
];

fn inputs(addr: &str) -> Vec<(&'static str, String)> {
    let reply = "550 5.1.1 user unknown";
    vec![
        (
            "Postfix",
            format!(
                "2021-04-26T11:00:00+00:00 mail postfix/smtp[1]: ABC: to=<{addr}>, relay=mx.attacker.test[192.0.2.1]:25, dsn=5.1.1, status=bounced (host mx.attacker.test[192.0.2.1] said: {reply} (in reply to RCPT TO command))"
            ),
        ),
        (
            "Sendmail",
            format!(
                "Apr 26 11:00:00 mail sm-mta[1234]: 4AUA00Hx001234: to=<{addr}>, delay=00:00:01, mailer=esmtp, relay=mx.attacker.test. [192.0.2.1], dsn=5.1.1, stat=User unknown"
            ),
        ),
        (
            "Sendmail, bare",
            format!(
                "Apr 26 11:00:00 mail sm-mta[1234]: 4AUA00Hx001234: to={addr}, delay=00:00:01, mailer=esmtp, relay=mx.attacker.test. [192.0.2.1], dsn=5.1.1, stat=User unknown"
            ),
        ),
        (
            "Exim",
            format!(
                "2021-04-26 11:00:00 1tHqXg-0003rC-1A ** {addr} R=dnslookup T=remote_smtp H=mx.attacker.test [192.0.2.1]: SMTP error from remote mail server after RCPT TO:<{addr}>: {reply}"
            ),
        ),
        (
            "text bounce",
            format!(
                "From: MAILER-DAEMON@mx.attacker.test\nTo: s@example.org\nSubject: Undelivered Mail Returned to Sender\n\n<{addr}>: host mx.attacker.test[192.0.2.1] said: {reply} (in reply to RCPT TO command)\n"
            ),
        ),
        (
            "text bounce, bare",
            format!(
                "From: MAILER-DAEMON@mx.attacker.test\nTo: s@example.org\nSubject: Undelivered Mail Returned to Sender\n\nDelivery to {addr} failed: {reply}\n"
            ),
        ),
        (
            "X-Failed-Recipients",
            format!(
                "From: Mail Delivery System <Mailer-Daemon@mx.attacker.test>\nTo: s@example.org\nX-Failed-Recipients: {addr}\nSubject: Mail delivery failed\n\nThis message was created automatically by mail delivery software.\n\n  {addr}\n    {reply}\n"
            ),
        ),
        (
            "SendGrid",
            serde_json::json!([{"email": addr, "event": "bounce", "status": "5.1.1",
                "reason": reply, "timestamp": 1619434800}])
            .to_string(),
        ),
    ]
}

#[test]
fn a_quoted_local_part_never_names_the_address_inside_it() {
    for addr in HOSTILE {
        for (what, input) in inputs(addr) {
            let parsed = mxwatch::bounce::parse::parse(input.as_bytes(), None, t0());
            for b in &parsed.bounces {
                assert!(
                    !b.recipient.starts_with("kim@"),
                    "{what}, {addr}: read as {:?}",
                    b.recipient
                );
                // Taken whole, or not at all.
                assert_eq!(b.recipient, addr, "{what}");
                assert_eq!(b.domain, "attacker.test", "{what}");
            }
        }
    }
}

/// The readers that can take the address whole do: the attacker's own
/// address is the one that bounced.
#[test]
fn a_quoted_local_part_is_taken_whole() {
    let addr = HOSTILE[0];
    for (what, input) in inputs(addr) {
        let parsed = mxwatch::bounce::parse::parse(input.as_bytes(), None, t0());
        let who: Vec<&str> = parsed
            .bounces
            .iter()
            .map(|b| b.recipient.as_str())
            .collect();
        assert_eq!(who, [addr], "{what}: {:?}", parsed.problems);
    }
}

/// A field inside a quoted local part is not the line's: a bounce that
/// quotes `status=sent` is still a bounce, never a delivery.
#[test]
fn a_field_inside_a_quoted_local_part_is_not_the_lines() {
    let line = "2021-04-26T11:00:00+00:00 mail postfix/smtp[1]: ABC: to=<\"x, relay=mx.w1.test, dsn=2.0.0, status=sent (250 ok)\"@attacker.test>, relay=mx.attacker.test[192.0.2.1]:25, dsn=5.1.1, status=bounced (host mx.attacker.test[192.0.2.1] said: 550 5.1.1 user unknown (in reply to RCPT TO command))";
    let parsed = mxwatch::bounce::parse::parse(line.as_bytes(), None, t0());
    assert!(parsed.delivered.is_empty(), "{:?}", parsed.delivered);
    assert_eq!(parsed.bounces.len(), 1, "{:?}", parsed.problems);
    assert_eq!(parsed.bounces[0].status.as_deref(), Some("5.1.1"));
    assert_eq!(
        parsed.bounces[0].remote_mta.as_deref(),
        Some("mx.attacker.test")
    );
}

/// A quote that never closes gives no recipient (and says so), in a log
/// and in a text alike.
#[test]
fn an_unclosed_quote_gives_no_recipient() {
    let postfix = "2021-04-26T11:00:00+00:00 mail postfix/smtp[1]: ABC: to=<\"kim@w1.test x>, relay=mx.attacker.test[192.0.2.1]:25, dsn=5.1.1, status=bounced (host mx.attacker.test[192.0.2.1] said: 550 5.1.1 user unknown)";
    let parsed = mxwatch::bounce::parse::parse(postfix.as_bytes(), None, t0());
    assert!(parsed.bounces.is_empty(), "{:?}", parsed.bounces);
    assert_eq!(parsed.problems.len(), 1);
    assert_eq!(parsed.problems[0].line, Some(1));
    let text = "From: MAILER-DAEMON@mx.attacker.test\nTo: s@example.org\nSubject: Undelivered Mail Returned to Sender\n\n\"kim@w1.test x@attacker.test: 550 5.1.1 user unknown\n";
    let parsed = mxwatch::bounce::parse::parse(text.as_bytes(), None, t0());
    assert!(
        parsed
            .bounces
            .iter()
            .all(|b| !b.recipient.starts_with("kim@")),
        "{:?}",
        parsed.bounces
    );
}
