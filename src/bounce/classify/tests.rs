use super::*;
use std::collections::BTreeSet;

/// (action, status, reply code, diagnostic) → (kind, rule). At least one
/// case per rule; `every_rule_has_a_case` checks that.
type Case = (
    Option<Action>,
    Option<&'static str>,
    Option<u16>,
    &'static str,
    Kind,
    &'static str,
);

const CASES: &[Case] = &[
    (
        Some(Action::Failed),
        Some("5.1.1"),
        Some(550),
        "550 5.1.1 <a@icloud.com>: user lookup success but no user record found",
        Kind::UserUnknown,
        "user-unknown",
    ),
    (
        Some(Action::Failed),
        Some("5.0.0"),
        Some(550),
        "550 5.0.0 <a@example.com>... User unknown",
        Kind::UserUnknown,
        "user-unknown",
    ),
    (
        Some(Action::Failed),
        None,
        Some(550),
        "The email account that you tried to reach does not exist.",
        Kind::UserUnknown,
        "user-unknown",
    ),
    (
        Some(Action::Failed),
        Some("5.1.0"),
        Some(550),
        "550 5.1.0 sender rejected",
        Kind::PolicyBlocked,
        "sender-side",
    ),
    (
        Some(Action::Failed),
        Some("5.1.7"),
        Some(553),
        "553 5.1.7 bad sender address syntax",
        Kind::PolicyBlocked,
        "sender-side",
    ),
    (
        Some(Action::Failed),
        Some("5.7.1"),
        Some(550),
        "550 5.7.1 Message blocked: spam content",
        Kind::SpamBlocked,
        "spam",
    ),
    (
        Some(Action::Failed),
        Some("5.7.1"),
        Some(554),
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        Kind::SpamBlocked,
        "spam",
    ),
    (
        Some(Action::Failed),
        Some("5.7.1"),
        Some(550),
        "550 5.7.1 blocked by policy",
        Kind::PolicyBlocked,
        "policy",
    ),
    (
        Some(Action::Failed),
        Some("5.7.1"),
        Some(554),
        "554 5.7.1 <x@example.org>: Relay access denied",
        Kind::RelayDenied,
        "relay-denied",
    ),
    (
        Some(Action::Failed),
        Some("5.2.2"),
        Some(552),
        "552 5.2.2 Mailbox full",
        Kind::MailboxFull,
        "mailbox-full",
    ),
    (
        Some(Action::Delayed),
        Some("4.2.2"),
        Some(452),
        "452 4.2.2 The email account that you tried to reach is over quota",
        Kind::MailboxFull,
        "mailbox-full",
    ),
    (
        Some(Action::Failed),
        Some("5.2.1"),
        Some(550),
        "550 5.2.1 The email account is disabled",
        Kind::MailboxDisabled,
        "mailbox-disabled",
    ),
    (
        Some(Action::Failed),
        None,
        None,
        "User some.name (a@example.jp) not listed in Domino Directory",
        Kind::UserUnknown,
        "user-unknown",
    ),
    (
        Some(Action::Failed),
        Some("5.7.1"),
        Some(554),
        "554 5.7.1 Client host [192.0.2.1] listed in zen.spamhaus.org",
        Kind::SpamBlocked,
        "spam",
    ),
    (
        Some(Action::Failed),
        Some("5.1.2"),
        None,
        "Host or domain name not found. Name service error for name=example.invalid type=MX",
        Kind::DomainUnknown,
        "domain-unknown",
    ),
    (
        Some(Action::Failed),
        Some("5.3.4"),
        Some(552),
        "552 5.3.4 Message size exceeds fixed limit",
        Kind::TooLarge,
        "too-large",
    ),
    (
        Some(Action::Delayed),
        Some("4.7.1"),
        Some(450),
        "450 4.7.1 greylisted, please try again later",
        Kind::Greylisted,
        "greylisted",
    ),
    (
        Some(Action::Delayed),
        Some("4.7.28"),
        Some(421),
        "421 4.7.28 our system has detected an unusual rate of unsolicited mail",
        Kind::RateLimited,
        "rate-limited",
    ),
    (
        Some(Action::Delayed),
        Some("4.0.0"),
        Some(421),
        "421 Too many concurrent SMTP connections; please try again later",
        Kind::Greylisted,
        "greylisted",
    ),
    (
        Some(Action::Failed),
        Some("5.0.0"),
        Some(550),
        "550 too many connections from your IP",
        Kind::RateLimited,
        "rate-limited",
    ),
    (
        Some(Action::Failed),
        Some("5.6.0"),
        Some(554),
        "554 5.6.0 Message rejected",
        Kind::ContentRejected,
        "content",
    ),
    (
        Some(Action::Failed),
        Some("5.0.0"),
        Some(554),
        "554 Virus found in message",
        Kind::ContentRejected,
        "content",
    ),
    (
        Some(Action::Failed),
        Some("4.4.7"),
        None,
        "delivery time expired",
        Kind::Expired,
        "expired",
    ),
    (
        Some(Action::Failed),
        Some("4.4.1"),
        None,
        "connect to mx.example.com[192.0.2.1]:25: Connection refused",
        Kind::Network,
        "network",
    ),
    (
        Some(Action::Failed),
        Some("5.3.0"),
        Some(554),
        "554 5.3.0 Mail system error",
        Kind::System,
        "system",
    ),
    (
        Some(Action::Failed),
        None,
        None,
        "I am out of the office until Monday",
        Kind::AutoReply,
        "auto-reply",
    ),
    (
        Some(Action::Delivered),
        Some("2.0.0"),
        Some(250),
        "250 OK",
        Kind::Delivered,
        "delivered",
    ),
    (
        Some(Action::Failed),
        Some("5.0.0"),
        Some(550),
        "550 something nobody wrote a rule for",
        Kind::Other,
        "other",
    ),
    (
        Some(Action::Delayed),
        None,
        None,
        "",
        Kind::Expired,
        "delayed",
    ),
];

