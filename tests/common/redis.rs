//! Real `redis-server` processes for the cluster tests: a standalone server
//! ([`Redis`]) or a cluster of masters ([`RedisCluster`]), each server on a
//! free 127.0.0.1 port with a scratch directory of its own, killed by pid when
//! dropped. Servers keep nothing on disk (`--save ''`, no AOF) but a cluster
//! node's `nodes.conf`, so a restarted node is the same node.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition until a
//! deadline, and a server that never comes up panics with its log's tail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::{STEP, Scratch};

/// The bound on a server's start, from spawning it to its first answer.
const READY: Duration = Duration::from_secs(10);

/// The bound on a new cluster agreeing on its slots (gossip between the nodes).
const CLUSTER_OK: Duration = Duration::from_secs(20);

/// How many ports a start tries: another process may take a port between our
/// finding it free and the server binding it.
const ATTEMPTS: usize = 5;

/// A cluster node's bus listens on its port + 10000.
const BUS_OFFSET: u16 = 10000;

const SLOTS: usize = 16384;

/// Makes scratch directories unique among the servers of one test binary.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` child process on 127.0.0.1:`port`, also listening on
/// [`Redis::unix_path`].
pub struct Redis {
    pub port: u16,
    /// Its scratch directory: the log, the unix socket, a cluster node's `nodes.conf`.
    pub dir: PathBuf,
    child: Option<Child>,
    /// The arguments given to `start_with`, kept for `restart`.
    extra: Vec<String>,
    cluster: bool,
    /// `--requirepass`'s value, for `cli` and the readiness probe.
    password: Option<String>,
    /// Removes `dir`; a field, so it is dropped after `drop` has killed the process.
    scratch: Scratch,
}

/// Why a server did not come up on its port.
struct PortTaken;

impl Redis {
    /// A standalone server on a free port.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A standalone server with `args` after the harness's own (so they override them),
    /// e.g. `["--requirepass", "s3cret"]`.
    pub fn start_with(args: &[&str]) -> Redis {
        Redis::launch(args, false)
    }

    fn launch(args: &[&str], cluster: bool) -> Redis {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let scratch = Scratch::new(&format!("redis-{n}"));
        let password = args
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| args.get(i + 1))
            .map(|p| p.to_string());
        let mut redis = Redis {
            port: 0,
            dir: scratch.0.clone(),
            child: None,
            extra: args.iter().map(|a| a.to_string()).collect(),
            cluster,
            password,
            scratch,
        };
        let socket = redis.unix_path();
        // sun_path holds 108 bytes with its NUL; a longer path fails only at bind.
        assert!(
            socket.as_os_str().len() < 108,
            "the unix socket's path {} is too long: set TMPDIR to a shorter directory",
            socket.display()
        );
        for attempt in 1..=ATTEMPTS {
            redis.port = free_port(cluster);
            match redis.spawn() {
                Ok(()) => return redis,
                Err(PortTaken) if attempt < ATTEMPTS => {}
                Err(PortTaken) => panic!(
                    "redis-server found its port taken {ATTEMPTS} times; last log:\n{}",
                    redis.log_tail()
                ),
            }
        }
        unreachable!()
    }

    /// Spawns the server on `self.port` and waits until it answers as itself.
    fn spawn(&mut self) -> Result<(), PortTaken> {
        let log = self.dir.join("redis.log");
        // The log is shared by every start in this directory: judge only this start's lines.
        let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .unwrap();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .arg("--unixsocket")
            .arg(self.unix_path())
            .args(["--unixsocketperm", "700"]);
        if self.cluster {
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(self.dir.join("nodes.conf"));
        }
        let child = command
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server (is it installed?): {e}"));
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + READY;
        loop {
            // Whoever answers must be our process: another server may hold the port.
            match self.answering_pid() {
                Some(answering) if answering == pid => return Ok(()),
                Some(_) => {
                    self.kill();
                    return Err(PortTaken);
                }
                None => {}
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                let this_start = std::fs::read_to_string(&log)
                    .map(|l| l.get(log_start as usize..).unwrap_or_default().to_string())
                    .unwrap_or_default();
                if this_start.contains("Address already in use") {
                    return Err(PortTaken);
                }
                panic!(
                    "redis-server on port {} exited ({status}) before answering:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "redis-server on port {} did not answer within {READY:?}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The unix socket the server also listens on (mode 700); as a URL, `unix://` and this path.
    pub fn unix_path(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The running server's pid; panics if it was killed and not restarted.
    pub fn pid(&self) -> u32 {
        self.running().id()
    }

    /// SIGKILL, then waits for the exit. Nothing happens if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same arguments and
    /// directory (a cluster node keeps its identity), killing it first if it
    /// still runs; returns once it answers.
    pub fn restart(&mut self) {
        self.kill();
        if self.spawn().is_err() {
            panic!(
                "redis-server cannot restart: port {} was taken meanwhile",
                self.port
            );
        }
    }

    /// SIGSTOP: the kernel still accepts connections, the server answers nothing.
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// SIGCONT, after [`Redis::pause`].
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(self.running()), signal).unwrap();
    }

    fn running(&self) -> &Child {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("redis-server on port {} is not running", self.port))
    }

    /// Runs `redis-cli` against this server (authenticated if it was started
    /// with `--requirepass`) and returns its stdout, trimmed. Panics if
    /// redis-cli fails (it cannot connect) or takes longer than [`STEP`]. An
    /// error reply is not a failure for redis-cli: it is returned, e.g. "ERR ...".
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it installed?): {e}"));
        let pid = Pid::from_child(&child);
        // Read on a thread: a large reply must not fill the pipe while we wait on a deadline.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(STEP) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                let _ = kill_process(pid, Signal::KILL);
                panic!(
                    "redis-cli {args:?} on port {} took over {STEP:?}",
                    self.port
                );
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "redis-cli {args:?} on port {} failed ({}): {}{}",
            self.port,
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        stdout.trim().to_string()
    }

    /// The pid in the `INFO server` of whatever answers on the port, if anything does.
    fn answering_pid(&self) -> Option<u32> {
        let info = self.raw(&[&["INFO", "server"]])?;
        let line = info.lines().find_map(|l| l.strip_prefix("process_id:"))?;
        line.trim().parse().ok()
    }

    /// Sends `commands` (after AUTH, when there is a password) over a fresh
    /// connection and returns every reply, raw RESP, up to the server closing
    /// it (QUIT); `None` if nothing answers in time. Quicker than `cli` for polling.
    fn raw(&self, commands: &[&[&str]]) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let mut request = Vec::new();
        if let Some(password) = &self.password {
            resp(&mut request, &["AUTH", password]);
        }
        for command in commands {
            resp(&mut request, command);
        }
        resp(&mut request, &["QUIT"]);
        stream.write_all(&request).ok()?;
        let mut replies = Vec::new();
        stream.read_to_end(&mut replies).ok()?;
        Some(String::from_utf8_lossy(&replies).into_owned())
    }

    /// The last lines of the server's log and its stderr, for a panic message.
    fn log_tail(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let log = read("redis.log");
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!(
            "--- redis.log (tail) ---\n{tail}\n--- stderr ---\n{}",
            read("stderr.log")
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command as a RESP array of bulk strings: arguments may hold spaces.
fn resp(out: &mut Vec<u8>, parts: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(format!("${}\r\n{part}\r\n", part.len()).as_bytes());
    }
}

/// A port free on 127.0.0.1 at this moment; for a cluster node, one whose bus
/// port (+10000) exists and is free too.
fn free_port(bus: bool) -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !bus {
            return port;
        }
        let Some(bus_port) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus_port)).is_ok() {
            return port;
        }
    }
    panic!("found no free port with a free bus port (+{BUS_OFFSET}) on 127.0.0.1")
}

