use super::*;

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, Path::new("/etc/mxwatch/watchlist.yaml"))
}

#[test]
fn defaults_are_sensible() {
    let c = parse("domains: [example.com]").unwrap();
    assert_eq!(c.upstreams, vec![Upstream::System]);
    assert_eq!(c.schedule.as_str(), "*/5 * * * *");
    assert_eq!(c.database, PathBuf::from("/etc/mxwatch/mxwatch.db"));
    assert_eq!(c.settle, Duration::from_secs(72 * 3600));
    assert_eq!(c.domains[0].name.as_str(), "example.com");
}

#[test]
fn full_domain_entries() {
    let c = parse(
        "upstreams: [system, 127.0.0.1:5353, authoritative, '::1']\n\
         domains:\n  - name: Web.DE.\n    schedule: '*/1 * * * *'\n    tags: [de]\n    expect: [united-internet]\n  - gmx.net\n",
    )
    .unwrap();
    assert_eq!(
        c.upstreams[1],
        Upstream::Recursive("127.0.0.1:5353".parse().unwrap())
    );
    assert_eq!(
        c.upstreams[3],
        Upstream::Recursive("[::1]:53".parse().unwrap())
    );
    assert_eq!(c.domains[0].name.as_str(), "web.de");
    assert_eq!(c.domains[0].expect, vec!["united-internet"]);
    assert_eq!(c.domains[1].name.as_str(), "gmx.net");
}