#[test]
fn rule_table_cases() {
    for (action, status, reply, diag, kind, rule) in CASES {
        let v = classify(&Clues {
            action: *action,
            status: *status,
            reply_code: *reply,
            diagnostic: diag,
            domain: "example.com",
            ..Default::default()
        });
        assert_eq!((v.kind, v.rule), (*kind, *rule), "{diag:?}");
    }
}

#[test]
fn every_rule_has_a_case() {
    let covered: BTreeSet<&str> = CASES
        .iter()
        .map(|c| c.5)
        .chain(OVERRIDES.iter().copied())
        .collect();
    for rule in RULES {
        assert!(
            covered.contains(rule.name),
            "rule {} has no test case",
            rule.name
        );
    }
    for rule in OVERRIDES {
        assert!(covered.contains(rule), "override {rule} has no test case");
    }
}

fn ev<'a>(
    action: Option<Action>,
    status: Option<&'a str>,
    reply_code: Option<u16>,
    diagnostic: &'a str,
    hint: Option<Kind>,
) -> Clues<'a> {
    Clues {
        action,
        status,
        reply_code,
        diagnostic,
        hint,
        domain: "example.com",
        recipient: "",
        command: None,
        source: None,
    }
}

#[test]
fn hard_means_a_conventional_handler_would_suppress() {
    assert!(
        classify(&ev(
            Some(Action::Failed),
            Some("5.1.1"),
            Some(550),
            "",
            None
        ))
        .hard
    );
    assert!(
        classify(&ev(
            Some(Action::Failed),
            Some("5.7.1"),
            Some(550),
            "spam",
            None
        ))
        .hard,
        "conventional handlers suppress blocks too"
    );
    assert!(
        !classify(&ev(
            Some(Action::Delayed),
            Some("4.2.2"),
            Some(452),
            "",
            None
        ))
        .hard
    );
    assert!(!classify(&ev(None, None, None, "out of office", None)).hard);
    assert!(
        !classify(&ev(
            Some(Action::Failed),
            Some("5.0.0"),
            None,
            "",
            Some(Kind::Complaint)
        ))
        .hard
    );
}

