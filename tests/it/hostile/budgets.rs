//! Issue 20, items 3 to 6: no single request decides our memory, disk or
//! CPU.

use crate::{Behaviour, TestDns, post_bounces};

/// Asserts that a parse noted a problem saying `words`.
fn assert_noted(parsed: &mxwatch::bounce::parse::Parsed, words: &str) {
    assert!(
        parsed.problems.iter().any(|p| p.message.contains(words)),
        "{words:?} not in {:?}",
        parsed.problems
    );
}

/// A plain-text bounce naming `n` recipients on one line, then one reply.
fn one_line_of(n: usize) -> String {
    let who: Vec<String> = (0..n).map(|i| format!("<u{i}@a.test>")).collect();
    format!(
        "From: MAILER-DAEMON@mx.a.test\nTo: s@example.org\nSubject: Undelivered Mail Returned to Sender\n\n{}: 550 5.1.1 user unknown\n",
        who.join(" ")
    )
}

/// Item 3: each of 8,000 recipients carried the whole 118 KB line as its
/// diagnostic (947 MB, 15 s). A diagnostic is capped, keeping its head and
/// the reply at its tail.
#[test]
fn many_recipients_on_one_line_carry_a_capped_diagnostic() {
    let email = one_line_of(8_000);
    let parsed = mxwatch::bounce::parse::parse(email.as_bytes(), None, super::t0());
    assert_eq!(parsed.bounces.len(), 8_000, "{:?}", parsed.problems);
    let total: usize = parsed
        .bounces
        .iter()
        .map(|b| b.diagnostic.as_deref().map_or(0, str::len))
        .sum();
    for b in &parsed.bounces {
        let d = b.diagnostic.as_deref().unwrap();
        assert!(
            d.len() <= mxwatch::bounce::MAX_DIAGNOSTIC + 8,
            "{}",
            d.len()
        );
        assert!(d.ends_with("550 5.1.1 user unknown"), "{d}");
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert!(b.hard);
    }
    assert!(total <= 8_000 * (mxwatch::bounce::MAX_DIAGNOSTIC + 8));
}

/// An email naming more recipients than any message has is read for the
/// first [`mxwatch::bounce::MAX_RECIPIENTS`], and says so.
#[test]
fn an_email_is_read_for_a_bounded_number_of_recipients() {
    let n = mxwatch::bounce::MAX_RECIPIENTS + 500;
    let email = one_line_of(n);
    let parsed = mxwatch::bounce::parse::parse(email.as_bytes(), None, super::t0());
    assert_eq!(parsed.bounces.len(), mxwatch::bounce::MAX_RECIPIENTS);
    assert_noted(&parsed, "only the first");
}

/// Item 3, stored: a 59 KB email added 464 MB of database and 467 MB of
/// WAL. The words all its recipients share are stored once.
#[tokio::test(start_paused = true)]
async fn the_words_many_bounces_share_are_stored_once() {
    let dns = TestDns::start().await;
    dns.set("a.test", Behaviour::mx(&[(10, "mx.a.test")], 300));
    let (app, base) = crate::api::app_with_api_and(&dns, "").await;
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let db = app.db_path();
    let wal = db.with_extension("sqlite-wal");
    let before = size(&db) + size(&wal);
    let email = one_line_of(4_000);
    let answer = post_bounces(&base, email.clone()).await;
    assert_eq!(answer["stored"], 4_000, "{answer}");
    let grown = size(&db) + size(&wal) - before;
    // About a row per recipient; the old code stored the line each time.
    assert!(grown < 8 * 1024 * 1024, "grew by {grown} bytes");
    let stored = app.store().bounces(Some("a.test"), None, None).unwrap();
    assert_eq!(stored.len(), 4_000);
    assert!(stored.iter().all(|b| {
        b.diagnostic
            .as_deref()
            .unwrap()
            .ends_with("550 5.1.1 user unknown")
    }));
    app.stop().await;
}

/// Sends a request head for `path` declaring a `length`-byte body, and
/// `first` bytes of it; the connection stays open.
async fn declare_body(
    addr: &str,
    path: &str,
    length: usize,
    first: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {length}\r\n\r\n",
        crate::TOKEN
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    s
}

/// The response head a connection gets, lower-cased (empty when none
/// comes within a minute).
async fn response_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let read = async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(60), read).await;
    String::from_utf8_lossy(&got).to_lowercase()
}

