//! The endpoints over real TCP, on a status board and store filled by hand.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::client::get;
use super::*;
use crate::effects::view::{Breaker, CommandView};
use crate::store::history::{Entry, History, Retention};

struct Running {
    url: String,
    _trigger: crate::shutdown::Trigger,
}

async fn start(token: Option<&str>) -> Running {
    let store = Store::in_memory().unwrap();
    let history = History::start(
        store.clone(),
        Retention {
            max_age: Duration::from_secs(3600),
            max_rows: 100,
        },
    )
    .unwrap();
    let now = crate::event::now_ns();
    history.record(Entry::Asked {
        action_id: 7,
        at_ns: now,
        origin: Arc::from("disk"),
        build: Some(Arc::from("ab".repeat(32))),
        reason: "root <97%> full".into(),
        service: "nginx".into(),
        command: "restart".into(),
        refusal: Some("rate limit: too often".into()),
    });
    assert!(history.flush(Duration::from_secs(5)));
    let board = StatusBoard::default();
    board.loaded(
        "disk",
        PathBuf::from("/rules/disk.wasm"),
        "1.0".into(),
        "cd".repeat(32),
    );
    let parts = Parts {
        node: "web-1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(Into::into),
        board,
        commands: Arc::new(|| {
            vec![CommandView {
                service: "nginx".into(),
                command: "restart".into(),
                running: 0,
                runs_in_window: 3,
                max_runs: 3,
                window: Duration::from_secs(600),
                breaker: Breaker::Open {
                    remaining: Duration::from_secs(60),
                },
                last: None,
            }]
        }),
        sinks: Arc::new(Vec::new),
        store,
        sources: vec![SourceInfo {
            kind: "network",
            listener: "127.0.0.1:25826".into(),
            reasons: &["malformed"],
        }],
        mqtt_broker: None,
        limits: Limits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            request_timeout: Duration::from_secs(5),
            max_connections: 4,
        },
    };
    let server = Server::bind(parts).await.unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let (trigger, shutdown) = crate::shutdown::channel();
    server.serve(shutdown);
    Running {
        url,
        _trigger: trigger,
    }
}

#[tokio::test]
async fn status_history_feed_page_and_metrics_answer() {
    let m = start(None).await;
    let (code, body) = get(&format!("{}/status", m.url), None).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["node"], "web-1");
    assert_eq!(status["rules"][0]["name"], "disk");
    assert_eq!(status["rules"][0]["state"], "serving");
    assert_eq!(status["commands"][0]["breaker"]["state"], "open");
    assert_eq!(status["sources"][0]["kind"], "network");

    let (code, body) = get(&format!("{}/history?failed=1", m.url), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["rows"][0]["action_id"], 7);
    assert_eq!(page["rows"][0]["state"], "refused");
    assert!(page["next"].is_null());

    let (code, body) = get(&format!("{}/feed.atom", m.url), None).await.unwrap();
    assert_eq!(code, 200);
    let feed = atom_syndication::Feed::read_from(body.as_bytes()).unwrap();
    assert_eq!(feed.entries().len(), 1);
    assert!(feed.links()[0].href().starts_with("http://127.0.0.1:"));

    let (code, body) = get(&format!("{}/", m.url), None).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("medic on web-1"), "{body}");
    // Escaped, never markup.
    assert!(body.contains("root &lt;97%&gt; full"), "{body}");
    assert!(body.contains("open, 60 s left"), "{body}");

    let (code, body) = get(&format!("{}/metrics", m.url), None).await.unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE medic_values_received_total counter"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_parameters_are_a_400_that_says_which() {
    let m = start(None).await;
    for (query, says) in [
        ("since=yesterday", "since=yesterday"),
        ("sort=asc", "unknown parameter `sort`"),
    ] {
        let (code, body) = get(&format!("{}/history?{query}", m.url), None)
            .await
            .unwrap();
        assert_eq!(code, 400, "{query}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(e["error"].as_str().unwrap().contains(says), "{body}");
    }
    let (code, _) = get(&format!("{}/nothing-here", m.url), None).await.unwrap();
    assert_eq!(code, 404);
}

#[tokio::test]
async fn with_a_token_every_endpoint_wants_it() {
    let m = start(Some("s3cret")).await;
    for path in ["/", "/status", "/history", "/metrics", "/feed.atom"] {
        let url = format!("{}{path}", m.url);
        let (code, body) = get(&url, None).await.unwrap();
        assert_eq!(code, 401, "{path} without a token: {body}");
        let (code, _) = get(&url, Some("guess")).await.unwrap();
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, _) = get(&url, Some("s3cret")).await.unwrap();
        assert_eq!(code, 200, "{path} with the token");
    }
}

/// Send `request` raw and read until the server closes (or `within` passes: then `None`).
async fn raw(url: &str, request: &[u8], within: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn without_a_token_only_loopback_hosts_are_served() {
    let m = start(None).await;
    let wait = Duration::from_secs(5);
    for host in ["rebound.example.com", "10.0.0.1:9105", "[::2]"] {
        let request = format!("GET /history HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw(&m.url, request.as_bytes(), wait).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
        assert!(answer.contains("Host header"), "{answer}");
    }
    for host in ["localhost:9105", "127.0.0.1", "[::1]:80", "LOCALHOST"] {
        let request = format!("GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw(&m.url, request.as_bytes(), wait).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
}

#[tokio::test]
async fn a_half_sent_request_is_closed_by_the_header_timeout_token_or_not() {
    for token in [None, Some("s3cret")] {
        let m = start(token).await;
        let answer = raw(
            &m.url,
            b"GET /status HTTP/1.1\r\nHost: local",
            Duration::from_secs(5),
        )
        .await
        .expect("closed by the header timeout");
        assert!(!answer.contains("200 OK"), "{answer}");
    }
}

/// Closed by hyper's header timer, which also runs while a kept-alive connection waits for its
/// next request (hyper 1.12); the idle watch is not what this exercises.
#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed() {
    let m = start(None).await;
    let answer = raw(
        &m.url,
        b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .expect("closed once idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn past_the_cap_a_connection_is_closed_at_once_and_the_rest_still_served() {
    use tokio::io::AsyncReadExt;
    let m = start(None).await;
    let addr = m.url.trim_start_matches("http://").to_string();
    let before = metrics().http_connections_refused.get();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The server accepts asynchronously: wait until the four hold every slot.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_millis(200), extra.read(&mut buf))
            .await
            .is_ok_and(|r| matches!(r, Ok(0) | Err(_)));
        if closed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused past 4 connections"
        );
    }
    assert!(metrics().http_connections_refused.get() > before);
    drop(held);
    // Slots come back as the held connections end.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&format!("{}/status", m.url), None)
        .await
        .map(|r| r.0)
        .ok()
        != Some(200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn loopback_hosts() {
    for ok in [
        "localhost",
        "localhost:1",
        "127.0.0.1",
        "127.1.2.3:9",
        "[::1]",
        "[::1]:9105",
    ] {
        assert!(loopback_host(ok), "{ok}");
    }
    for bad in [
        "",
        "evil.com",
        "localhost.evil.com",
        "[::1]x",
        "::1",
        "0.0.0.0",
        "192.168.1.1:80",
    ] {
        assert!(!loopback_host(bad), "{bad}");
    }
}
