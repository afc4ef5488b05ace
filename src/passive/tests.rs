use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The usual MX since 2014, and iCloud for three hours last month.
pub(crate) fn icloud_for_three_hours() -> String {
    [
        r#"{"count":51234,"time_first":1398000000,"time_last":1764500000,"rrname":"example.de.","rrtype":"MX","bailiwick":"example.de.","rdata":["10 mx00.example.de.","20 mx01.example.de."]}"#,
        r#"{"count":12,"time_first":1761735600,"time_last":1761746400,"rrname":"example.de.","rrtype":"MX","bailiwick":"example.de.","rdata":["10 mx01.mail.icloud.com.","10 mx02.mail.icloud.com."]}"#,
        r#"{"count":300,"time_first":1398000000,"time_last":1764500000,"rrname":"example.de.","rrtype":"A","rdata":["192.0.2.1"]}"#,
    ]
    .join("\n")
}

#[test]
fn dnsdb_lines_become_sightings_and_an_excursion() {
    let r = read_dnsdb(&icloud_for_three_hours());
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(
        (r.sightings.len(), r.passed),
        (2, 1),
        "the A record is passed over"
    );
    let ex = excursions(&r.sightings);
    assert_eq!(ex.len(), 1);
    let e = &ex[0];
    assert_eq!(e.domain.as_str(), "example.de");
    assert_eq!(e.during[0].exchange.as_str(), "mx01.mail.icloud.com");
    assert_eq!(e.usual.len(), 2);
    assert_eq!(e.seen.0, t("2025-10-29T11:00:00Z"));
    assert_eq!(e.start, t("2025-10-29T10:00:00Z"), "an hour's margin");
    assert_eq!(e.end, t("2025-10-29T15:00:00Z"));
}

#[test]
fn dnsdb_v2_framing_and_zone_times() {
    let text = [
        r#"{"cond":"begin"}"#,
        r#"{"obj":{"count":5,"zone_time_first":1398000000,"zone_time_last":1764500000,"rrname":"example.de.","rrtype":"MX","rdata":"10 mx00.example.de."}}"#,
        r#"{"cond":"succeeded"}"#,
    ]
    .join("\n");
    let r = read_dnsdb(&text);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.sightings.len(), 1);
    let limited = read_dnsdb(r#"{"cond":"limited","msg":"Result limit reached"}"#);
    assert_eq!(limited.problems.len(), 1);
    assert!(limited.problems[0].1.contains("Result limit reached"));
}

#[test]
fn a_permanent_move_is_history_not_an_excursion() {
    let text = [
        r#"{"time_first":1398000000,"time_last":1700000000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}"#,
        r#"{"time_first":1700000100,"time_last":1764500000,"rrname":"example.de.","rrtype":"MX","rdata":["1 smtp.google.com."]}"#,
    ]
    .join("\n");
    assert_eq!(excursions(&read_dnsdb(&text).sightings), []);
}

#[test]
fn hostile_dnsdb_lines_are_problems_with_their_line() {
    let text = [
        "not json",
        r#"{"rrtype":"MX","rrname":"example.de.","rdata":["ten mx.example.de."],"time_first":1398000000,"time_last":1398000001}"#,
        r#"{"rrtype":"MX","rrname":"example.de.","rdata":["10 mx.example.de."],"time_first":-99999999999,"time_last":1}"#,
        r#"{"rrtype":"MX","rrname":"example.de.","rdata":["10 mx.example.de."],"time_first":1700000000,"time_last":1600000000}"#,
        r#"{"rrtype":"MX","rrname":"..","rdata":["10 mx.example.de."],"time_first":1700000000,"time_last":1700000001}"#,
        r#"{"rrtype":"MX","rrname":"example.de.","time_first":1700000000,"time_last":1700000001}"#,
        r#"[1,2,3]"#,
    ]
    .join("\n");
    let r = read_dnsdb(&text);
    assert!(r.sightings.is_empty());
    let lines: Vec<Option<usize>> = r.problems.iter().map(|p| p.0).collect();
    assert_eq!(
        lines,
        (1..=7).map(Some).collect::<Vec<_>>(),
        "{:?}",
        r.problems
    );
}

