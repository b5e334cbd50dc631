//! The cluster, over a real Redis and real hub processes: whichever hub a
//! backend asks, the answer is the whole cluster's (pushes, the original form,
//! broadcasts and publications summed over the hubs and delivered exactly
//! once; presence, kicks, server-side subscriptions, channels and members
//! merged), while `stats` stays the local hub's; a login is complete for the
//! cluster once its ping is answered; messages go only to the hubs that hold
//! their uid or channel; prefixes, node ids and the unix socket. Faults,
//! bad flags and a wrong password are tests/cluster_faults.rs's.

mod common;

use common::cluster::{ask, *};
use common::redis::Redis;
use common::*;
use pushhub::auth::{Grants, mint_with_grants};
use pushhub::time::unix_now;
use serde_json::json;

#[test]
fn the_original_form_is_ok_when_a_connection_on_any_hub_took_the_line() {
    let cluster = Cluster::start(&["a", "b"]);
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        let mut u1_b = login_at(cluster.ws(1), "u1").await;
        let mut n42 = login_at(cluster.ws(1), "42").await;
        // The client gets the line's exact bytes, spacing and all.
        let line = r#"{"uid":"u1",  "percent":"88%" , "n":[1, 2]}"#;
        assert_eq!(a.request(line).await, "ok", "{line} entering a");
        assert_eq!(next_text(&mut u1_b).await, line);
        let line = r#"{"uid":"u1","percent":"89%"}"#;
        assert_eq!(b.request(line).await, "ok", "{line} entering b");
        assert_eq!(next_text(&mut u1_b).await, line);
        let line = r#"{"uid":42,"percent":"90%"}"#;
        assert_eq!(a.request(line).await, "ok", "{line} entering a");
        assert_eq!(next_text(&mut n42).await, line);
        for backend in [&mut a, &mut b] {
            let nobody = r#"{"uid":"nobody","percent":"88%"}"#;
            assert_eq!(backend.request(nobody).await, "fail");
        }
        // A connection on each hub: each gets the line once.
        let mut u1_a = login_at(cluster.ws(0), "u1").await;
        let line = r#"{"uid":"u1","percent":"91%"}"#;
        assert_eq!(b.request(line).await, "ok");
        assert_eq!(next_text(&mut u1_a).await, line);
        assert_eq!(next_text(&mut u1_b).await, line);
        assert_eq!(a.push("u1", "after").await, 2);
        assert_eq!(next_text(&mut u1_a).await, "after");
        assert_eq!(next_text(&mut u1_b).await, "after");
    });
}