/// A Redis Cluster of masters without replicas, the slots split evenly between them.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// `masters` nodes (`--cluster-node-timeout 2000`) that each own a share of
    /// the slots and know one another; returns once every node says
    /// `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(masters > 0, "a cluster needs a master");
        let nodes: Vec<Redis> = (0..masters).map(|_| Redis::launch(&[], true)).collect();
        // As `redis-cli --cluster create` does, minus its fixed one-second
        // waits and its three-master minimum: distinct config epochs (only
        // possible before the nodes meet), slots, then the introductions.
        for (i, node) in nodes.iter().enumerate() {
            let first = (i * SLOTS / masters).to_string();
            let last = ((i + 1) * SLOTS / masters - 1).to_string();
            let epoch = (i + 1).to_string();
            for command in [
                &["cluster", "set-config-epoch", &epoch][..],
                &["cluster", "addslotsrange", &first, &last][..],
            ] {
                assert_eq!(node.cli(command), "OK", "{command:?} on port {}", node.port);
            }
        }
        for node in &nodes[1..] {
            let port = node.port.to_string();
            let command = ["cluster", "meet", "127.0.0.1", &port];
            assert_eq!(nodes[0].cli(&command), "OK", "{command:?}");
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// [`start`](RedisCluster::start), then one replica per master (the
    /// masters are `nodes[..masters]`, the replica of `nodes[i]` is
    /// `nodes[masters + i]`); returns once each replica follows its master.
    #[allow(dead_code)]
    pub fn start_with_replicas(masters: usize) -> RedisCluster {
        let mut cluster = RedisCluster::start(masters);
        let replicas: Vec<Redis> = (0..masters).map(|_| Redis::launch(&[], true)).collect();
        for replica in &replicas {
            let port = replica.port.to_string();
            let command = ["cluster", "meet", "127.0.0.1", &port];
            assert_eq!(cluster.nodes[0].cli(&command), "OK", "{command:?}");
        }
        let deadline = Instant::now() + CLUSTER_OK;
        for (i, replica) in replicas.iter().enumerate() {
            let id = cluster.nodes[i].cli(&["cluster", "myid"]);
            // The replica must have heard of its master through gossip first.
            while replica.cli(&["cluster", "replicate", &id]) != "OK" {
                assert!(
                    Instant::now() < deadline,
                    "replica {i} never knew its master"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster.nodes.extend(replicas);
        cluster.wait_ok();
        for replica in &cluster.nodes[masters..] {
            while !replica
                .cli(&["info", "replication"])
                .contains("master_link_status:up")
            {
                assert!(Instant::now() < deadline, "a replica never synced");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster
    }

    /// `redis://127.0.0.1:PORT` of the first node, a seed.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Waits until every node says `cluster_state:ok` and knows all the
    /// others, e.g. after restarting one; panics with their `CLUSTER INFO`
    /// once the deadline has passed.
    pub fn wait_ok(&self) {
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        let deadline = Instant::now() + CLUSTER_OK;
        loop {
            let infos: Vec<Option<String>> = self
                .nodes
                .iter()
                .map(|node| node.raw(&[&["CLUSTER", "INFO"]]))
                .collect();
            let ok = infos.iter().all(|info| {
                info.as_deref()
                    .is_some_and(|i| i.contains("cluster_state:ok") && i.contains(&known))
            });
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the cluster was not ok within {CLUSTER_OK:?}; CLUSTER INFO by node: {infos:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