#[test]
fn errors_carry_line_column_and_field_path() {
    let e = parse("domains:\n  - example.com\n  - name: bad..name\n").unwrap_err();
    let shown = e.to_string();
    assert_eq!(e.line, Some(3), "{shown}");
    assert!(shown.contains("domains[1]"), "{shown}");
    assert!(shown.contains("empty label"), "{shown}");

    let e = parse("schedule: '61 * * * *'\n").unwrap_err();
    assert_eq!(e.field, "schedule");
    assert_eq!(e.line, Some(1));

    let e = parse("timeout: soon\n").unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");

    let e = parse("upstreams: [dns.google]\n").unwrap_err();
    assert!(e.to_string().contains("unknown upstream"), "{e}");

    let e = parse("domain: [example.com]\n").unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn whole_file_checks() {
    let e = parse("domains: [a.com, A.com.]").unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    let e = parse("domains: [{name: a.com, expect: [gogle]}]").unwrap_err();
    assert_eq!(e.field, "domains[0].expect[0]");
    let e = parse("concurrency: 0").unwrap_err();
    assert_eq!(e.field, "concurrency");
}

#[test]
fn bounce_times_default_to_thirty_days_back_and_one_ahead() {
    let c = parse("domains: []\n").unwrap();
    assert_eq!(c.bounce_times, crate::bounce::TimeRange::default());
    assert_eq!(c.bounce_times.max_age, Duration::from_secs(30 * 86_400));
    let c = parse("bounce_times: {max_age: 7d, max_ahead: 2h}\ndomains: []\n").unwrap();
    assert_eq!(c.bounce_times.max_age, Duration::from_secs(7 * 86_400));
    assert_eq!(c.bounce_times.max_ahead, Duration::from_secs(7200));
    let e = parse("bounce_times: {max_age: soon}\n").unwrap_err();
    assert_eq!(e.field, "bounce_times.max_age");
}

#[test]
fn alert_targets_and_anomaly_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    let cfg = dir.path().join("w.yaml");
    std::fs::write(
        &cfg,
        "anomaly: {window: 10m, baseline: 2d, factor: 5, min_bounces: 8, min_recipients: 4}\n\
         digest: '0 8 * * *'\nlog_level: 'mxwatch=debug'\n\
         alerts:\n  - name: ops\n    url: https://hooks.example.com/x\n    secret_file: secret\n\
         \x20   events: [window_opened, reinstatements]\n    min_severity: warning\n    max_age: 1h\n\
         \x20 - name: chat\n    url: http://127.0.0.1:9/slack\n    format: mattermost\n\
         domains: [example.com]\n",
    )
    .unwrap();
    let c = Config::load(&cfg).unwrap();
    assert_eq!(c.anomaly.window, Duration::from_secs(600));
    assert_eq!((c.anomaly.min_bounces, c.anomaly.min_recipients), (8, 4));
    assert_eq!(c.alerts.len(), 2);
    assert_eq!(
        c.alerts[0].secret,
        Some(crate::alerts::Secret::new("s3cret".into()))
    );
    assert_eq!(c.alerts[0].max_age, Duration::from_secs(3600));
    assert_eq!(c.alerts[0].backoff, Duration::from_secs(30));
    assert_eq!(c.alerts[1].format, crate::alerts::BodyFormat::Slack);
    assert!(c.digest.is_some());
    // The secret never shows, even in the config's debug print.
    assert!(!format!("{c:?}").contains("s3cret"));

    for (yaml, field, words) in [
        (
            "alerts: [{name: a, url: 'ftp://x'}]",
            "alerts[0].url",
            "scheme",
        ),
        (
            "alerts: [{name: a, url: 'not a url'}]",
            "alerts[0].url",
            "not a URL",
        ),
        (
            "alerts: [{name: a, url: 'http://x', events: [boom]}]",
            "alerts[0].events[0]",
            "unknown event",
        ),
        (
            "alerts: [{name: a, url: 'http://x', min_severity: loud}]",
            "alerts[0].min_severity",
            "loud",
        ),
        (
            "alerts: [{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]",
            "alerts[1].name",
            "twice",
        ),
        (
            "alerts: [{name: a, url: 'http://x', format: xml}]",
            "alerts[0].format",
            "xml",
        ),
        (
            "anomaly: {window: 1h, baseline: 30m}",
            "anomaly.baseline",
            "longer",
        ),
        ("anomaly: {factor: 0.5}", "anomaly.factor", "at least 1"),
        // Issue 20, item 10: passed `config check`, then panicked the
        // scheduler and `run --once`. Every duration is bounded.
        (
            "fast_recheck: 500000000000y",
            "fast_recheck",
            "longer than any setting may be",
        ),
        ("timeout: 500000000000y", "timeout", "at most 36525d"),
        (
            "anomaly: {max_duration: 101y}",
            "anomaly.max_duration",
            "longer than any",
        ),
        (
            "auto_watch: {keep: 500000000000y}",
            "auto_watch.keep",
            "longer than any",
        ),
        ("log_level: 'mxwatch=[bad'", "log_level", "bad"),
        (
            "api_body_memory_mib: 16",
            "api_body_memory_mib",
            "must be between 64",
        ),
    ] {
        let e = parse(yaml).unwrap_err();
        assert_eq!(e.field, field, "{yaml}: {e}");
        assert!(e.to_string().contains(words), "{yaml}: {e}");
    }
}

#[test]
fn domains_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("domains.txt"),
        "# recipients\nexample.org\nEXAMPLE.org.\n\nexample.net # comment\n",
    )
    .unwrap();
    let cfg = dir.path().join("w.yaml");
    std::fs::write(&cfg, "domains: [example.net]\ndomains_file: domains.txt\n").unwrap();
    let c = Config::load(&cfg).unwrap();
    let names: Vec<_> = c.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["example.net", "example.org"]);
    assert_eq!(c.duplicates_merged, 2);

    std::fs::write(dir.path().join("domains.txt"), "ok.com\nnot a domain\n").unwrap();
    let e = Config::load(&cfg).unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(e.file.ends_with("domains.txt"));
}