#[test]
fn push_delivered_is_summed_over_the_hubs() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    run(async {
        let [mut a, _, mut c] = cluster.backends().await;
        let mut u1_a = login_at(cluster.ws(0), "u1").await;
        let mut u1_b = login_at(cluster.ws(1), "u1").await;
        let mut u2_b = login_at(cluster.ws(1), "u2").await;
        // Entering a hub that holds none of them.
        ask!(c, {"cmd":"push","uid":"u1","data":"one"} => {"ok":true,"delivered":2});
        ask!(c, {"cmd":"push","uids":["u1","u2","u1","nobody"],"data":{"n":1},"id":"m"}
            => {"ok":true,"id":"m","delivered":3});
        // Entering a hub that holds one of them.
        ask!(a, {"cmd":"push","uid":"u1","data":"two"} => {"ok":true,"delivered":2});
        ask!(a, {"cmd":"push","uid":"nobody","data":"x"} => {"ok":true,"delivered":0});
        for client in [&mut u1_a, &mut u1_b] {
            assert_eq!(next_text(client).await, "one");
            assert_eq!(next_text(client).await, r#"{"n":1}"#);
            assert_eq!(next_text(client).await, "two");
        }
        assert_eq!(next_text(&mut u2_b).await, r#"{"n":1}"#);
        // Exactly once: the next message of each is the next push.
        assert_eq!(c.push("u2", "next").await, 1);
        assert_eq!(next_text(&mut u2_b).await, "next");
        assert_eq!(c.push("u1", "next").await, 2);
        assert_eq!(next_text(&mut u1_a).await, "next");
        assert_eq!(next_text(&mut u1_b).await, "next");
    });
}

#[test]
fn broadcast_and_publish_reach_every_hub_exactly_once() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    run(async {
        let [mut a, mut b, mut c] = cluster.backends().await;
        let mut x = login_at(cluster.ws(0), "x").await;
        let mut y = login_at(cluster.ws(1), "y").await;
        let mut z1 = login_at(cluster.ws(2), "z").await;
        let mut z2 = login_at(cluster.ws(2), "z").await;
        ask!(a, {"cmd":"broadcast","data":"all"} => {"ok":true,"delivered":4});
        for client in [&mut x, &mut y, &mut z1, &mut z2] {
            assert_eq!(next_text(client).await, "all");
        }
        ask!(a, {"cmd":"subscribe","uids":["y","z"],"ch":"room"} => {"ok":true,"subscribed":3});
        ask!(b, {"cmd":"subscribe","uid":"x","ch":"room"} => {"ok":true,"subscribed":1});
        ask!(b, {"cmd":"publish","ch":"room","data":"hi"} => {"ok":true,"delivered":4});
        ask!(c, {"cmd":"publish","chs":["room","nobody-here"],"data":"two","id":1}
            => {"ok":true,"id":1,"delivered":4});
        ask!(c, {"cmd":"publish","ch":"empty","data":1} => {"ok":true,"delivered":0});
        for client in [&mut x, &mut y, &mut z1, &mut z2] {
            assert_eq!(next_text(client).await, "hi");
            assert_eq!(next_text(client).await, "two");
        }
        // Exactly once: each client's next message is its own push.
        for (uid, n, clients) in [
            ("x", 1, vec![&mut x]),
            ("y", 1, vec![&mut y]),
            ("z", 2, vec![&mut z1, &mut z2]),
        ] {
            assert_eq!(a.push(uid, "mark").await, n, "{uid}");
            for client in clients {
                assert_eq!(next_text(client).await, "mark", "{uid}");
            }
        }
    });
}

#[test]
fn token_subscriptions_on_every_hub_get_publications_from_any_hub() {
    let raw = std::str::from_utf8(SECRET).unwrap();
    let cluster = Cluster::with(Redis::start(), &["a", "b"], &[], &[("PUSHHUB_SECRET", raw)]);
    let token = |uid: &str, subs: &[&str]| {
        let grants = Grants {
            subs: subs.iter().map(|s| s.to_string()).collect(),
            ..Grants::default()
        };
        mint_with_grants(&secret(), uid, unix_now() + 3600, &grants)
    };
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        let mut alice = login_with(cluster.ws(0), &token("alice", &["room:1"])).await;
        let mut bob = login_with(cluster.ws(1), &token("bob", &["room:1", "room:2"])).await;
        let mut carol = login_with(cluster.ws(1), &token("carol", &[])).await;
        ask!(a, {"cmd":"publish","ch":"room:1","data":"one"} => {"ok":true,"delivered":2});
        ask!(a, {"cmd":"publish","ch":"room:2","data":"two"} => {"ok":true,"delivered":1});
        assert_eq!(next_text(&mut alice).await, "one");
        assert_eq!(next_text(&mut bob).await, "one");
        assert_eq!(next_text(&mut bob).await, "two");
        ask!(b, {"cmd":"members","ch":"room:1"}
            => {"ok":true,"uids":["alice","bob"],"connections":2});
        // Carol has no subscription: her first message is her own push.
        assert_eq!(a.push("carol", "yours").await, 1);
        assert_eq!(next_text(&mut carol).await, "yours");
    });
}

