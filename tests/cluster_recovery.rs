//! Positions and recovery across hubs, with real hub processes on a real
//! redis-server: every hub gives a message the same position (Redis's);
//! a v1 client that drops from one hub and comes back on another with
//! `since` gets what it missed of each stream, in order and once, then
//! the live messages, even while messages keep coming at the seam; a gap
//! is said; a client's own publication goes through Redis too; while
//! Redis is away, no position is made up.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::Redis;
use common::*;
use pushhub::auth::{Grants, mint_with_grants};
use pushhub::channel::Pattern;
use pushhub::time::unix_now;
use serde_json::{Value, json};
use smol::Timer;

async fn sub(client: &mut Client, ch: &str, since: Option<&str>) -> Value {
    let mut sub = json!({"op":"sub","ch":ch});
    if let Some(since) = since {
        sub["since"] = json!(since);
    }
    send_text(client, &sub.to_string()).await;
    let subbed = v1_frame(client).await;
    assert_eq!(subbed["op"], "subbed", "{subbed}");
    subbed
}

/// A position's epoch and offset.
fn pos(value: &Value) -> (String, u64) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no position"));
    let (epoch, offset) = text.split_once(':').unwrap();
    (epoch.to_string(), offset.parse().unwrap())
}

/// Hubs a and b, with v1 channels anyone may join.
fn two_hubs() -> Cluster {
    Cluster::start_with(&["a", "b"], &["--public-channel", "news"])
}

/// Pushes pipelined to ten uids at once go to Redis in a few script runs,
/// not one per push: each is still answered, and each uid's messages
/// arrive in order with consecutive positions.
#[test]
fn pipelined_pushes_share_script_runs_and_keep_their_positions() {
    let cluster = two_hubs();
    run(async {
        let [mut a, _b] = cluster.backends().await;
        let mut clients = Vec::new();
        for i in 0..10 {
            let mut client = v1_connect(cluster.ws(1)).await;
            let welcome = v1_auth(&mut client, &format!("u{i}"), Value::Null).await;
            clients.push((client, pos(&welcome["pos"]["uid"])));
        }
        let before = evalsha_calls(&cluster.redis);
        let mut lines = String::new();
        for n in 0..20 {
            for i in 0..10 {
                let push = json!({"cmd":"push","uid":format!("u{i}"),"data":n,"id":n * 10 + i});
                lines.push_str(&format!("{push}\n"));
            }
        }
        a.send(lines.as_bytes()).await;
        for n in 0..200 {
            let reply: Value = serde_json::from_str(&a.line().await).unwrap();
            assert_eq!(reply, json!({"ok":true,"id":n,"delivered":1}));
        }
        for (client, (epoch, start)) in &mut clients {
            for n in 0..20u64 {
                let msg = v1_frame(client).await;
                assert_eq!(msg["d"], n, "{msg}");
                assert_eq!(pos(&msg["pos"]), (epoch.clone(), *start + n + 1), "{msg}");
            }
        }
        let runs = evalsha_calls(&cluster.redis) - before;
        assert!(runs < 100, "{runs} script runs for 200 pushes");
    });
}

/// How many `EVALSHA`s Redis has run.
fn evalsha_calls(redis: &Redis) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn every_hub_gives_a_message_the_same_position() {
    let cluster = two_hubs();
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        let mut on_a = v1_connect(cluster.ws(0)).await;
        let welcome_a = v1_auth(&mut on_a, "u1", Value::Null).await;
        let mut on_b = v1_connect(cluster.ws(1)).await;
        let welcome_b = v1_auth(&mut on_b, "u1", Value::Null).await;
        // One stream, wherever it is read from.
        assert_eq!(welcome_a["pos"]["uid"], welcome_b["pos"]["uid"]);
        assert_eq!(welcome_a["pos"]["all"], welcome_b["pos"]["all"]);
        let (epoch, start) = pos(&welcome_a["pos"]["uid"]);
        for i in 1..=3u64 {
            let backend = if i % 2 == 0 { &mut a } else { &mut b };
            ask!(backend, {"cmd":"push","uid":"u1","data":i} => {"ok":true,"delivered":2});
            for client in [&mut on_a, &mut on_b] {
                let msg = v1_frame(client).await;
                assert_eq!(msg["d"], json!(i));
                assert_eq!(pos(&msg["pos"]), (epoch.clone(), start + i), "{msg}");
            }
        }
        // The original form is a message of the uid's stream too.
        let reply = a.request(r#"{"uid":"u1","n":4}"#).await;
        assert_eq!(reply, "ok");
        for client in [&mut on_a, &mut on_b] {
            let msg = v1_frame(client).await;
            assert_eq!(pos(&msg["pos"]), (epoch.clone(), start + 4), "{msg}");
        }
    });
}