#[test]
fn every_error_names_the_line_of_its_field() {
    let text = "database: x.db\n# a comment\n\nschedule: '*/5 * * * *'\nanomaly:\n  window: 10m\n  factor: 0.5\n\
                alerts:\n  - name: a\n    url: 'http://x'\n  - name: b\n    url: 'ftp://y'\n\
                fast_recheck: 1x\ndomains:\n  - a.example\n  - name: b.example\n    schedule: 'nope'\n";
    assert_eq!(locate(text, "fast_recheck"), Some((13, 1)));
    assert_eq!(locate(text, "anomaly.factor"), Some((7, 3)));
    assert_eq!(locate(text, "alerts[1].url"), Some((12, 5)));
    assert_eq!(locate(text, "alerts[1]"), Some((11, 3)));
    assert_eq!(locate(text, "domains[1].schedule"), Some((17, 5)));
    assert_eq!(locate(text, "domains[0]"), Some((15, 3)));
    assert_eq!(locate(text, "nothing.here"), None);
    // Flow style: the key is as close as it gets.
    assert_eq!(
        locate("anomaly: {factor: 0.5}\n", "anomaly.factor"),
        Some((1, 1))
    );
    assert_eq!(locate("domains: [a, b]\n", "domains[1]"), Some((1, 1)));

    // A bad value of a top-level key is reported at its own line...
    let e = Config::from_yaml(
        "database: x.db\n\n\nfast_recheck: 1x\ndomains: [a.example]\n",
        Path::new("w.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (Some(4), Some(1), "fast_recheck")
    );
    // ...and so is a check made after parsing.
    let e = Config::from_yaml(
        "domains: [a.example]\nconcurrency: 0\n",
        Path::new("w.yaml"),
    )
    .unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (Some(2), "concurrency"));
    assert!(
        e.to_string().starts_with("w.yaml:2:1: concurrency: "),
        "{e}"
    );
}

#[test]
fn a_missing_secret_stops_only_run() {
    let c = parse(
        "domains: [a.example]\napi_token_file: /nonexistent/token\n\
         alerts:\n  - name: a\n    url: 'http://x'\n    secret_env: MXWATCH_TEST_UNSET_VAR\n",
    )
    .expect("the other commands work without secrets");
    let problems: Vec<String> = c.secret_problems.iter().map(|e| e.to_string()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains(
            ":6:5: alerts[0].secret_env: environment variable MXWATCH_TEST_UNSET_VAR is not set"
        ),
        "{problems:?}"
    );
    assert!(
        problems[1].contains(":2:1: api_token_file: cannot read /nonexistent/token"),
        "{problems:?}"
    );
    let e = c.require_secrets().unwrap_err();
    assert_eq!(e.field, "alerts[0].secret_env");
    assert!(
        parse("domains: [a.example]")
            .unwrap()
            .require_secrets()
            .is_ok()
    );
}

#[test]
fn passive_dns_providers_are_checked() {
    let ok = parse(
        "domains: [example.com]\npassive_dns:\n  - provider: securitytrails\n    key_env: MXWATCH_NO_SUCH_VAR_FOR_TESTS\n",
    )
    .unwrap();
    assert!(
        ok.passive_dns.is_empty(),
        "a provider without its key is left out"
    );
    assert!(
        ok.secret_problems
            .iter()
            .any(|p| p.field == "passive_dns[0].key_env"),
        "{:?}",
        ok.secret_problems
    );
    for (yaml, field, words) in [
        (
            "  - provider: farsight\n    key_env: X\n",
            "passive_dns[0].provider",
            "unknown passive source",
        ),
        (
            "  - provider: dnsdb\n",
            "passive_dns[0].key_env",
            "key_env or key_file",
        ),
        (
            "  - provider: dnsdb\n    key_env: X\n    key_file: k\n",
            "passive_dns[0].key_env",
            "not both",
        ),
        (
            "  - provider: dnsdb\n    key_env: X\n    base_url: 'ftp://x'\n",
            "passive_dns[0].base_url",
            "http(s) URL",
        ),
    ] {
        let e = parse(&format!("domains: [example.com]\npassive_dns:\n{yaml}")).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(words), "{e}");
    }
}