#[test]
fn user_unknown_after_data_is_a_filter() {
    let mut e = ev(
        Some(Action::Failed),
        Some("5.0.0"),
        Some(550),
        "550 Unknown user kijitora@example.net",
        None,
    );
    assert_eq!(classify(&e).kind, Kind::UserUnknown);
    e.command = Some(SmtpCommand::Data);
    let v = classify(&e);
    assert_eq!(
        (v.kind, v.rule),
        (Kind::PolicyBlocked, "filtered-after-data")
    );
    assert!(v.hard, "a conventional handler would still suppress it");
    e.command = Some(SmtpCommand::RcptTo);
    assert_eq!(
        classify(&e).kind,
        Kind::UserUnknown,
        "refused at RCPT: the address is unknown"
    );
    e.command = None;
    e.source = Some(Source::Dsn);
    let v = classify(&e);
    assert_eq!(
        (v.kind, v.rule),
        (Kind::PolicyBlocked, "unconfirmed"),
        "a bounce email with neither code nor phase"
    );
    e.recipient = "kijitora@example.net";
    assert_eq!(
        classify(&e).kind,
        Kind::UserUnknown,
        "the reply names the address"
    );
    let mut ours = e;
    ours.diagnostic = "<kijitora@example.net>: 550 user unknown";
    assert_eq!(
        classify(&ours).rule,
        "unconfirmed",
        "the address before the reply is our own line"
    );
    ours.diagnostic = "unknown user: kijitora@example.net";
    assert_eq!(
        classify(&ours).kind,
        Kind::UserUnknown,
        "the wording names the address"
    );
    ours.diagnostic = "kijitora@example.net: The recipient name is not recognized";
    assert_eq!(
        classify(&ours).kind,
        Kind::UserUnknown,
        "a directory lookup's own words"
    );
    ours.diagnostic =
        "kijitora@example.net: 554 delivery error: dd This user doesn't have a yahoo.com account";
    ours.command = Some(SmtpCommand::Data);
    assert_eq!(
        classify(&ours).kind,
        Kind::UserUnknown,
        "Yahoo refuses unknown users after DATA"
    );
    ours.diagnostic = "550 unknown user";
    ours.command = Some(SmtpCommand::RcptTo);
    assert_eq!(
        classify(&ours).kind,
        Kind::UserUnknown,
        "refused at RCPT TO"
    );
    e.recipient = "";
    e.status = Some("5.1.1");
    assert_eq!(
        classify(&e).kind,
        Kind::UserUnknown,
        "an address code vouches for the words"
    );
    let e = ev(
        Some(Action::Failed),
        Some("5.2.0"),
        Some(550),
        "550 Unknown user a@example.com",
        None,
    );
    let v = classify(&e);
    assert_eq!((v.kind, v.rule), (Kind::PolicyBlocked, "mailbox-exists"));
    let e = ev(
        Some(Action::Failed),
        Some("5.7.1"),
        Some(550),
        "550 5.7.1 <a@sfr.fr>: Recipient address rejected: User unknown",
        None,
    );
    let v = classify(&e);
    assert_eq!((v.kind, v.rule), (Kind::PolicyBlocked, "policy-code"));
    let e = ev(
        Some(Action::Failed),
        Some("5.0.0"),
        Some(550),
        "550 : User unknown",
        None,
    );
    assert_eq!(classify(&e).rule, "unnamed-recipient");
    let e = ev(
        Some(Action::Failed),
        Some("5.0.0"),
        Some(550),
        "550 <a@ezweb.ne.jp>: User unknown",
        None,
    );
    assert_eq!(
        classify(&e).kind,
        Kind::UserUnknown,
        "the address named: a missing user"
    );
    let e = ev(
        Some(Action::Failed),
        Some("5.1.1"),
        Some(550),
        "550 5.1.1 <a@example.com> - 203.0.113.1 has sent to too many recipients this hour",
        None,
    );
    let v = classify(&e);
    assert_eq!((v.kind, v.rule), (Kind::RateLimited, "rate-words"));
}

