//! Hubs on a real Redis Cluster of three masters the test makes: the same
//! exact answers as on one Redis, with each route a sharded channel of the
//! master that serves its slot (so Redis counts its subscribers exactly),
//! recovery from the history each shard keeps, listeners across hubs, the
//! device registry in one slot, and a lost master making answers
//! unconfirmed until the cluster is whole.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::RedisCluster;
use common::*;
use serde_json::json;

/// Hubs named `nodes` on a fresh Redis Cluster of three masters, each
/// given the URL of the first master only, and each with its link up.
struct Sharded {
    hubs: Vec<Binary>,
    redis: RedisCluster,
}

impl Sharded {
    fn start(nodes: &[&str], extra: &[&str]) -> Sharded {
        Sharded::on(RedisCluster::start(3), nodes, extra)
    }

    fn on(redis: RedisCluster, nodes: &[&str], extra: &[&str]) -> Sharded {
        let mut flags = vec!["--allow-plain-uid", "--public-channel", "news"];
        flags.extend_from_slice(extra);
        let mut hubs: Vec<Binary> = nodes
            .iter()
            .map(|node| spawn_hub(&redis.url(), Some(node), &flags, &[]))
            .collect();
        for hub in &mut hubs {
            let line = hub.wait_for_line(CONNECTED);
            assert!(
                line.contains("Redis Cluster") && line.contains("3 shards"),
                "{line}"
            );
        }
        Sharded { hubs, redis }
    }

    fn ws(&self, i: usize) -> SocketAddr {
        self.hubs[i].ws
    }

    fn text(&self, i: usize) -> SocketAddr {
        self.hubs[i].text
    }

    /// Subscribers of Redis channel `name` over every master: sharded, and
    /// plain.
    fn subscribers(&self, name: &str) -> (u64, u64) {
        let count = |kind: &str| -> u64 {
            self.redis
                .nodes
                .iter()
                .map(|node| {
                    let reply = node.cli(&["PUBSUB", kind, name]);
                    // "NAME\nCOUNT"
                    reply
                        .lines()
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                })
                .sum()
        };
        (count("SHARDNUMSUB"), count("NUMSUB"))
    }
}

impl Drop for Sharded {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for hub in &mut self.hubs {
                log_mark(hub);
                eprintln!("--- a hub's stderr ---\n{}", hub.stderr.join("\n"));
            }
        }
    }
}

