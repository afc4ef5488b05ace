//! Issue 20, item 9: auto-watch read no new bounces while it checked slow
//! domains (3,000 black-holed ones: fifteen minutes; a new legitimate
//! domain stayed unwatched), and SIGTERM did not stop the daemon within
//! 120 s with 200 of them in flight.

use serde_json::Value;

use crate::{Behaviour, TestDns, get_json, post_bounces};

#[tokio::test(start_paused = true)]
async fn slow_checks_neither_hold_the_feed_nor_the_stop() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    dns.set(
        "fresh.example",
        Behaviour::mx(&[(10, "mx.fresh.example")], 300),
    );
    dns.set_many((0..200).map(|i| (format!("hole{i}.example"), Behaviour::Drop)));
    let started = tokio::time::Instant::now();
    let (app, base) = crate::api::app_with_api_and(&dns, "auto_watch: {}\n").await;
    let now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap();
    let holes: Vec<String> = (0..200)
        .map(|i| crate::unknown_user(&format!("kim@hole{i}.example"), now, "mx.hole.example"))
        .collect();
    post_bounces(&base, holes.join("\n")).await;
    // The black holes are being checked; a legitimate domain bounces.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let at = now + chrono::Duration::from_std(started.elapsed()).unwrap();
    post_bounces(
        &base,
        crate::unknown_user("ann@fresh.example", at, "mx.fresh.example"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let d: Value = get_json(format!("{base}/v1/domains/fresh.example")).await;
    assert!(d["auto_watched"]["since"].is_string(), "{d}");
    assert!(d["current"].is_object(), "not checked yet: {d}");
    // Stopping with checks of black holes in flight (the first checks and
    // then the scheduled ones, every minute) is prompt.
    tokio::time::sleep(std::time::Duration::from_secs(50)).await;
    let stopping = tokio::time::Instant::now();
    app.stop().await;
    let took = stopping.elapsed();
    assert!(
        took < std::time::Duration::from_secs(12),
        "stopped after {took:?}"
    );
}
