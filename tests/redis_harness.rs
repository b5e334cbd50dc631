//! The Redis harness of the cluster tests (tests/common/redis.rs) does what
//! they rely on: real servers on free ports that answer, die, come back on the
//! same port, freeze, ask for a password, listen on a unix socket, leave
//! nothing behind, and form a cluster.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::STEP;
use common::redis::{Redis, RedisCluster};
use rustix::process::{Pid, test_kill_process};

/// Sends an inline PING and reads one reply (under the stream's read timeout).
fn ping(stream: &mut (impl Read + Write)) -> String {
    stream.write_all(b"PING\r\n").unwrap();
    read_reply(stream)
}

fn read_reply(stream: &mut impl Read) -> String {
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A TCP connection to `redis`, whose reads wait at most [`STEP`].
fn connect(redis: &Redis) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream
}

#[test]
fn a_server_answers_as_itself_and_keeps_nothing_on_disk() {
    let redis = Redis::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port));
    assert_eq!(redis.cli(&["ping"]), "PONG");
    let info = redis.cli(&["info", "server"]);
    assert!(
        info.contains(&format!("process_id:{}", redis.pid())),
        "{info}"
    );
    assert_eq!(redis.cli(&["config", "get", "save"]), "save");
    assert_eq!(
        redis.cli(&["config", "get", "appendonly"]),
        "appendonly\nno"
    );
    assert_eq!(
        redis
            .cli(&["config", "get", "cluster-enabled"])
            .lines()
            .last(),
        Some("no")
    );
}

#[test]
fn two_servers_get_two_ports_and_two_directories() {
    let (a, b) = (Redis::start(), Redis::start());
    assert_ne!(a.port, b.port);
    assert_ne!(a.dir, b.dir);
    assert_ne!(a.port, 6379);
}

#[test]
fn a_killed_server_refuses_connections_and_restarts_on_its_port() {
    let mut redis = Redis::start();
    let (port, pid) = (redis.port, redis.pid());
    redis.cli(&["set", "k", "v"]);

    redis.kill();
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert!(test_kill_process(Pid::from_raw(pid as i32).unwrap()).is_err());
    redis.kill();

    redis.restart();
    assert_eq!(redis.port, port);
    assert_ne!(redis.pid(), pid);
    assert_eq!(redis.cli(&["ping"]), "PONG");
    // Nothing was saved: a restart is a fresh, empty server.
    assert_eq!(redis.cli(&["exists", "k"]), "0");
}

#[test]
fn a_paused_server_is_silent_until_resumed() {
    let redis = Redis::start();
    let mut stream = connect(&redis);
    assert_eq!(ping(&mut stream), "+PONG\r\n");

    redis.pause();
    // The kernel still accepts a connection; nobody reads it.
    let mut late = connect(&redis);
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 16];
    let silent = stream.read(&mut buf).unwrap_err();
    assert!(
        matches!(silent.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{silent}"
    );

    redis.resume();
    stream.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(read_reply(&mut stream), "+PONG\r\n");
    assert_eq!(ping(&mut late), "+PONG\r\n");
}

#[test]
fn a_server_with_a_password_refuses_strangers_and_cli_authenticates() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    assert_eq!(redis.cli(&["ping"]), "PONG");
    let mut stream = connect(&redis);
    let reply = ping(&mut stream);
    assert!(reply.starts_with("-NOAUTH"), "{reply}");
}

#[test]
fn a_server_listens_on_a_unix_socket_only_its_owner_may_open() {
    let redis = Redis::start();
    let path = redis.unix_path();
    assert!(path.starts_with(&redis.dir));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(ping(&mut stream), "+PONG\r\n");
}

#[test]
fn dropping_a_server_kills_it_and_removes_its_directory() {
    let redis = Redis::start();
    let (pid, dir, port) = (redis.pid(), redis.dir.clone(), redis.port);
    // Even a frozen one.
    redis.pause();
    drop(redis);
    assert!(test_kill_process(Pid::from_raw(pid as i32).unwrap()).is_err());
    assert!(!dir.exists());
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn a_cluster_of_three_masters_shares_the_slots_and_routes_keys() {
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.url(), cluster.nodes[0].url());
    for node in &cluster.nodes {
        let info = node.cli(&["cluster", "info"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        let nodes = node.cli(&["cluster", "nodes"]);
        let masters = nodes.lines().filter(|l| l.contains("master")).count();
        assert_eq!(masters, 3, "{nodes}");
        assert!(!nodes.contains("fail"), "{nodes}");
    }
    // -c follows MOVED: a key set through one node is read through another.
    let (first, last) = (&cluster.nodes[0], &cluster.nodes[2]);
    for i in 0..10 {
        let key = format!("key{i}");
        assert_eq!(first.cli(&["-c", "set", &key, "v"]), "OK");
        assert_eq!(last.cli(&["-c", "get", &key]), "v");
    }
}

#[test]
fn a_restarted_cluster_node_is_the_same_node() {
    let mut cluster = RedisCluster::start(3);
    let id = cluster.nodes[1].cli(&["cluster", "myid"]);
    cluster.nodes[1].kill();
    cluster.nodes[1].restart();
    assert_eq!(cluster.nodes[1].cli(&["cluster", "myid"]), id);
    cluster.wait_ok();
}