#[test]
fn every_command_is_exact_across_hubs_on_a_redis_cluster() {
    let cluster = Sharded::start(&["a", "b", "c"], &[]);
    run(async {
        let mut backends = Vec::new();
        for i in 0..3 {
            backends.push(Backend::connect(cluster.text(i)).await);
        }
        // Ten uids over the hubs, so their routes land on every shard.
        let mut clients = Vec::new();
        for i in 0..10 {
            clients.push(login_at(cluster.ws(i % 3), &format!("u{i}")).await);
        }
        for i in 0..10 {
            let uid = format!("u{i}");
            // Each route is one sharded subscription, on its slot's master.
            assert_eq!(cluster.subscribers(&format!("pushhub:{{u:{uid}}}")), (1, 0));
            for backend in &mut backends {
                ask!(backend, {"cmd":"push","uid":uid,"data":"p"} => {"ok":true,"delivered":1});
                assert_eq!(next_text(&mut clients[i]).await, "p");
            }
            let line = format!(r#"{{"uid":"{uid}","n":1}}"#);
            assert_eq!(backends[(i + 1) % 3].request(&line).await, "ok");
            assert_eq!(next_text(&mut clients[i]).await, line);
        }
        assert_eq!(backends[0].request(r#"{"uid":"nobody"}"#).await, "fail");
        ask!(backends[1], {"cmd":"push","uids":["u0","u1","nobody"],"data":"m"}
            => {"ok":true,"delivered":2});
        ask!(backends[2], {"cmd":"broadcast","data":"all"} => {"ok":true,"delivered":10});
        ask!(backends[0], {"cmd":"online","uid":"u4"} => {"ok":true,"online":true,"connections":1});
        // Server-side subscriptions and channel presence.
        ask!(backends[1], {"cmd":"subscribe","uids":["u0","u1","u2"],"ch":"room"}
            => {"ok":true,"subscribed":3});
        assert_eq!(cluster.subscribers("pushhub:{c:room}"), (3, 0));
        ask!(backends[2], {"cmd":"publish","ch":"room","data":"r"} => {"ok":true,"delivered":3});
        ask!(backends[0], {"cmd":"members","ch":"room"}
            => {"ok":true,"uids":["u0","u1","u2"],"connections":3});
        ask!(backends[0], {"cmd":"kick","uid":"u5"} => {"ok":true,"kicked":1});
        let (nodes, _) = cluster_stats(&mut backends[1]).await;
        assert_eq!(nodes.len(), 3);
    });
}

/// The registry's keys share one slot, so its scripts may change several:
/// registrations through one hub move and list through another, whichever
/// master the `--redis` URL names.
#[test]
fn the_device_registry_works_on_a_redis_cluster() {
    let cluster = Sharded::start(&["a", "b"], &[]);
    let device = |n: u32| format!("{n:08x}").repeat(8);
    run(async {
        let mut a = Backend::connect(cluster.text(0)).await;
        let mut b = Backend::connect(cluster.text(1)).await;
        for n in 1..=3 {
            ask!(a, {"cmd":"register","uid":"u1","apns":device(n)}
                => {"ok":true,"registered":"new"});
        }
        ask!(b, {"cmd":"register","uid":"u2","apns":device(2)}
            => {"ok":true,"registered":"moved","from":"u1"});
        ask!(b, {"cmd":"devices","uid":"u1"} => {"ok":true,"apns":[device(1), device(3)]});
        ask!(a, {"cmd":"unregister","uid":"u1"} => {"ok":true,"removed":2});
        ask!(a, {"cmd":"devices","uid":"u2"} => {"ok":true,"apns":[device(2)]});
    });
    // Both on the master of the `{devices}` slot; the others redirect.
    let holders: Vec<String> = cluster
        .redis
        .nodes
        .iter()
        .map(|node| {
            node.cli(&[
                "EXISTS",
                "pushhub:{devices}:owner",
                "pushhub:{devices}:u:u2",
            ])
        })
        .collect();
    assert_eq!(
        holders.iter().filter(|h| *h == "2").count(),
        1,
        "{holders:?}"
    );
    let moved = holders.iter().filter(|h| h.starts_with("MOVED")).count();
    assert_eq!(moved, 2, "{holders:?}");
}

#[test]
fn a_client_recovers_on_another_hub_on_a_redis_cluster() {
    let cluster = Sharded::start(&["a", "b"], &[]);
    run(async {
        let mut b = Backend::connect(cluster.text(1)).await;
        let mut client = v1_login_at(cluster.ws(0), "v1").await;
        ask!(b, {"cmd":"push","uid":"v1","data":"seen"} => {"ok":true,"delivered":1});
        let seen = v1_frame(&mut client).await;
        drop(client);
        wait_offline(&mut b, "v1").await;
        for i in 0..3 {
            ask!(b, {"cmd":"push","uid":"v1","data":i} => {"ok":true,"delivered":0});
        }
        let mut client = v1_connect(cluster.ws(1)).await;
        let welcome = v1_auth(&mut client, "v1", json!({"uid":seen["pos"]})).await;
        assert_eq!(welcome["recovered"], json!({"uid":true}), "{welcome}");
        for i in 0..3 {
            let msg = v1_frame(&mut client).await;
            assert_eq!(msg["d"], json!(i), "{msg}");
        }
    });
}

#[test]
fn a_clients_message_reaches_a_listener_on_another_hub_on_a_redis_cluster() {
    let cluster = Sharded::start(&["a", "b"], &["--upstream"]);
    run(a_listener_hears_another_hubs_client(
        cluster.text(0),
        cluster.ws(1),
        "talker",
    ));
}

#[test]
fn a_lost_master_makes_answers_unconfirmed_until_the_cluster_is_whole() {
    let mut cluster = Sharded::start(&["a", "b"], &["--cluster-timeout", "500ms"]);
    run(async {
        let mut a = Backend::connect(cluster.text(0)).await;
        let mut here = login_at(cluster.ws(0), "here").await;
        let _there = login_at(cluster.ws(1), "there").await;
        cluster.redis.nodes[2].kill();
        let killed = Instant::now();
        // The link goes down (a shard's connections broke): the local
        // client is still served, and the answer says it is not proof.
        wait_redis_state(&mut a, "down", Duration::from_secs(3)).await;
        let reply = a
            .json(json!({"cmd":"push","uid":"here","data":"local"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":1,"unconfirmed":true}));
        assert_eq!(next_text(&mut here).await, "local");
        assert!(killed.elapsed() < Duration::from_secs(3));
        cluster.redis.nodes[2].restart();
        cluster.redis.wait_ok();
        wait_redis_state(&mut a, "up", Duration::from_secs(10)).await;
        // Routes come back with the link: the other hub's client again.
        let deadline = Deadline::new(Duration::from_secs(5), "there reachable again");
        loop {
            let reply = a.json(json!({"cmd":"push","uid":"there","data":"x"})).await;
            if reply == json!({"ok":true,"delivered":1}) {
                break;
            }
            deadline.tick().await;
        }
    });
}

/// The `--redis` URL's master dies and its replica takes over: the hubs
/// find the cluster again through the masters they knew, and answers are
/// exact again.
#[test]
fn the_hubs_follow_a_failover_even_of_the_urls_node() {
    let mut cluster = Sharded::on(RedisCluster::start_with_replicas(3), &["a", "b"], &[]);
    run_long(Duration::from_secs(60), async {
        let mut a = Backend::connect(cluster.text(0)).await;
        let mut there = login_at(cluster.ws(1), "there").await;
        ask!(a, {"cmd":"push","uid":"there","data":"before"} => {"ok":true,"delivered":1});
        assert_eq!(next_text(&mut there).await, "before");
        cluster.redis.nodes[0].kill();
        wait_redis_state(&mut a, "down", Duration::from_secs(5)).await;
        // Redis Cluster promotes the replica after its node timeout (2 s).
        wait_redis_state(&mut a, "up", Duration::from_secs(30)).await;
        let deadline = Deadline::new(Duration::from_secs(10), "there reachable again");
        loop {
            let reply = a
                .json(json!({"cmd":"push","uid":"there","data":"after"}))
                .await;
            if reply == json!({"ok":true,"delivered":1}) {
                break;
            }
            deadline.tick().await;
        }
        // Every "after" that some hub could not confirm may or may not have
        // arrived; the confirmed one did.
        loop {
            if next_text(&mut there).await == "after" {
                break;
            }
        }
    });
}