#[test]
fn online_counts_connections_on_every_hub() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    run(async {
        let mut c = Backend::connect(cluster.text(2)).await;
        let _u1 = [
            login_at(cluster.ws(0), "u1").await,
            login_at(cluster.ws(0), "u1").await,
        ];
        let mut u1_b = login_at(cluster.ws(1), "u1").await;
        let _u2 = login_at(cluster.ws(1), "u2").await;
        ask!(c, {"cmd":"online","uid":"u1"} => {"ok":true,"online":true,"connections":3});
        ask!(c, {"cmd":"online","uid":"u2","id":5}
            => {"ok":true,"id":5,"online":true,"connections":1});
        ask!(c, {"cmd":"online","uid":"nobody"} => {"ok":true,"online":false,"connections":0});
        ask!(c, {"cmd":"online","uids":["u1","nobody","u2"]} => {"ok":true,"results":[
            {"uid":"u1","online":true,"connections":3},
            {"uid":"nobody","online":false,"connections":0},
            {"uid":"u2","online":true,"connections":1},
        ]});
        close_client(&mut u1_b).await;
        assert_eq!(c.connections("u1").await, 2);
    });
}

#[test]
fn kick_closes_the_uids_connections_on_every_hub_with_4000() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    run(async {
        let mut c = Backend::connect(cluster.text(2)).await;
        let mut u1_a = login_at(cluster.ws(0), "u1").await;
        let mut u1_b = login_at(cluster.ws(1), "u1").await;
        let mut u2_b = login_at(cluster.ws(1), "u2").await;
        ask!(c, {"cmd":"kick","uid":"u1"} => {"ok":true,"kicked":2});
        for client in [&mut u1_a, &mut u1_b] {
            assert_eq!(expect_close(client).await.0, 4000);
            expect_end(client).await;
        }
        assert_eq!(c.connections("u1").await, 0);
        assert_eq!(c.push("u1", "gone").await, 0);
        assert_eq!(c.request(r#"{"uid":"u1","percent":"1%"}"#).await, "fail");
        ask!(c, {"cmd":"kick","uid":"nobody"} => {"ok":true,"kicked":0});
        assert_eq!(c.push("u2", "still here").await, 1);
        assert_eq!(next_text(&mut u2_b).await, "still here");
    });
}

#[test]
fn server_side_subscriptions_and_channel_presence_span_the_hubs() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    run(async {
        let [mut a, mut b, mut c] = cluster.backends().await;
        let mut u1_a = login_at(cluster.ws(0), "u1").await;
        let mut u1_b = login_at(cluster.ws(1), "u1").await;
        let mut u2_b = login_at(cluster.ws(1), "u2").await;
        let mut u3_c = login_at(cluster.ws(2), "u3").await;
        ask!(c, {"cmd":"subscribe","uid":"u1","chs":["room:1","room:2"]}
            => {"ok":true,"subscribed":4});
        ask!(a, {"cmd":"subscribe","uids":["u2","u3"],"ch":"room:1"} => {"ok":true,"subscribed":2});
        ask!(a, {"cmd":"subscribe","uid":"u3","ch":"other"} => {"ok":true,"subscribed":1});

        ask!(b, {"cmd":"channels"} => {"ok":true,"channels":[
            {"ch":"other","connections":1},
            {"ch":"room:1","connections":4},
            {"ch":"room:2","connections":2},
        ]});
        ask!(a, {"cmd":"channels","prefix":"room:"} => {"ok":true,"channels":[
            {"ch":"room:1","connections":4},
            {"ch":"room:2","connections":2},
        ]});
        ask!(a, {"cmd":"members","ch":"room:1"}
            => {"ok":true,"uids":["u1","u2","u3"],"connections":4});
        ask!(c, {"cmd":"members","ch":"room:2"} => {"ok":true,"uids":["u1"],"connections":2});

        ask!(c, {"cmd":"publish","ch":"room:2","data":"r2"} => {"ok":true,"delivered":2});
        assert_eq!(next_text(&mut u1_a).await, "r2");
        assert_eq!(next_text(&mut u1_b).await, "r2");

        ask!(c, {"cmd":"unsubscribe","uid":"u1","ch":"room:1"} => {"ok":true,"unsubscribed":2});
        ask!(b, {"cmd":"members","ch":"room:1"} => {"ok":true,"uids":["u2","u3"],"connections":2});
        ask!(a, {"cmd":"publish","ch":"room:1","data":"r1"} => {"ok":true,"delivered":2});
        assert_eq!(next_text(&mut u2_b).await, "r1");
        assert_eq!(next_text(&mut u3_c).await, "r1");
        // u1 left room:1: its next message is its own push.
        assert_eq!(a.push("u1", "mark").await, 2);
        assert_eq!(next_text(&mut u1_a).await, "mark");
        assert_eq!(next_text(&mut u1_b).await, "mark");
    });
}