#[test]
fn forward_targets_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lm.token"), "s3cret\n").unwrap();
    let path = dir.path().join("watchlist.yaml");
    let load = |yaml: &str| Config::from_yaml(yaml, &path);
    let c = load(
        "forward:\n  - name: listmonk\n    url: http://127.0.0.1:9000/webhooks/bounce\n    format: listmonk\n    \
         user: mxwatch\n    password_file: lm.token\n    transient: hold\n  - name: raw\n    \
         url: http://127.0.0.1:9000/webhooks/service/ses\n    format: passthrough\n    sources: [ses]\n",
    )
    .unwrap();
    assert_eq!(c.forward.len(), 2);
    let lm = &c.forward[0];
    assert_eq!(lm.format, crate::forward::Format::Listmonk);
    assert_eq!(lm.transient, crate::forward::OnTransient::Hold);
    assert_eq!(lm.ignore, crate::forward::OnIgnore::Unchanged);
    assert!(
        matches!(&lm.auth, crate::forward::Auth::Basic { user, password } if user == "mxwatch" && password.expose() == "s3cret")
    );
    assert_eq!(lm.max_age, Duration::from_secs(72 * 3600));
    assert_eq!(c.forwarding().wants(), (true, true));

    let head = "forward:\n  - name: t\n    url: http://127.0.0.1:9/\n";
    for (yaml, line, words) in [
        (
            "forward:\n  - name: t\n    url: http://127.0.0.1:9/\n    format: xml\n",
            4,
            "listmonk, passthrough, json",
        ),
        (
            "forward:\n  - name: t\n    url: ftp://x/\n    format: json\n",
            3,
            "http(s)",
        ),
        (
            &format!("{head}    format: passthrough\n"),
            4,
            "name the receivers",
        ),
        (
            &format!("{head}    format: passthrough\n    sources: [ses, smtp]\n"),
            5,
            "unknown receiver \"smtp\"",
        ),
        (
            &format!("{head}    format: json\n    sources: [ses, smtp]\n"),
            5,
            "unknown source \"smtp\"",
        ),
        (
            &format!("{head}    format: json\n    password_file: lm.token\n"),
            5,
            "needs a user",
        ),
        (
            &format!("{head}    format: json\n    user: u\n"),
            5,
            "password_env or password_file",
        ),
        (
            &format!(
                "{head}    format: json\n    user: u\n    password_file: lm.token\n    bearer_file: lm.token\n"
            ),
            7,
            "one way to authenticate",
        ),
        (
            &format!(
                "{head}    format: json\n    header: 'bad header'\n    header_value_file: lm.token\n"
            ),
            5,
            "not a header name",
        ),
        (
            &format!("{head}    format: json\n    transient: maybe\n"),
            5,
            "soft, hold",
        ),
        (
            &format!("{head}    format: json\n    ignore: later\n"),
            5,
            "unchanged, drop",
        ),
        (
            &format!("{head}    format: json\n    timeout: 0s\n"),
            5,
            "timeout",
        ),
        (
            &format!(
                "{head}    format: json\n  - name: t\n    url: http://127.0.0.1:9/\n    format: json\n"
            ),
            5,
            "used twice",
        ),
        (
            "alerts:\n  - name: 'forward:x'\n    url: http://127.0.0.1:9/\n",
            2,
            "kept for forward targets",
        ),
    ] {
        let e = load(yaml).unwrap_err();
        assert!(e.to_string().contains(words), "{yaml}: {e}");
        assert_eq!(e.line, Some(line), "{yaml}: {e}");
    }
    // A secret that cannot be read stops only `run`, and says where.
    let c = load(&format!(
        "{head}    format: json\n    bearer_env: MXWATCH_TEST_UNSET_FORWARD\n"
    ))
    .unwrap();
    let e = c.require_secrets().unwrap_err();
    assert!(e.to_string().contains("forward[0].bearer_env"), "{e}");
}

