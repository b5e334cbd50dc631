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
        ask!(b, {"cmd":"devices","uid":"u1"} => {"ok":true,"apns":[device(1), device(3)],"fcm":[],"webpush":[]});
        ask!(a, {"cmd":"unregister","uid":"u1"} => {"ok":true,"removed":2});
        ask!(a, {"cmd":"devices","uid":"u2"} => {"ok":true,"apns":[device(2)],"fcm":[],"webpush":[]});
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

/// Slots move between masters while pushes flow (what `redis-cli --cluster
/// reshard` does, a slot at a time, slowly enough that pushes meet each
/// step): every answer stays true: a push said delivered came, once and in
/// order; one said not delivered did not (the new master took it before
/// the client's hub had subscribed there: true, if unwelcome); the rest
/// say unconfirmed. Nobody is disconnected, the hubs follow the moves
/// without making their links anew, and once the slots have moved, answers
/// are exact again and the streams go on with their positions, their keys
/// having moved with the slots.
#[test]
fn answers_stay_true_while_slots_move_between_masters() {
    let mut cluster = Sharded::start(&["a", "b"], &["--cluster-timeout", "500ms"]);
    let nodes = &cluster.redis.nodes;
    let uids: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    let (mut clients, epochs, mut a) = run(async {
        let mut clients = Vec::new();
        let mut epochs = Vec::new();
        for uid in &uids {
            let mut client = v1_connect(cluster.ws(1)).await;
            let welcome = v1_auth(&mut client, uid, serde_json::Value::Null).await;
            epochs.push(epoch_of(&welcome["pos"]["uid"]));
            clients.push(client);
        }
        (clients, epochs, Backend::connect(cluster.text(0)).await)
    });
    // The slots of the first three uids' streams, each to the next master.
    let moves: Vec<(u16, usize, usize)> = uids[..3]
        .iter()
        .map(|uid| {
            let key = format!("pushhub:{{u:{uid}}}");
            let slot: u16 = nodes[0].cli(&["CLUSTER", "KEYSLOT", &key]).parse().unwrap();
            let from = slot_owner(nodes, slot);
            (slot, from, (from + 1) % nodes.len())
        })
        .collect();
    let mut confirmed: Vec<Vec<u64>> = vec![Vec::new(); uids.len()];
    let mut not_delivered: Vec<Vec<u64>> = vec![Vec::new(); uids.len()];
    let mut unconfirmed = 0;
    std::thread::scope(|scope| {
        let migration = scope.spawn(|| {
            for &(slot, from, to) in &moves {
                move_slot(nodes, slot, from, to);
            }
        });
        run_long(Duration::from_secs(60), async {
            let mut n = 0u64;
            while !migration.is_finished() {
                for (i, uid) in uids.iter().enumerate() {
                    let reply = a.json(json!({"cmd":"push","uid":uid,"data":n})).await;
                    assert_eq!(reply["ok"], true, "{reply}");
                    match reply.get("unconfirmed") {
                        Some(_) => unconfirmed += 1,
                        None if reply["delivered"] == 0 => not_delivered[i].push(n),
                        None => {
                            assert_eq!(reply["delivered"], 1, "{reply}");
                            confirmed[i].push(n);
                        }
                    }
                }
                n += 1;
            }
            // Exact again once the slots have moved.
            for uid in &uids {
                let deadline = Deadline::new(Duration::from_secs(10), format!("{uid} exact"));
                while a.json(json!({"cmd":"push","uid":uid,"data":"end"})).await
                    != json!({"ok":true,"delivered":1})
                {
                    deadline.tick().await;
                }
            }
            for (i, client) in clients.iter_mut().enumerate() {
                let mut last = 0;
                let mut got = Vec::new();
                loop {
                    let msg = v1_frame(client).await;
                    assert_eq!(msg["op"], "msg", "{msg}");
                    let offset = offset_of(&msg["pos"]);
                    assert!(offset > last, "{uid}: {offset} after {last}", uid = uids[i]);
                    last = offset;
                    if msg["d"] == "end" {
                        assert_eq!(epoch_of(&msg["pos"]), epochs[i], "{msg}");
                        break;
                    }
                    got.push(msg["d"].as_u64().unwrap());
                }
                let missing: Vec<&u64> = confirmed[i].iter().filter(|n| !got.contains(n)).collect();
                assert!(
                    missing.is_empty(),
                    "{}: confirmed yet never came: {missing:?}",
                    uids[i]
                );
                let came: Vec<&u64> = not_delivered[i]
                    .iter()
                    .filter(|n| got.contains(n))
                    .collect();
                assert!(
                    came.is_empty(),
                    "{}: said not delivered, yet came: {came:?}",
                    uids[i]
                );
                assert!(got.windows(2).all(|w| w[0] < w[1]), "{}: {got:?}", uids[i]);
            }
        });
        migration.join().unwrap();
    });
    let pushes: usize = confirmed.iter().map(Vec::len).sum();
    let zero: usize = not_delivered.iter().map(Vec::len).sum();
    assert!(pushes > 0, "no push was confirmed during the migration");
    eprintln!(
        "while slots moved: {pushes} pushes delivered, {zero} not delivered, {unconfirmed} unconfirmed"
    );
    for &(slot, _, to) in &moves {
        assert_eq!(slot_owner(nodes, slot), to);
    }
    for hub in &mut cluster.hubs {
        log_mark(hub);
        let links = hub.stderr.iter().filter(|l| l.contains(CONNECTED)).count();
        assert_eq!(links, 1, "{:#?}", hub.stderr);
    }
}

