//! The daemon as a process: `kill -9` mid-ingest, restart, SIGHUP reload.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::TOKEN;
use crate::alerts::post_burst_at;

/// Sends a signal with kill(1).
pub fn send(signal: &str, pid: &str) {
    assert!(
        Command::new("kill")
            .args([signal, pid])
            .status()
            .unwrap()
            .success()
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start(dir: &std::path::Path) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(dir)
            .args(["run"])
            .env_remove("MXWATCH_CONFIG")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// A daemon process that is killed when the test lets go of it, failed
/// assertions included: a daemon left running holds the test's output
/// pipe open, and the test run never ends.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub async fn wait_healthy(base: &str) {
    let http = mxwatch::http_client();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the daemon did not come up");
}

pub fn watchlist(dir: &std::path::Path, port: u16, hook: &str, domains: &str) {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.join("watchlist.yaml"),
        format!(
            "database: mxwatch.db\nschedule: '0 0 1 1 *'\nupstreams: ['127.0.0.1:9']\n\
             listen: '127.0.0.1:{port}'\napi_token_file: token\n\
             alerts:\n- name: ops\n  url: '{hook}'\n  backoff: 50ms\n\
             domains: [{domains}]\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_loses_no_acknowledged_bounce_and_no_event() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&receiver)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    watchlist(
        dir.path(),
        port,
        &format!("{}/hook", receiver.uri()),
        "example.de",
    );
    let mut child = start(dir.path());
    wait_healthy(&base).await;

    // Events in the outbox, the receiver down: delivery attempts fail.
    post_burst_at(&base, chrono::Utc::now() - chrono::Duration::minutes(30)).await;
    for _ in 0..200 {
        if !receiver.received_requests().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!receiver.received_requests().await.unwrap().is_empty());

    // Bounces stream in, one per request; the process is killed mid-stream.
    let feeder = {
        let base = base.clone();
        tokio::spawn(async move {
            let http = mxwatch::http_client();
            let mut acked = Vec::new();
            for i in 0.. {
                let who = format!("stream{i}@example.net");
                let body = format!(
                    "{{\"email\":\"{who}\",\"event\":\"bounce\",\"status\":\"5.1.1\",\"reason\":\"550 5.1.1 no such user\",\"timestamp\":{}}}",
                    1619434800 + i
                );
                match http
                    .post(format!("{base}/v1/bounces"))
                    .bearer_auth(TOKEN)
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => acked.push(who),
                    _ => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = feeder.await.unwrap();
    assert!(
        acked.len() > 5,
        "only {} bounces acknowledged before the kill",
        acked.len()
    );

    // The receiver comes back; the daemon restarts on the same database.
    receiver.reset().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let mut child = start(dir.path());
    wait_healthy(&base).await;
    let store = mxwatch::store::Store::open(&dir.path().join("mxwatch.db")).unwrap();
    let stored: std::collections::HashSet<String> = store
        .bounces(Some("example.net"), None, None)
        .unwrap()
        .into_iter()
        .map(|b| b.recipient)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // Every committed alert event reaches the receiver after the restart.
    let events: Vec<String> = store
        .outbox()
        .unwrap()
        .iter()
        .filter(|o| o.event.is_alert())
        .map(|o| format!("mxwatch-{}", o.id))
        .collect();
    assert!(events.len() >= 2, "{events:?}");
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen = receiver
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.headers["x-mxwatch-id"].to_str().unwrap().to_string())
            .collect();
        if events.iter().all(|e| seen.contains(e)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        events.iter().all(|e| seen.contains(e)),
        "{events:?} not all in {seen:?}"
    );
    send("-TERM", &child.id().to_string());
    assert!(child.wait().unwrap().success());
}

/// SIGHUP applies what can change in place and says so by name; what
/// takes a restart (`listen`) is named and left; a broken watchlist is
/// refused; a new `log_level` takes effect at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_what_it_can_names_the_rest_and_keeps_the_old_watchlist_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hook = "http://127.0.0.1:9/hook";
    watchlist(dir.path(), port, hook, "example.de");
    // The level comes from the watchlist, not RUST_LOG, so a reload can change it.
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(dir.path())
            .args(["run"])
            .env_remove("MXWATCH_CONFIG")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    wait_healthy(&base).await;
    let pid = child.id().to_string();
    let rewrite = |prefix: &str, domains: &str| {
        watchlist(dir.path(), port, hook, domains);
        let yaml = std::fs::read_to_string(dir.path().join("watchlist.yaml")).unwrap();
        std::fs::write(dir.path().join("watchlist.yaml"), format!("{prefix}{yaml}")).unwrap();
    };
    let hup = || async {
        send("-HUP", &pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    rewrite("", "example.de, example.org");
    hup().await;
    // Upstreams and timeout apply in place; another listener takes a restart.
    rewrite(
        "timeout: 3s
concurrency: 8
",
        "example.de, example.org",
    );
    let yaml = std::fs::read_to_string(dir.path().join("watchlist.yaml")).unwrap();
    let other = free_port();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        yaml.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{other}")),
    )
    .unwrap();
    hup().await;
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        "domains: [not a domain!!]\n",
    )
    .unwrap();
    hup().await;
    // Still serving on the old configuration, on the old listener.
    wait_healthy(&base).await;
    rewrite("log_level: warn\n", "example.de");
    hup().await;
    send("-TERM", &pid);
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    let text = log.join("\n");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes off a terminal: {text}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("SIGHUP: applied domains") && l.contains("domains=2")),
        "{text}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("SIGHUP: applied timeout, concurrency")),
        "{text}"
    );
    assert!(text.contains("the new watchlist is refused"), "{text}");
    assert!(
        text.contains("SIGHUP: listen changed but takes a restart"),
        "{text}"
    );
    assert_eq!(
        text.matches("a restart").count(),
        1,
        "only the listener needs one: {text}"
    );
    assert!(
        !text.contains("reloaded"),
        "nothing is called reloaded: {text}"
    );
    assert!(
        text.contains("watchlist.yaml"),
        "the refusal names the file: {text}"
    );
    // At `warn`, the INFO lines of the stop are no longer written.
    assert!(!text.contains("SIGTERM: stopping"), "{text}");
    assert!(!log.last().unwrap().contains("stopped"), "{text}");
}

/// The next sd_notify message (the socket is handed back).
async fn notification(
    socket: std::os::unix::net::UnixDatagram,
) -> (String, std::os::unix::net::UnixDatagram) {
    tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        (String::from_utf8_lossy(&buf[..n]).to_string(), socket)
    })
    .await
    .unwrap()
}