#[test]
fn undo_targets_are_safe_until_said_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), "key-1\n").unwrap();
    let path = dir.path().join("watchlist.yaml");
    let load = |yaml: &str| Config::from_yaml(yaml, &path);
    let c = load("undo:\n  - name: sg\n    provider: sendgrid\n    api_key_file: k\n").unwrap();
    let t = &c.undo[0];
    assert!(!t.enabled && t.dry_run, "off and dry-run by default");
    assert_eq!(t.max_per_hour, 1000);
    assert_eq!(t.base_url, "https://api.sendgrid.com");
    let c = load(
        "undo:\n  - name: ses\n    provider: ses\n    region: eu-west-1\n    access_key_id_file: k\n    secret_access_key_file: k\n",
    )
    .unwrap();
    assert_eq!(c.undo[0].base_url, "https://email.eu-west-1.amazonaws.com");
    assert_eq!(
        format!("{:?}", c.undo[0].credentials)
            .matches("key-1")
            .count(),
        0,
        "secrets never print"
    );

    let head = "undo:\n  - name: t\n";
    for (yaml, line, words) in [
        (
            format!("{head}    provider: smtp\n"),
            3,
            "ses, sendgrid, mailgun, postmark, listmonk",
        ),
        (
            format!("{head}    provider: sendgrid\n"),
            3,
            "api_key_env or api_key_file",
        ),
        (
            format!(
                "{head}    provider: ses\n    access_key_id_file: k\n    secret_access_key_file: k\n"
            ),
            3,
            "needs its region",
        ),
        (
            format!("{head}    provider: mailgun\n    api_key_file: k\n"),
            3,
            "needs domain",
        ),
        (
            format!("{head}    provider: listmonk\n    api_key_file: k\n    user: u\n"),
            3,
            "needs base_url",
        ),
        (
            format!("{head}    provider: sendgrid\n    api_key_file: k\n    region: eu-west-1\n"),
            5,
            "takes no region",
        ),
        (
            format!("{head}    provider: postmark\n    api_key_file: k\n    domain: x\n"),
            5,
            "takes no domain",
        ),
        (
            format!("{head}    provider: sendgrid\n    api_key_file: k\n    max_per_hour: 0\n"),
            5,
            "at least 1",
        ),
        (
            format!("{head}    provider: sendgrid\n    api_key_file: k\n    base_url: ftp://x\n"),
            5,
            "http(s)",
        ),
        (
            "alerts:\n  - name: 'undo:x'\n    url: http://127.0.0.1:9/\n".to_string(),
            2,
            "kept for undo targets",
        ),
    ] {
        let e = load(&yaml).unwrap_err();
        assert!(e.to_string().contains(words), "{yaml}: {e}");
        assert_eq!(e.line, Some(line), "{yaml}: {e}");
    }
    let c = load(&format!(
        "{head}    provider: sendgrid\n    api_key_env: MXWATCH_TEST_UNSET_UNDO\n"
    ))
    .unwrap();
    let e = c.require_secrets().unwrap_err();
    assert!(e.to_string().contains("undo[0].api_key_env"), "{e}");
}

/// A key given twice, and a tab in the indentation, are named at their own
/// line, not at the enclosing map's (issue 23).
#[test]
fn duplicate_keys_and_tabs_are_named_at_their_line() {
    for (yaml, line, column, words) in [
        (
            "timeout: 5s\nschedule: '*/5 * * * *'\ntimeout: 6s\ndomains: [example.com]\n",
            3,
            1,
            "duplicate field `timeout`",
        ),
        (
            "alerts:\n  - name: a\n    url: http://x/\n    name: b\ndomains: [example.com]\n",
            4,
            5,
            "duplicate field `name`",
        ),
        (
            "anomaly:\n  window: 30m\n  factor: 3\n  window: 1h\n",
            4,
            3,
            "duplicate field `window`",
        ),
        (
            "timeout: 5s\ndomains:\n\t- example.com\n",
            3,
            1,
            "a tab in the indentation",
        ),
    ] {
        let e = parse(yaml).unwrap_err();
        assert!(e.to_string().contains(words), "{yaml}: {e}");
        assert_eq!(
            (e.line, e.column),
            (Some(line), Some(column)),
            "{yaml}: {e}"
        );
    }
}