/// Item 5: forty unauthenticated 15 MB `/v1/verdicts` bodies took 1.18 GB.
/// Bodies being read and parsed share one memory budget; a body that does
/// not fit is refused at once (503, `Retry-After`), and a bounce handler's
/// small question is never refused for it.
#[tokio::test(start_paused = true)]
async fn request_bodies_share_one_memory_budget() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    // 64 MiB: one 16 MiB body, charged four times its size.
    let (app, base) = crate::api::app_with_api_and(&dns, "api_body_memory_mib: 64\n").await;
    let addr = base.trim_start_matches("http://").to_string();
    let big = 16 << 20;
    // A stranger's 16 MiB body, sent slowly, holds the whole budget.
    let held = declare_body(&addr, "/v1/verdicts", big, b"[").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Another is refused at once, before its body is read.
    let mut refused = declare_body(&addr, "/v1/verdicts", big, b"[").await;
    let head = response_head(&mut refused).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 5"), "{head}");
    let mut bounces = declare_body(&addr, "/v1/bounces", big, b"x").await;
    assert!(
        response_head(&mut bounces)
            .await
            .starts_with("http/1.1 503")
    );
    // The bounce handler's question is answered meanwhile.
    let r = mxwatch::http_client()
        .post(format!("{base}/v1/verdicts"))
        .body(r#"[{"recipient": "kim@example.de", "status": "5.1.1"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    crate::assert_metrics(&base, &["mxwatch_http_shed_total{reason=\"memory\"} 2"]).await;
    // Once the stranger is gone, a large body fits again.
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut body = vec![b' '; 2 << 20];
    body.extend_from_slice(b"[]");
    let r = mxwatch::http_client()
        .post(format!("{base}/v1/verdicts"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// A connection from `source` (a loopback address) that sends a request
/// head a byte every half second, for at most a minute.
fn slow_head(
    source: std::net::Ipv4Addr,
    addr: std::net::SocketAddr,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let Ok(mut s) = socket.connect(addr).await else {
            return;
        };
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let t = tokio::time::Instant::now();
        for b in head.iter().cycle() {
            if s.write_all(&[*b]).await.is_err() || t.elapsed().as_secs() > 60 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
}

/// How long a bounce handler's verdict question takes to be answered.
async fn question_time(base: &str) -> std::time::Duration {
    let started = tokio::time::Instant::now();
    let r = mxwatch::http_client()
        .get(format!(
            "{base}/v1/verdict?recipient=kim@example.de&status=5.1.1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    started.elapsed()
}

/// Item 6: 1,500 slow-header connections made 4 of 5 legitimate requests
/// time out. One address now holds at most its share of the connections,
/// and when the API is full the connections doing nothing are shed before
/// the question waiting behind them.
#[tokio::test(start_paused = true)]
async fn slow_connections_are_shed_before_a_bounce_handlers_question() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let (app, base) = crate::api::app_with_api_and(
        &dns,
        "api_max_connections: 16\napi_max_connections_per_peer: 4\n",
    )
    .await;
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    // One stranger opens a hundred.
    let one: Vec<_> = (0..100)
        .map(|_| slow_head(std::net::Ipv4Addr::new(127, 0, 0, 2), addr))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let took = question_time(&base).await;
    assert!(
        took < std::time::Duration::from_secs(1),
        "answered after {took:?}"
    );
    // Sixteen strangers, one connection each, fill the API.
    let many: Vec<_> = (0..16)
        .map(|i| slow_head(std::net::Ipv4Addr::new(127, 0, 1, 10 + i), addr))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let took = question_time(&base).await;
    assert!(
        took < std::time::Duration::from_secs(3),
        "answered after {took:?}"
    );
    for t in one.into_iter().chain(many) {
        t.abort();
    }
    crate::assert_metrics(
        &base,
        &[
            "mxwatch_http_shed_total{reason=\"peer\"}",
            "mxwatch_http_shed_total{reason=\"idle\"}",
        ],
    )
    .await;
    app.stop().await;
}

/// Item 4: 16 MiB of nested `message/rfc822` peaked at 774 MB for one
/// request (330,000 nested multiparts: 800 MB). An email is read for its
/// first thousand MIME parts, which is where a bounce says what it says;
/// the cut is reported. (Memory: BENCHMARKS.md, "Attack shapes".)
#[test]
fn an_email_is_read_for_a_bounded_number_of_parts() {
    let unit = "Content-Type: message/rfc822\n\nFrom: a@b.test\n";
    let nested = format!(
        "From: MAILER-DAEMON@a.test\nSubject: nested\n{}\nhello\n",
        unit.repeat((16 << 20) / unit.len() - 10)
    );
    let parsed = mxwatch::bounce::parse::parse(nested.as_bytes(), None, super::t0());
    assert_noted(&parsed, "MIME parts");
    // A bounce with thousands of empty parts after its words still names
    // its recipient.
    let report = format!(
        "From: MAILER-DAEMON@mx.a.test\nTo: s@example.org\nSubject: Undelivered Mail Returned to Sender\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n<kim@a.test>: host mx.a.test[192.0.2.1] said: 550 5.1.1 user unknown (in reply to RCPT TO command)\n\n{}--b--\n",
        "--b\n\nx\n".repeat(5_000)
    );
    let parsed = mxwatch::bounce::parse::parse(report.as_bytes(), None, super::t0());
    let who: Vec<&str> = parsed
        .bounces
        .iter()
        .map(|b| b.recipient.as_str())
        .collect();
    assert_eq!(who, ["kim@a.test"], "{:?}", parsed.problems);
    assert!(parsed.bounces[0].hard);
}