fn epoch_of(pos: &serde_json::Value) -> String {
    let pos = pos
        .as_str()
        .unwrap_or_else(|| panic!("{pos} is no position"));
    pos.split_once(':').unwrap().0.to_string()
}

fn offset_of(pos: &serde_json::Value) -> u64 {
    let pos = pos
        .as_str()
        .unwrap_or_else(|| panic!("{pos} is no position"));
    pos.split_once(':').unwrap().1.parse().unwrap()
}

/// Which of `nodes` serves `slot`, as the first node says.
fn slot_owner(nodes: &[common::redis::Redis], slot: u16) -> usize {
    let ids: Vec<String> = nodes.iter().map(|n| n.cli(&["CLUSTER", "MYID"])).collect();
    let table = nodes[0].cli(&["CLUSTER", "NODES"]);
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let serves = fields.iter().skip(8).any(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            match (first.parse::<u16>(), last.parse::<u16>()) {
                (Ok(first), Ok(last)) => (first..=last).contains(&slot),
                _ => false,
            }
        });
        if serves {
            return ids.iter().position(|id| id == fields[0]).unwrap();
        }
    }
    panic!("nobody serves slot {slot}: {table}");
}

/// Moves `slot` and its keys from `nodes[from]` to `nodes[to]`, as
/// `redis-cli --cluster reshard` does, pausing at each step.
fn move_slot(nodes: &[common::redis::Redis], slot: u16, from: usize, to: usize) {
    let pause = || std::thread::sleep(Duration::from_millis(150));
    let (source, target) = (&nodes[from], &nodes[to]);
    let source_id = source.cli(&["CLUSTER", "MYID"]);
    let target_id = target.cli(&["CLUSTER", "MYID"]);
    let s = slot.to_string();
    assert_eq!(
        target.cli(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id]),
        "OK"
    );
    assert_eq!(
        source.cli(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id]),
        "OK"
    );
    pause();
    loop {
        let keys = source.cli(&["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
        if keys.is_empty() {
            break;
        }
        let port = target.port.to_string();
        let mut command = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        command.extend(keys.lines());
        assert_eq!(source.cli(&command), "OK");
        pause();
    }
    for node in [target, source].into_iter().chain(nodes.iter()) {
        assert_eq!(
            node.cli(&["CLUSTER", "SETSLOT", &s, "NODE", &target_id]),
            "OK"
        );
    }
    pause();
}
