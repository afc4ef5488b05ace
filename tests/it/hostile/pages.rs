//! Issue 20, item 12, second half: `/v1/windows` answered every window in
//! one body (69k windows: 39 MB in 1.35 s) and `/v1/domains/{d}` loaded
//! every window of every domain per request. Both are paged.

use serde_json::Value;

use crate::cli::stderr;
use crate::{Behaviour, TestDns};

/// A DNSDB export of example.de: its usual MX from 2014 to 2020, and `n`
/// three-hour excursions to iCloud in between, each a window.
fn excursions(n: i64) -> String {
    let mut lines = vec![
        r#"{"time_first":1398000000,"time_last":1600000000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}"#.to_string(),
    ];
    for i in 0..n {
        let first = 1_400_000_000 + i * 864_000;
        lines.push(format!(
            r#"{{"time_first":{first},"time_last":{},"rrname":"example.de.","rrtype":"MX","rdata":["10 mx01.mail.icloud.com."]}}"#,
            first + 10_800
        ));
    }
    lines.join("\n")
}

/// The daemon's API over a database holding `n` windows of example.de.
async fn api_with_windows(dns: &TestDns, n: i64) -> (crate::App, String) {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    std::fs::write(dir.path().join("export.jsonl"), excursions(n)).unwrap();
    let out = crate::passive::import_dnsdb(dir.path(), "test.db", "export.jsonl");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{n} windows added")),
        "{}",
        stderr(&out)
    );
    let config = crate::write_config(
        &dir,
        &format!("{}domains: [example.de]\n", crate::base_yaml(dns)),
    );
    let app = crate::start(config, dir);
    let addr = app.daemon.as_ref().unwrap().api_addr.unwrap();
    (app, format!("http://{addr}"))
}

/// The next page's path, from `Link: <…>; rel="next"`.
fn next(r: &reqwest::Response) -> Option<String> {
    let link = r.headers().get("link")?.to_str().unwrap();
    let (target, rel) = link.split_once(';').unwrap();
    assert_eq!(rel.trim(), "rel=\"next\"");
    Some(target.trim().trim_matches(['<', '>']).to_string())
}

#[tokio::test(start_paused = true)]
async fn windows_come_in_pages() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let (app, base) = api_with_windows(&dns, 130).await;
    let http = mxwatch::http_client();

    // Fifty at a time, newest first, each once, by following the links.
    let mut path = Some("/v1/windows?limit=50".to_string());
    let (mut seen, mut pages) = (Vec::new(), 0);
    while let Some(p) = path {
        let r = http.get(format!("{base}{p}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        path = next(&r);
        let page: Vec<Value> = r.json().await.unwrap();
        assert!(page.len() <= 50);
        seen.extend(page.iter().map(|w| {
            (
                w["start"].as_str().unwrap().to_string(),
                w["id"].as_i64().unwrap(),
            )
        }));
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 130);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    sorted.dedup();
    assert_eq!(sorted.len(), 130, "a window twice");

    // A domain's page holds its newest hundred, and links to the rest.
    let r = http
        .get(format!("{base}/v1/domains/example.de"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rest = next(&r).expect("a link to the rest");
    assert!(rest.contains("domain=example.de"), "{rest}");
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["windows"].as_array().unwrap().len(), 100);
    let r = http.get(format!("{base}{rest}")).send().await.unwrap();
    assert!(next(&r).is_none());
    let more: Vec<Value> = r.json().await.unwrap();
    assert_eq!(more.len(), 30);

    // Bad pages are refused with the parameter named.
    for bad in ["limit=0", "limit=10001", "cursor=x", "domain=not..valid"] {
        let r = http
            .get(format!("{base}/v1/windows?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        let name = bad.split('=').next().unwrap();
        assert!(e["error"].as_str().unwrap().contains(name), "{e}");
    }
    app.stop().await;
}