#[test]
fn statuses_normalise() {
    assert_eq!(
        normalise_status("smtp; 550 5.01.001 x"),
        Some("5.1.1".into())
    );
    assert_eq!(normalise_status("#5.1.1 x"), Some("5.1.1".into()));
    assert_eq!(normalise_status("1.2.3.4"), None);
    assert_eq!(normalise_status("no code"), None);
}

/// Providers' own wordings for an unknown recipient, in a bounce email that
/// shows neither the SMTP phase nor (mostly) an address code: the case the
/// rules trust least. Each names where the wording is documented or seen.
#[test]
fn providers_wordings_for_an_unknown_recipient() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        // Microsoft 365 / Exchange Online: Microsoft Learn, "Fix email
        // delivery issues for error code 5.1.10 in Exchange Online".
        (
            "Microsoft 5.1.10",
            Some("5.1.10"),
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient kim@contoso.com not found by SMTP address lookup",
        ),
        // The older Exchange wording, as Mailgun's legacy webhooks carry it.
        (
            "Microsoft RecipNotFound",
            Some("5.1.1"),
            "smtp;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
        ),
        // Exchange Online's directory-based edge blocking: Microsoft Learn,
        // "Fix email delivery issues for error code 550 5.4.1".
        (
            "Microsoft 5.4.1 DBEB",
            Some("5.4.1"),
            "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DM6NAM12FT035.eop-nam12.prod.protection.outlook.com]",
        ),
        // Google: support.google.com/mail/?p=NoSuchUser.
        (
            "Gmail",
            Some("5.1.1"),
            "550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces.",
        ),
        // Yahoo's reply after DATA (Sisimai's corpus, rhost yahoo).
        (
            "Yahoo",
            None,
            "554 delivery error: dd This user doesn't have a yahoo.com account (kim@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com",
        ),
        // Apple iCloud, the outage of 26 April 2021 and every day since.
        (
            "iCloud",
            Some("5.1.1"),
            "550 5.1.1 <kim@icloud.com>: user does not exist",
        ),
        // GMX and web.de (1&1): "Requested action not taken: mailbox unavailable".
        (
            "GMX",
            None,
            "550 Requested action not taken: mailbox unavailable",
        ),
        // Mail.ru (seen in Postfix logs of Russian senders).
        (
            "Mail.ru",
            None,
            "550 Message was not accepted -- invalid mailbox.  Local mailbox kim@mail.ru is unavailable: user not found",
        ),
        // Yandex answers an unknown recipient under a policy code.
        ("Yandex", Some("5.7.1"), "550 5.7.1 No such user!"),
        // qmail: "Sorry, no mailbox here by that name. (#5.1.1)".
        (
            "qmail",
            Some("5.1.1"),
            "Sorry, no mailbox here by that name. (#5.1.1)",
        ),
    ];
    for &(who, status, diagnostic) in cases {
        let mut e = ev(Some(Action::Failed), status, Some(550), diagnostic, None);
        e.source = Some(Source::Dsn);
        // The recipient as the bounce names it (kim@ at the provider).
        let named = diagnostic
            .split(|c: char| c.is_whitespace() || "<>()".contains(c))
            .find(|w| w.starts_with("kim@"));
        e.recipient = named.unwrap_or("kim@example.com");
        let v = classify(&e);
        assert_eq!(v.kind, Kind::UserUnknown, "{who}: {v:?}");
        assert!(v.hard, "{who}");
    }
}

#[test]
fn a_delay_with_only_a_temporary_code_is_not_an_expiry() {
    // Exim's delay warning whose only clue is "450 4.2.0".
    let v = classify(&ev(
        Some(Action::Delayed),
        Some("4.2.0"),
        Some(450),
        "450 4.2.0",
        None,
    ));
    assert_eq!(
        (v.kind, v.hard, v.rule),
        (Kind::Other, false, "delayed-unexplained")
    );
    // A delay notice that says nothing still reads as one that may expire.
    let v = classify(&ev(Some(Action::Delayed), None, None, "", None));
    assert_eq!((v.kind, v.hard), (Kind::Expired, false));
}