#[test]
fn a_clients_publication_goes_through_redis_to_every_hub() {
    let raw = std::str::from_utf8(SECRET).unwrap();
    let env = [("PUSHHUB_SECRET", raw)];
    let cluster = Cluster::with(Redis::start(), &["a", "b"], &[], &env);
    let token = |uid: &str| {
        let grants = Grants {
            channels: vec![Pattern::parse("news").unwrap()],
            publish: vec![Pattern::parse("news").unwrap()],
            subs: Vec::new(),
        };
        mint_with_grants(&secret(), uid, unix_now() + 3600, &grants)
    };
    run(async {
        let mut on_a = v1_connect(cluster.ws(0)).await;
        let mut on_b = v1_connect(cluster.ws(1)).await;
        for (client, uid) in [(&mut on_a, "alice"), (&mut on_b, "bob")] {
            let auth = json!({"op":"auth","token":token(uid)});
            send_text(client, &auth.to_string()).await;
            assert_eq!(v1_frame(client).await["op"], "welcome");
        }
        sub(&mut on_a, "news", None).await;
        let subbed = sub(&mut on_b, "news", None).await;
        let (epoch, start) = pos(&subbed["pos"]);
        // Every hub's subscribers get it, at one position, and pubbed sums
        // them.
        let publish = json!({"op":"pub","ch":"news","d":{"x":1},"id":7});
        send_text(&mut on_a, &publish.to_string()).await;
        let mut got = Vec::new();
        // The publisher gets its answer and its own message, in either order.
        for (client, frames) in [(&mut on_a, 2), (&mut on_b, 1)] {
            for _ in 0..frames {
                let frame = v1_frame(client).await;
                if frame["op"] == "pubbed" {
                    assert_eq!(
                        frame,
                        json!({"op":"pubbed","ch":"news","delivered":2,"id":7})
                    );
                    continue;
                }
                assert_eq!(frame["op"], "msg", "{frame}");
                assert_eq!(frame["d"], json!({"x":1}));
                got.push(pos(&frame["pos"]));
            }
        }
        assert_eq!(got, vec![(epoch.clone(), start + 1); 2]);
        // Without an id, no answer; the message still goes everywhere.
        let publish = json!({"op":"pub","ch":"news","d":"quiet"});
        send_text(&mut on_b, &publish.to_string()).await;
        for client in [&mut on_a, &mut on_b] {
            let msg = v1_frame(client).await;
            assert_eq!(
                (&msg["d"], pos(&msg["pos"])),
                (&json!("quiet"), (epoch.clone(), start + 2))
            );
        }
    });
}

#[test]
fn a_client_recovers_on_another_hub_what_it_missed() {
    let cluster = two_hubs();
    run(async {
        let [mut a, mut b] = cluster.backends().await;
        let mut client = v1_connect(cluster.ws(0)).await;
        let welcome = v1_auth(&mut client, "u1", Value::Null).await;
        let subbed = sub(&mut client, "news", None).await;
        ask!(b, {"cmd":"push","uid":"u1","data":"seen"} => {"ok":true,"delivered":1});
        let seen = v1_frame(&mut client).await;
        assert_eq!(seen["d"], "seen");
        let since_uid = seen["pos"].clone();
        let since_all = welcome["pos"]["all"].clone();
        let since_news = subbed["pos"].clone();
        drop(client);
        // Gone from a: wait until no hub counts it.
        wait_offline(&mut b, "u1").await;
        for i in 0..3 {
            ask!(a, {"cmd":"push","uid":"u1","data":i} => {"ok":true,"delivered":0});
        }
        ask!(b, {"cmd":"publish","ch":"news","data":"n1"} => {"ok":true,"delivered":0});
        ask!(a, {"cmd":"broadcast","data":"all1"} => {"ok":true,"delivered":0});
        // Back, on b.
        let mut client = v1_connect(cluster.ws(1)).await;
        let welcome = v1_auth(&mut client, "u1", json!({"uid":since_uid,"all":since_all})).await;
        assert_eq!(
            welcome["recovered"],
            json!({"uid":true,"all":true}),
            "{welcome}"
        );
        let (epoch, last) = pos(&since_uid);
        assert_eq!(pos(&welcome["pos"]["uid"]), (epoch.clone(), last + 3));
        let mut uid_msgs = Vec::new();
        let mut all_msgs = Vec::new();
        for _ in 0..4 {
            let msg = v1_frame(&mut client).await;
            match msg["all"] == json!(true) {
                true => all_msgs.push(msg["d"].clone()),
                false => {
                    assert_eq!(
                        pos(&msg["pos"]),
                        (epoch.clone(), last + 1 + uid_msgs.len() as u64)
                    );
                    uid_msgs.push(msg["d"].clone());
                }
            }
        }
        assert_eq!(uid_msgs, vec![json!(0), json!(1), json!(2)]);
        assert_eq!(all_msgs, vec![json!("all1")]);
        let subbed = sub(&mut client, "news", since_news.as_str()).await;
        assert_eq!(subbed["recovered"], json!(true), "{subbed}");
        let msg = v1_frame(&mut client).await;
        assert_eq!((&msg["ch"], &msg["d"]), (&json!("news"), &json!("n1")));
        assert_eq!(msg["pos"], subbed["pos"]);
        // Then live, after what was recovered.
        ask!(a, {"cmd":"push","uid":"u1","data":"live"} => {"ok":true,"delivered":1});
        let msg = v1_frame(&mut client).await;
        assert_eq!(msg["d"], "live");
        assert_eq!(pos(&msg["pos"]), (epoch.clone(), last + 4));
    });
}

