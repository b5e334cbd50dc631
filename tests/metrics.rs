//! The monitoring endpoint: `/metrics` in the Prometheus text format with the
//! hub's counters, `/healthz`, and short answers to anything else; and the
//! WebSocket port's answer to a plain HTTP request.

mod common;

use common::*;
use serde_json::json;

#[test]
fn metrics_follow_the_hub() {
    let server = Server::start(token_config());
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let _client = login_token(&server, &mut backend, "u1").await;
        // An expired token, a bad request line.
        let expired = pushhub::auth::mint(&secret(), "u2", 1);
        let mut refused = connect(server.ws, "/").await;
        send_text(&mut refused, &expired).await;
        assert_eq!(expect_close(&mut refused).await.0, 4001);
        assert!(backend.request("not json").await.contains("invalid JSON"));
        let push = json!({"cmd": "push", "uid": "u1", "data": "x"});
        backend.json(push).await;
        // A channel with its member, a publication, a refusal at a limit.
        let subscribe = json!({"cmd": "subscribe", "uid": "u1", "ch": "room"});
        assert_eq!(backend.json(subscribe).await["subscribed"], 1);
        let publish = json!({"cmd": "publish", "ch": "room", "data": 1});
        assert_eq!(backend.json(publish).await["delivered"], 1);
        // Read while the client is still connected.
        let response = http(server.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        check_exposition(&response);
    });
}

fn check_exposition(response: &str) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(body.contains("# TYPE pushhub_connections gauge"), "{body}");
    assert_eq!(sample(body, "pushhub_connections"), Some(1.0), "{body}");
    assert_eq!(sample(body, "pushhub_uids"), Some(1.0));
    assert_eq!(sample(body, "pushhub_handshakes_total"), Some(2.0));
    assert_eq!(
        sample(body, "pushhub_auth_failures_total{reason=\"expired\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(body, "pushhub_text_errors_total{kind=\"invalid_json\"}"),
        Some(1.0)
    );
    assert_eq!(sample(body, "pushhub_pushes_total"), Some(1.0));
    assert_eq!(sample(body, "pushhub_delivered_total"), Some(2.0));
    assert_eq!(sample(body, "pushhub_channels"), Some(1.0));
    assert_eq!(sample(body, "pushhub_subscriptions"), Some(1.0));
    assert_eq!(sample(body, "pushhub_publications_total"), Some(1.0));
    assert!(
        body.contains("# TYPE pushhub_channel_errors_total counter"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE pushhub_v1_errors_total counter"),
        "{body}"
    );
    assert_eq!(
        sample(body, "pushhub_rejected_total{limit=\"per_ip\"}"),
        Some(0.0)
    );
    assert!(sample(body, "pushhub_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(body, "pushhub_open_fds").unwrap() > 0.0);
    // Every sample line is `name[{labels}] number`.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn health_and_other_paths() {
    let server = Server::start(plain_config());
    let health = http(server.metrics, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert!(
        health.starts_with("HTTP/1.1 200 OK") && health.ends_with("\r\n\r\nok\n"),
        "{health}"
    );
    let missing = http(server.metrics, b"GET /admin HTTP/1.1\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = http(server.metrics, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 400"), "{post}");
    // The hub keeps working.
    run(async {
        let mut backend = Backend::connect(server.text).await;
        assert_eq!(backend.stats().await["connections"], 0);
    });
}

#[test]
fn a_plain_http_request_on_the_websocket_port_gets_an_answer() {
    let server = Server::start(plain_config());
    let response = http(server.ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        response.starts_with("HTTP/1.1 426 Upgrade Required"),
        "{response}"
    );
    assert!(
        response.ends_with("this is a pushhub WebSocket endpoint\n"),
        "{response}"
    );
    run(async {
        let mut backend = Backend::connect(server.text).await;
        let stats = backend.stats().await;
        assert_eq!(stats["handshake_failures"]["not_upgrade"], 1, "{stats}");
    });
}
