//! `cluster::redis::slots` against a real Redis Cluster of three masters:
//! the map read from `CLUSTER SHARDS` names, for every key, the master
//! that accepts it, and every other master answers with a MOVED that
//! `redirect` reads back to that master; a migrating slot's ASK too.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use common::STEP;
use common::redis::RedisCluster;
use pushhub::cluster::redis::resp::{self, Frame, Input};
use pushhub::cluster::redis::slots::{Redirect, SLOTS, ShardAddr, SlotMap, redirect, slot};

/// Sends one command over a fresh connection and returns its reply.
fn ask(port: u16, args: &[&[u8]]) -> Frame {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut out = BytesMut::new();
    resp::command(&mut out, args);
    stream.write_all(&out).unwrap();
    let mut input = Input::new(1 << 20);
    const CHUNK: usize = 16 * 1024;
    loop {
        if let Some(frame) = input.next_frame().unwrap() {
            return frame;
        }
        let n = stream.read(input.spare(CHUNK)).unwrap();
        assert!(n > 0, "port {port} closed before replying to {args:?}");
        input.filled(CHUNK, n);
    }
}

fn shard_map(port: u16) -> SlotMap {
    SlotMap::from_shards(&ask(port, &[b"CLUSTER", b"SHARDS"])).unwrap()
}

fn error_text(frame: &Frame) -> &str {
    match frame {
        Frame::Error(text) => text,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn the_shard_map_names_the_master_that_takes_each_key() {
    let cluster = RedisCluster::start(3);
    let map = shard_map(cluster.nodes[0].port);

    let ports: BTreeSet<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let masters: Vec<&ShardAddr> = map.masters().collect();
    assert_eq!(masters.len(), 3, "{masters:?}");
    assert!(masters.iter().all(|m| m.host == "127.0.0.1"), "{masters:?}");
    assert_eq!(
        masters.iter().map(|m| m.port).collect::<BTreeSet<_>>(),
        ports
    );

    // The harness gives node i the i-th third of the slots, and every
    // node tells the same story.
    let others: Vec<SlotMap> = cluster.nodes[1..]
        .iter()
        .map(|n| shard_map(n.port))
        .collect();
    for s in 0..SLOTS {
        let owner = map
            .master_for(s)
            .unwrap_or_else(|| panic!("slot {s} uncovered"));
        let n = cluster.nodes.len();
        let third = (0..n)
            .rfind(|i| i * usize::from(SLOTS) / n <= usize::from(s))
            .unwrap();
        assert_eq!(owner.port, cluster.nodes[third].port, "slot {s}");
        for other in &others {
            assert_eq!(other.master_for(s), Some(owner), "slot {s}");
        }
    }

    let keys = [
        "pushhub:{u:u1}",
        "pushhub:{c:news}",
        "pushhub:{u:u2}",
        "foo",
        "{user1000}.following",
    ];
    let mut owners = BTreeSet::new();
    for key in keys {
        let s = slot(key.as_bytes());
        let owner = map.master_for(s).unwrap();
        owners.insert(owner.port);
        let set: [&[u8]; 3] = [b"SET", key.as_bytes(), b"v"];
        assert_eq!(
            ask(owner.port, &set),
            Frame::SimpleString("OK".into()),
            "{key} (slot {s}) at {owner}"
        );
        for master in map.masters().filter(|m| *m != owner) {
            let reply = ask(master.port, &set);
            assert_eq!(
                redirect(error_text(&reply).as_bytes()),
                Some(Redirect::Moved {
                    slot: s,
                    addr: owner.to_string()
                }),
                "{key} at {master}: {reply:?}"
            );
        }
    }
    // Otherwise the MOVED checks above would prove little.
    assert!(owners.len() >= 2, "every key landed on {owners:?}");
}

#[test]
fn a_migrating_slot_answers_ask_for_keys_it_no_longer_holds() {
    let cluster = RedisCluster::start(3);
    let map = shard_map(cluster.nodes[0].port);
    let key = b"pushhub:{u:migrating}";
    let s = slot(key);
    let source = map.master_for(s).unwrap();
    let target = map.masters().find(|m| *m != source).unwrap();
    let node = |addr: &ShardAddr| cluster.nodes.iter().find(|n| n.port == addr.port).unwrap();
    let target_id = node(target).cli(&["cluster", "myid"]);
    let slot_text = s.to_string();
    assert_eq!(
        node(source).cli(&["cluster", "setslot", &slot_text, "migrating", &target_id]),
        "OK"
    );
    // The key is not on the source, so the source sends the client on.
    let reply = ask(source.port, &[b"GET", key]);
    assert_eq!(
        redirect(error_text(&reply).as_bytes()),
        Some(Redirect::Ask {
            slot: s,
            addr: target.to_string()
        }),
        "{reply:?}"
    );
    // Until the migration ends, the map still names the source.
    assert_eq!(shard_map(source.port).master_for(s), Some(source));
}