#[test]
fn stats_are_the_local_hubs_and_cluster_stats_list_every_node() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    run(async {
        let [mut a, mut b, mut c] = cluster.backends().await;
        let _u = login_at(cluster.ws(0), "u").await;
        let _v = [
            login_at(cluster.ws(1), "v").await,
            login_at(cluster.ws(1), "v").await,
        ];
        for (backend, node, connections) in [(&mut a, "a", 1), (&mut b, "b", 2), (&mut c, "c", 0)] {
            let stats = backend.stats().await;
            assert_eq!(stats["node"], node, "{stats}");
            assert_eq!(stats["redis"], "up", "{stats}");
            assert_eq!(stats["connections"], connections, "{stats}");
            assert_eq!(stats["cluster_unconfirmed"], 0, "{stats}");
        }
        let (nodes, reply) = cluster_stats(&mut c).await;
        assert!(reply.get("unconfirmed").is_none(), "{reply}");
        let figures: Vec<_> = nodes
            .iter()
            .map(|n| json!([n["node"], n["connections"], n["redis"]]))
            .collect();
        let expected = [
            json!(["a", 1, "up"]),
            json!(["b", 2, "up"]),
            json!(["c", 0, "up"]),
        ];
        assert_eq!(figures, expected, "{reply}");
        let reply = a.json(json!({"cmd":"stats","cluster":true,"id":"s"})).await;
        assert_eq!(reply["id"], "s", "{reply}");
        assert_eq!(reply["nodes"].as_array().map(Vec::len), Some(3), "{reply}");
        for hub in &cluster.hubs {
            assert_eq!(metric(hub, "pushhub_redis_up"), 1.0);
            assert_eq!(metric(hub, "pushhub_cluster_unconfirmed_total"), 0.0);
            assert_eq!(healthz(hub), 200);
        }
    });
}