#[test]
fn securitytrails_days_are_whole_days() {
    let domain = DomainName::parse("example.de").unwrap();
    let text = r#"{"type":"mx/dns","pages":1,"records":[
        {"values":[{"host":"mx00.example.de","priority":10,"host_count":3}],"organizations":["Example"],"first_seen":"2014-04-20","last_seen":"2026-11-30"},
        {"values":[{"host":"mx01.mail.icloud.com","priority":10}],"organizations":["Apple Inc."],"first_seen":"2025-10-29","last_seen":"2025-10-29"}
    ]}"#;
    let r = read_securitytrails(text, &domain);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let ex = excursions(&r.sightings);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        ex[0].seen,
        (t("2025-10-29T00:00:00Z"), t("2025-10-29T23:59:59Z"))
    );
    assert_eq!(ex[0].start, t("2025-10-28T00:00:00Z"), "a day's margin");
    let bad = read_securitytrails(
        r#"{"records":[{"values":[{"priority":99999}],"first_seen":"x"}]}"#,
        &domain,
    );
    assert_eq!(bad.problems.len(), 1);
    assert!(
        read_securitytrails("{}", &domain).problems[0]
            .1
            .contains("records")
    );
}

/// Issue 19, item 5: an export listing the usual set once per period
/// (before and after a one-day iCloud period) shows the excursion, as one
/// spanning record does.
#[test]
fn periods_of_the_usual_set_are_merged_before_looking_for_excursions() {
    let domain = DomainName::parse("example.de").unwrap();
    let split = r#"{"type":"mx/dns","pages":1,"records":[
        {"values":[{"host":"mx00.example.de","priority":10}],"first_seen":"2014-04-20","last_seen":"2025-10-28"},
        {"values":[{"host":"mx01.mail.icloud.com","priority":10}],"first_seen":"2025-10-29","last_seen":"2025-10-29"},
        {"values":[{"host":"mx00.example.de","priority":10}],"first_seen":"2025-10-30","last_seen":"2026-11-30"}
    ]}"#;
    let r = read_securitytrails(split, &domain);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let ex = excursions(&r.sightings);
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(ex[0].during[0].exchange.as_str(), "mx01.mail.icloud.com");
    assert_eq!(ex[0].usual[0].exchange.as_str(), "mx00.example.de");
    // DNSDB alike (a sensor's record per period).
    let text = [
        r#"{"time_first":1398000000,"time_last":1761700000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}"#,
        r#"{"time_first":1761735600,"time_last":1761746400,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx01.mail.icloud.com."]}"#,
        r#"{"time_first":1761800000,"time_last":1764500000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}"#,
    ]
    .join("\n");
    assert_eq!(excursions(&read_dnsdb(&text).sightings).len(), 1);
    // Each period of the other set is its own excursion: two iCloud days a
    // month apart are two windows, not one of a month.
    let twice = r#"{"records":[
        {"values":[{"host":"mx00.example.de","priority":10}],"first_seen":"2014-04-20","last_seen":"2026-11-30"},
        {"values":[{"host":"mx01.mail.icloud.com","priority":10}],"first_seen":"2025-10-01","last_seen":"2025-10-01"},
        {"values":[{"host":"mx01.mail.icloud.com","priority":10}],"first_seen":"2025-11-01","last_seen":"2025-11-01"}
    ]}"#;
    let ex = excursions(&read_securitytrails(twice, &domain).sightings);
    let days: Vec<_> = ex.iter().map(|e| e.seen).collect();
    assert_eq!(
        days,
        [
            (t("2025-10-01T00:00:00Z"), t("2025-10-01T23:59:59Z")),
            (t("2025-11-01T00:00:00Z"), t("2025-11-01T23:59:59Z"))
        ]
    );
}

/// Merging periods makes a move away and back look like an excursion:
/// past [`MAX_EXCURSION`] it is history (the domain had moved), not a
/// window that would spare every unknown user of those years.
#[test]
fn years_elsewhere_between_two_periods_are_history_not_an_excursion() {
    let domain = DomainName::parse("example.de").unwrap();
    let text = r#"{"records":[
        {"values":[{"host":"mx00.example.de","priority":10}],"first_seen":"2014-04-20","last_seen":"2019-12-31"},
        {"values":[{"host":"aspmx.l.google.com","priority":1}],"first_seen":"2020-01-01","last_seen":"2023-06-30"},
        {"values":[{"host":"mx00.example.de","priority":10}],"first_seen":"2023-07-01","last_seen":"2026-11-30"}
    ]}"#;
    assert_eq!(
        excursions(&read_securitytrails(text, &domain).sightings),
        []
    );
    // Seven days is still an excursion; eight is not.
    for (last, n) in [("2025-10-07", 1), ("2025-10-08", 0)] {
        let text = format!(
            r#"{{"records":[
            {{"values":[{{"host":"mx00.example.de","priority":10}}],"first_seen":"2014-04-20","last_seen":"2026-11-30"}},
            {{"values":[{{"host":"mx01.mail.icloud.com","priority":10}}],"first_seen":"2025-10-01","last_seen":"{last}"}}
        ]}}"#
        );
        assert_eq!(
            excursions(&read_securitytrails(&text, &domain).sightings).len(),
            n,
            "{last}"
        );
    }
}