#[test]
fn an_expiry_is_hard_only_on_a_permanent_reply() {
    // Exim reports an expiry as 5.0.0 with nothing from the remote side.
    let v = classify(&ev(
        Some(Action::Failed),
        Some("5.0.0"),
        None,
        "retry timeout exceeded",
        None,
    ));
    assert_eq!((v.kind, v.hard), (Kind::Expired, false));
    let v = classify(&ev(
        Some(Action::Failed),
        Some("5.4.7"),
        None,
        "delivery time expired",
        None,
    ));
    assert_eq!((v.kind, v.hard), (Kind::Expired, false));
    let v = classify(&ev(
        Some(Action::Failed),
        Some("5.4.7"),
        Some(550),
        "550 message expired after its last attempt was refused",
        None,
    ));
    assert_eq!((v.kind, v.hard), (Kind::Expired, true));
}

#[test]
fn x_1_10_is_a_null_mx_unless_microsoft_says_recipient_not_found() {
    // RFC 7505 §4.3: X.1.10 "Recipient address has null MX" (Oracle
    // Messaging Server: "host/domain does not accept mail").
    let v = classify(&ev(
        Some(Action::Failed),
        Some("5.1.10"),
        None,
        "host/domain does not accept mail",
        None,
    ));
    assert_eq!(v.kind, Kind::DomainUnknown);
    let v = classify(&ev(
        Some(Action::Failed),
        Some("5.1.10"),
        Some(550),
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient kim@contoso.com not found by SMTP address lookup",
        None,
    ));
    assert_eq!(v.kind, Kind::UserUnknown);
}

/// Issue 19, item 8: where words and codes disagree, the clear words of a
/// state the code cannot be win (the general rule: an address code says
/// the mailbox does not exist; words that say it exists outrank it).
#[test]
fn clear_words_outrank_a_contradicting_code() {
    // qmail/vpopmail: Sisimai's MailboxFull wordings ("is over quota
    // temporarily"); an Openfind error table lists "552 5.1.1 Sorry,
    // Mailbox … Is Over Quota Temporarily".
    let v = classify(&Clues {
        action: Some(Action::Failed),
        status: Some("5.1.1"),
        reply_code: Some(552),
        diagnostic: "552 sorry, mailbox kim@example.com is over quota temporarily (#5.1.1)",
        domain: "example.com",
        recipient: "kim@example.com",
        source: Some(Source::Dsn),
        ..Default::default()
    });
    assert_eq!((v.kind, v.rule), (Kind::MailboxFull, "words-over-code"));
    // The same code with words that agree, or say nothing more, stands.
    for diag in [
        "550 5.1.1 <kim@example.com>: Recipient address rejected: User unknown",
        "550 5.1.1 kim@example.com",
    ] {
        let v = classify(&Clues {
            action: Some(Action::Failed),
            status: Some("5.1.1"),
            reply_code: Some(550),
            diagnostic: diag,
            domain: "example.com",
            recipient: "kim@example.com",
            command: Some(SmtpCommand::RcptTo),
            ..Default::default()
        });
        assert_eq!(v.kind, Kind::UserUnknown, "{diag}");
    }
}

/// Ipswitch IMail ("X-Mailer: <SMTP32 v8.22>"): "Invalid final delivery
/// userid: <address>" is its unknown user (Sisimai's Lhost::IMailServer
/// lists it under userunknown; flufl.bounce's heuristics find the address
/// after it), in a bounce text that shows no code.
#[test]
fn imails_invalid_final_delivery_userid_is_an_unknown_user() {
    let v = classify(&Clues {
        action: Some(Action::Failed),
        diagnostic: "Body of message generated response: Invalid final delivery userid: kim@example.com",
        domain: "example.com",
        recipient: "kim@example.com",
        source: Some(Source::Dsn),
        ..Default::default()
    });
    assert_eq!(v.kind, Kind::UserUnknown, "{v:?}");
    assert!(v.hard);
}