/// Under systemd (`Type=notify`): READY once the API answers, watchdog
/// pings while healthy, RELOADING/READY around a SIGHUP, STOPPING on
/// SIGTERM. The service manager's socket is played by the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_the_service_manager_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    watchlist(dir.path(), port, "http://127.0.0.1:9/hook", "example.de");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(dir.path())
            .args(["run"])
            .env_remove("MXWATCH_CONFIG")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let (ready, socket) = notification(socket).await;
    assert!(ready.contains("READY=1"), "{ready}");
    // READY comes after the API listens.
    let r = mxwatch::http_client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut seen = Vec::new();
    let mut socket = socket;
    let pid = child.id().to_string();
    for round in 0..8 {
        if round == 2 {
            send("-HUP", &pid);
        }
        if round == 5 {
            send("-TERM", &pid);
        }
        let (msg, s) = notification(socket).await;
        socket = s;
        seen.push(msg.clone());
        if msg.contains("STOPPING=1") {
            break;
        }
    }
    let all = seen.join("|");
    assert!(all.contains("WATCHDOG=1"), "{all}");
    assert!(
        all.contains("RELOADING=1") && all.contains("MONOTONIC_USEC="),
        "{all}"
    );
    assert!(all.contains("STOPPING=1"), "{all}");
    assert!(child.wait().unwrap().success());
}