/// The race this catches: a hub that answers the ping before its Redis
/// subscription for the uid is in place, so that a push entering another hub
/// finds nobody.
#[test]
fn a_login_is_complete_for_the_cluster_once_its_ping_is_answered() {
    let cluster = Cluster::start(&["a", "b"]);
    run(async {
        let mut backends: [Backend; 2] = cluster.backends().await;
        let mut clients = Vec::new();
        for i in 0..30 {
            let uid = format!("fresh-{i}");
            let (at, other) = (i % 2, 1 - i % 2);
            let mut client = login_at(cluster.ws(at), &uid).await;
            if i / 2 % 2 == 0 {
                let line = format!(r#"{{"uid":"{uid}","n":{i}}}"#);
                let reply = backends[other].request(&line).await;
                assert_eq!(
                    reply, "ok",
                    "{line} entering hub {other} right after its login on {at}"
                );
                assert_eq!(next_text(&mut client).await, line);
            } else {
                let reply = backends[other]
                    .json(json!({"cmd":"push","uid":uid,"data":"hello"}))
                    .await;
                assert_eq!(
                    reply,
                    json!({"ok":true,"delivered":1}),
                    "{uid} entering hub {other}"
                );
                assert_eq!(next_text(&mut client).await, "hello");
            }
            clients.push(client);
        }
    });
}

/// The same race for channels: a hub that answers a `subscribe` before its
/// Redis subscription for the channel is in place, so that a publication
/// entering another hub right after finds nobody there.
#[test]
fn a_subscribe_is_complete_for_the_cluster_once_it_is_answered() {
    let cluster = Cluster::start(&["a", "b"]);
    run(async {
        let mut backends: [Backend; 2] = cluster.backends().await;
        let _holders = [
            login_at(cluster.ws(0), "s0").await,
            login_at(cluster.ws(1), "s1").await,
        ];
        for i in 0..80 {
            let (holder, other) = (i % 2, 1 - i % 2);
            // Mostly entering the hub that holds the uid, sometimes the other.
            let entry = if i % 4 < 2 { holder } else { other };
            let (uid, ch) = (format!("s{holder}"), format!("fresh:{i}"));
            let reply = backends[entry]
                .json(json!({"cmd":"subscribe","uid":uid,"ch":ch}))
                .await;
            assert_eq!(
                reply,
                json!({"ok":true,"subscribed":1}),
                "{ch} entering {entry}"
            );
            let reply = backends[other]
                .json(json!({"cmd":"publish","ch":ch,"data":i}))
                .await;
            let what = format!("{ch} (held on hub {holder}, subscribed entering {entry})");
            assert_eq!(reply, json!({"ok":true,"delivered":1}), "publish to {what}");
        }
    });
}

/// The same for a v1 client's own `sub`: once `subbed` came, the cluster's
/// publications reach it.
#[test]
fn a_v1_sub_is_complete_for_the_cluster_once_subbed_is_answered() {
    let cluster = Cluster::start_with(&["a", "b"], &["--public-channel", "fresh:*"]);
    run(async {
        let mut a = Backend::connect(cluster.text(0)).await;
        let mut client = v1_login_at(cluster.ws(1), "v").await;
        for i in 0..60 {
            let ch = format!("fresh:{i}");
            send_text(&mut client, &json!({"op":"sub","ch":ch}).to_string()).await;
            let subbed = v1_frame(&mut client).await;
            assert_eq!(
                (&subbed["op"], &subbed["ch"]),
                (&json!("subbed"), &json!(ch))
            );
            let reply = a.json(json!({"cmd":"publish","ch":ch,"data":i})).await;
            assert_eq!(
                reply,
                json!({"ok":true,"delivered":1}),
                "publish to {ch} right after subbed"
            );
            let msg = v1_frame(&mut client).await;
            assert_eq!(
                (&msg["op"], &msg["ch"], &msg["d"]),
                (&json!("msg"), &json!(ch), &json!(i)),
                "{msg}"
            );
        }
    });
}

#[test]
fn messages_go_only_to_the_hubs_that_hold_their_uid_or_channel() {
    let cluster = Cluster::start(&["a", "b", "c"]);
    run(async {
        let [mut a, mut b, mut c] = cluster.backends().await;
        let mut u = login_at(cluster.ws(1), "u").await;
        let reply = b
            .json(json!({"cmd":"subscribe","uid":"u","ch":"only-b"}))
            .await;
        assert_eq!(reply["subscribed"], 1, "{reply}");
        let (b0, c0) = (
            counter(&mut b, "cluster_messages_in").await,
            counter(&mut c, "cluster_messages_in").await,
        );
        for i in 0..5 {
            assert_eq!(a.push("u", &format!("p{i}")).await, 1);
            let line = format!(r#"{{"uid":"u","n":{i}}}"#);
            assert_eq!(a.request(&line).await, "ok");
        }
        ask!(a, {"cmd":"push","uids":["u","nobody"],"data":"many"} => {"ok":true,"delivered":1});
        ask!(a, {"cmd":"publish","ch":"only-b","data":"pub"} => {"ok":true,"delivered":1});
        assert_eq!(a.connections("u").await, 1);
        let b1 = counter(&mut b, "cluster_messages_in").await;
        let c1 = counter(&mut c, "cluster_messages_in").await;
        assert_eq!(
            c1, c0,
            "c, which holds neither u nor only-b, received messages for them"
        );
        assert!(
            b1 >= b0 + 13,
            "b received {} messages for its 13, from {b0}",
            b1 - b0
        );
        for i in 0..5 {
            assert_eq!(next_text(&mut u).await, format!("p{i}"));
            assert_eq!(next_text(&mut u).await, format!(r#"{{"uid":"u","n":{i}}}"#));
        }
        assert_eq!(next_text(&mut u).await, "many");
        assert_eq!(next_text(&mut u).await, "pub");
        // The counter counts: a uid on c brings c its push.
        let mut w = login_at(cluster.ws(2), "w").await;
        let c2 = counter(&mut c, "cluster_messages_in").await;
        assert_eq!(a.push("w", "to c").await, 1);
        assert_eq!(next_text(&mut w).await, "to c");
        assert!(counter(&mut c, "cluster_messages_in").await > c2);
    });
}

#[test]
fn hubs_with_another_prefix_are_another_cluster() {
    let redis = Redis::start();
    // With a database number, which pub/sub ignores.
    let url = format!("{}/1", redis.url());
    let plain = |prefix: &'static str| ["--allow-plain-uid", "--redis-prefix", prefix];
    let hubs = [
        start_hub(&url, Some("a"), &plain("one"), &[]),
        start_hub(&url, Some("b"), &plain("one"), &[]),
        start_hub(&url, Some("c"), &plain("two"), &[]),
    ];
    run(async {
        let mut a = Backend::connect(hubs[0].text).await;
        let mut c = Backend::connect(hubs[2].text).await;
        let _u = login_at(hubs[1].ws, "u").await;
        let _w = login_at(hubs[2].ws, "w").await;
        ask!(a, {"cmd":"push","uid":"u","data":1} => {"ok":true,"delivered":1});
        ask!(a, {"cmd":"push","uid":"w","data":1} => {"ok":true,"delivered":0});
        assert_eq!(a.request(r#"{"uid":"w"}"#).await, "fail");
        ask!(c, {"cmd":"push","uid":"u","data":1} => {"ok":true,"delivered":0});
        assert_eq!(cluster_nodes(&mut a).await, ["a", "b"]);
        assert_eq!(cluster_nodes(&mut c).await, ["c"]);
    });
}

#[test]
fn node_ids_default_to_distinct_random_ones() {
    let redis = Redis::start();
    let hubs = [
        start_hub(&redis.url(), None, &["--allow-plain-uid"], &[]),
        start_hub(&redis.url(), None, &["--allow-plain-uid"], &[]),
    ];
    run(async {
        let mut ids = Vec::new();
        for hub in &hubs {
            let stats = Backend::connect(hub.text).await.stats().await;
            let id = stats["node"].as_str().unwrap_or_else(|| panic!("{stats}"));
            assert!(!id.is_empty(), "{stats}");
            ids.push(id.to_string());
        }
        assert_ne!(ids[0], ids[1]);
        ids.sort();
        assert_eq!(
            cluster_nodes(&mut Backend::connect(hubs[0].text).await).await,
            ids
        );
    });
}

#[test]
fn a_unix_socket_url_works() {
    let redis = Redis::start();
    let url = format!("unix://{}", redis.unix_path().display());
    let hubs = [
        start_hub(&url, Some("a"), &["--allow-plain-uid"], &[]),
        start_hub(&url, Some("b"), &["--allow-plain-uid"], &[]),
    ];
    run(async {
        let mut a = Backend::connect(hubs[0].text).await;
        let mut u = login_at(hubs[1].ws, "u").await;
        assert_eq!(a.push("u", "over the socket").await, 1);
        assert_eq!(next_text(&mut u).await, "over the socket");
        assert_eq!(cluster_nodes(&mut a).await, ["a", "b"]);
    });
}

#[test]
fn a_clients_message_reaches_a_listener_on_another_hub_and_is_answered() {
    let cluster = Cluster::start_with(&["a", "b"], &["--upstream"]);
    run(a_listener_hears_another_hubs_client(
        cluster.text(0),
        cluster.ws(1),
        "talker",
    ));
}