#[test]
fn a_gap_is_said_and_the_client_starts_from_where_the_stream_stands() {
    let cluster = Cluster::start_with(&["a", "b"], &["--history-size-uid", "2"]);
    run(async {
        let [mut a, _b] = cluster.backends().await;
        let mut client = v1_connect(cluster.ws(0)).await;
        let welcome = v1_auth(&mut client, "u2", Value::Null).await;
        let since = welcome["pos"]["uid"].clone();
        drop(client);
        wait_offline(&mut a, "u2").await;
        // Three missed where two are kept.
        for i in 0..3 {
            a.json(json!({"cmd":"push","uid":"u2","data":i})).await;
        }
        let mut client = v1_connect(cluster.ws(1)).await;
        let welcome = v1_auth(&mut client, "u2", json!({"uid":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        let (epoch, _) = pos(&since);
        assert_eq!(pos(&welcome["pos"]["uid"]), (epoch.clone(), 3));
        // A position of an epoch that never was.
        let mut other = v1_connect(cluster.ws(1)).await;
        let welcome = v1_auth(&mut other, "u2", json!({"uid":"123abc:1"})).await;
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        // Nothing was replayed to either: the next frame is live.
        ask!(a, {"cmd":"push","uid":"u2","data":"next"} => {"ok":true,"delivered":2});
        for c in [&mut client, &mut other] {
            let msg = v1_frame(c).await;
            assert_eq!(msg["d"], "next");
            assert_eq!(pos(&msg["pos"]), (epoch.clone(), 4));
        }
    });
}

/// Messages keep coming while the client hops from hub to hub, each time
/// with the last position it saw: it gets every one, once, in order.
#[test]
fn nothing_is_lost_or_doubled_at_the_seam_while_messages_keep_coming() {
    const N: u64 = 400;
    let cluster = two_hubs();
    run_long(Duration::from_secs(60), async {
        let [mut a, mut b] = cluster.backends().await;
        let pusher = async {
            for i in 1..=N {
                let backend = if i % 3 == 0 { &mut b } else { &mut a };
                let reply = backend
                    .json(json!({"cmd":"push","uid":"u3","data":i}))
                    .await;
                assert_eq!(reply["ok"], json!(true), "{reply}");
                if i % 4 == 0 {
                    Timer::after(Duration::from_millis(1)).await;
                }
            }
        };
        let hopper = async {
            let mut seen: Vec<u64> = Vec::new();
            let mut log: Vec<String> = Vec::new();
            let mut since = Value::Null;
            let mut hops = 0;
            let deadline = Instant::now() + Duration::from_secs(40);
            while seen.last() != Some(&N) {
                assert!(Instant::now() < deadline, "stuck at {:?}", seen.last());
                let mut client = v1_connect(cluster.ws(hops % 2)).await;
                hops += 1;
                let welcome = match &since {
                    Value::Null => v1_auth(&mut client, "u3", Value::Null).await,
                    s => v1_auth(&mut client, "u3", json!({"uid":s})).await,
                };
                log.push(format!("hop {hops} since {since}: {welcome}"));
                if !since.is_null() {
                    assert_eq!(welcome["recovered"], json!({"uid":true}), "{welcome}");
                }
                // A few messages on this hub, then on to the other.
                let stay = Instant::now() + Duration::from_millis(40);
                while Instant::now() < stay && seen.last() != Some(&N) {
                    let next =
                        smol::future::or(async { Some(v1_frame(&mut client).await) }, async {
                            Timer::after(Duration::from_millis(20)).await;
                            None
                        });
                    let Some(msg) = next.await else { continue };
                    assert_eq!(msg["op"], "msg", "{msg}");
                    seen.push(msg["d"].as_u64().unwrap());
                    log.push(format!("  {msg}"));
                    since = msg["pos"].clone();
                }
            }
            (seen, hops, log)
        };
        let ((), (seen, hops, log)) = smol::future::zip(pusher, hopper).await;
        let first = seen[0];
        let expected: Vec<u64> = (first..=N).collect();
        if seen != expected {
            let at = seen.iter().zip(&expected).position(|(a, b)| a != b);
            panic!(
                "after {hops} hops, first difference at {at:?}:\n{}",
                log.join("\n")
            );
        }
        assert!(hops >= 3, "only {hops} hops");
    });
}

#[test]
fn without_redis_no_position_is_made_up_and_local_delivery_goes_on() {
    let redis = Redis::start();
    let mut cluster = Cluster::with(redis, &["a"], &["--allow-plain-uid"], &[]);
    run(async {
        let mut a = Backend::connect(cluster.text(0)).await;
        cluster.redis.kill();
        wait_redis_state(&mut a, "down", Duration::from_secs(5)).await;
        let mut client = v1_connect(cluster.ws(0)).await;
        let welcome = v1_auth(&mut client, "u4", json!({"uid":"ab:1"})).await;
        assert!(
            welcome.get("pos").is_none_or(|p| p.get("uid").is_none()),
            "{welcome}"
        );
        assert_eq!(welcome["recovered"], json!({"uid":false}), "{welcome}");
        let reply = a.json(json!({"cmd":"push","uid":"u4","data":1})).await;
        assert_eq!(reply, json!({"ok":true,"delivered":1,"unconfirmed":true}));
        let msg = v1_frame(&mut client).await;
        assert_eq!(msg["d"], json!(1));
        assert!(msg.get("pos").is_none(), "{msg}");
    });
}

#[test]
fn history_in_redis_is_bounded_and_expires_with_its_ttl() {
    let flags = ["--history-ttl", "2s", "--history-size-uid", "3"];
    let cluster = Cluster::start_with(&["a"], &flags);
    run(async {
        let mut a = Backend::connect(cluster.text(0)).await;
        for i in 0..100 {
            ask!(a, {"cmd":"push","uid":"u5","data":i} => {"ok":true,"delivered":0});
        }
        // The TTL and an eighth: the expiry is pushed back every eighth.
        for key in ["pushhub:{u:u5}:s", "pushhub:{u:u5}:l"] {
            let ttl = cluster.redis.cli(&["PTTL", key]);
            let ms: i64 = ttl.trim().parse().unwrap_or(-3);
            assert!((1..=2250).contains(&ms), "{key}: PTTL {ttl}");
        }
        // Trimmed to its size once it holds 32 more.
        let len: usize = cluster
            .redis
            .cli(&["LLEN", "pushhub:{u:u5}:l"])
            .trim()
            .parse()
            .unwrap();
        assert!((3..=35).contains(&len), "{len} kept");
        // "<ms> <the line as it came>"
        let last = cluster.redis.cli(&["LINDEX", "pushhub:{u:u5}:l", "-1"]);
        let (ms, line) = last.trim().split_once(' ').unwrap();
        assert!(ms.parse::<u64>().unwrap() > 1_700_000_000_000, "{last}");
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line, json!({"cmd":"push","uid":"u5","data":99}));
        // A client recovers the last three, and is told the rest is gone.
        let mut client = v1_connect(cluster.ws(0)).await;
        let welcome = v1_auth(&mut client, "u5", Value::Null).await;
        let (epoch, last) = pos(&welcome["pos"]["uid"]);
        assert_eq!(last, 100);
        drop(client);
        for (since, recovered) in [(97, true), (96, false)] {
            let mut client = v1_connect(cluster.ws(0)).await;
            let since = format!("{epoch}:{since}");
            let welcome = v1_auth(&mut client, "u5", json!({"uid":since})).await;
            assert_eq!(welcome["recovered"], json!({"uid":recovered}), "{welcome}");
        }
        // A state someone damaged in Redis: the scripts still answer.
        assert_eq!(
            cluster.redis.cli(&["HDEL", "pushhub:{u:u5}:s", "b", "r"]),
            "2"
        );
        ask!(a, {"cmd":"push","uid":"u5","data":"on"} => {"ok":true,"delivered":0});
        let mut client = v1_connect(cluster.ws(0)).await;
        let welcome = v1_auth(&mut client, "u5", Value::Null).await;
        assert_eq!(pos(&welcome["pos"]["uid"]).0, epoch, "{welcome}");
    });
}

/// A hub killed with SIGKILL: its client reconnects to another and
/// recovers what was pushed meanwhile, the history being in Redis.
#[test]
fn a_client_of_a_killed_hub_recovers_on_another() {
    let mut cluster = two_hubs();
    let (mut b, since, _client) = run(async {
        let b = Backend::connect(cluster.text(1)).await;
        let mut client = v1_connect(cluster.ws(0)).await;
        let welcome = v1_auth(&mut client, "u6", Value::Null).await;
        (b, welcome["pos"]["uid"].clone(), client)
    });
    cluster.hubs[0].child.kill().unwrap();
    cluster.hubs[0].wait(STEP);
    run(async {
        // Once no hub counts a's connection, pushes say so.
        let deadline = Deadline::new(Duration::from_secs(3), "a's client counted off");
        while b.json(json!({"cmd":"push","uid":"u6","data":"m0"})).await["delivered"] != json!(0) {
            deadline.tick().await;
        }
        ask!(b, {"cmd":"push","uid":"u6","data":"m1"} => {"ok":true,"delivered":0});
        let mut client = v1_connect(cluster.ws(1)).await;
        let welcome = v1_auth(&mut client, "u6", json!({"uid":since})).await;
        assert_eq!(welcome["recovered"], json!({"uid":true}), "{welcome}");
        let mut got = Vec::new();
        loop {
            let msg = v1_frame(&mut client).await;
            got.push(msg["d"].as_str().unwrap().to_string());
            if msg["pos"] == welcome["pos"]["uid"] {
                break;
            }
        }
        // Every push made while a was dying or dead (some m0 may have
        // reached a before it died: all of them are here, once).
        assert_eq!(got.last().map(String::as_str), Some("m1"), "{got:?}");
        assert!(got[..got.len() - 1].iter().all(|m| m == "m0"), "{got:?}");
    });
}

/// A push with `ack_timeout` entering one hub, for a v1 client of another:
/// the reply says acked once the client acknowledged it there, and not
/// acked when it did not in time or nobody took it.
#[test]
fn an_ack_on_one_hub_settles_a_push_that_entered_another() {
    let cluster = two_hubs();
    run(async {
        let [mut a, _b] = cluster.backends().await;
        let mut client = v1_connect(cluster.ws(1)).await;
        v1_auth(&mut client, "u7", Value::Null).await;
        let push = |data: &str, timeout: &str| json!({"cmd":"push","uid":"u7","data":data,"ack_timeout":timeout});
        a.send(format!("{}\n", push("ack me", "5s")).as_bytes())
            .await;
        let msg = v1_frame(&mut client).await;
        assert_eq!(msg["d"], "ack me");
        let ack = json!({"op":"ack","pos":msg["pos"]});
        send_text(&mut client, &ack.to_string()).await;
        let reply: Value = serde_json::from_str(&a.line().await).unwrap();
        assert_eq!(reply, json!({"ok":true,"delivered":1,"acked":true}));
        // Not acknowledged in time.
        let (reply, took) = timed(a.json(push("ignored", "300ms"))).await;
        assert_eq!(reply, json!({"ok":true,"delivered":1,"acked":false}));
        assert!(took >= std::time::Duration::from_millis(300), "{took:?}");
        let late = v1_frame(&mut client).await;
        send_text(
            &mut client,
            &json!({"op":"ack","pos":late["pos"]}).to_string(),
        )
        .await;
        // Nobody to take it: at once.
        let reply = a
            .json(json!({"cmd":"push","uid":"nobody","data":1,"ack_timeout":"5s"}))
            .await;
        assert_eq!(reply, json!({"ok":true,"delivered":0,"acked":false}));
        let reply = a
            .json(json!({"cmd":"push","uids":["u7","x"],"data":1,"ack_timeout":"5s"}))
            .await;
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("one uid"),
            "{reply}"
        );
    });
}
