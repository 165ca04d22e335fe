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
