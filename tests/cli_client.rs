//! The binary as a client of its own text port: `pushhub push`, `broadcast`,
//! `online`, `kick`, `stats` and `token`, run as child processes against a
//! real hub on 127.0.0.1 port 0 with real WebSocket clients; their output,
//! exit statuses and help, and what happens when the hub is not there, says
//! nothing, or hangs up.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use data_encoding::BASE64URL_NOPAD;
use pushhub::auth::{Secret, TokenError, verify};
use pushhub::time::unix_now;

/// How a run of the binary ended and what it printed.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    /// Checks the exit status, and that a failure said why in one line on
    /// stderr (a success says nothing there).
    #[track_caller]
    fn expect(&self, code: i32) -> &Ran {
        assert_eq!(self.code, code, "exit status of {self:#?}");
        if code == 0 {
            assert_eq!(self.stderr, "", "{self:#?}");
        } else {
            assert_eq!(self.stderr.lines().count(), 1, "one stderr line: {self:#?}");
        }
        self
    }

    #[track_caller]
    fn says(&self, needle: &str) -> &Ran {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        self
    }
}

/// Runs `pushhub ARGS` to its end (at most [`STEP`]). Not `binary_command`:
/// that one adds the hub's `--metrics` flag, which no command takes.
fn pushhub(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushhub"));
    command
        .args(args)
        .env_remove("PUSHHUB_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let status = wait_child(&mut child, STEP);
    Ran {
        code: status.code().expect("an exit status, not a signal"),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        took: started.elapsed(),
    }
}

/// Runs a text-port command (its name first in `command`) against `text`.
fn ask(text: SocketAddr, command: &[&str]) -> Ran {
    let text = text.to_string();
    let (name, rest) = command.split_first().unwrap();
    // Right after the name: `--text` must come before a `--` in `rest`.
    let mut args = vec![*name, "--text", &text];
    args.extend_from_slice(rest);
    pushhub(&args, &[])
}

/// Connects and logs in as `uid` (plain-uid mode), returning once the hub has
/// bound it: the hub handles a client's frames in order, so the pong to a
/// ping sent after the uid proves the uid was taken. Nothing else may come
/// first: a login is answered with nothing.
async fn login(server: &Server, uid: &str) -> Client {
    const PROBE: &[u8] = b"bound?";
    let mut client = connect(server.ws, "/").await;
    send_text(&mut client, uid).await;
    within(
        STEP,
        "sending a ping",
        client.send(Message::Ping(PROBE.into())),
    )
    .await
    .unwrap();
    loop {
        match next_message(&mut client).await {
            Some(Ok(Message::Pong(payload))) if payload.as_ref() == PROBE => return client,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected only the pong after logging in as {uid}, got {other:?}"),
        }
    }
}

#[test]
fn push_sends_a_strings_contents_and_other_json_as_written() {
    let server = Server::start(plain_config());
    run(async {
        let mut client = login(&server, "uid1").await;
        let ran = ask(server.text, &["push", "uid1", "hello"]);
        assert_eq!(ran.expect(0).stdout, "delivered to 1 connection\n");
        assert_eq!(next_text(&mut client).await, "hello");
        for (data, received) in [
            (r#"{"a": [1, 2]}"#, r#"{"a": [1, 2]}"#),
            ("42", "42"),
            (r#""quoted""#, "quoted"),
            ("two words", "two words"),
            ("{not json", "{not json"),
        ] {
            ask(server.text, &["push", "uid1", data]).expect(0);
            assert_eq!(next_text(&mut client).await, received, "DATA {data:?}");
        }
        // A DATA that looks like a flag goes after `--`.
        ask(server.text, &["push", "uid1", "--", "-5"]).expect(0);
        assert_eq!(next_text(&mut client).await, "-5");

        let mut second = login(&server, "uid1").await;
        let ran = ask(server.text, &["push", "uid1", "both"]);
        assert_eq!(ran.expect(0).stdout, "delivered to 2 connections\n");
        assert_eq!(next_text(&mut client).await, "both");
        assert_eq!(next_text(&mut second).await, "both");
    });
}

#[test]
fn push_to_an_offline_uid_exits_1() {
    let server = Server::start(plain_config());
    let ran = ask(server.text, &["push", "nobody", "hello"]);
    ran.expect(1).says("nobody is offline");
    assert_eq!(ran.stdout, "delivered to 0 connections\n");
}

#[test]
fn raw_sends_the_original_form_as_it_is() {
    let server = Server::start(plain_config());
    run(async {
        let mut client = login(&server, "uid1").await;
        let line = r#"{"uid":"uid1","percent":"88%"}"#;
        let ran = ask(server.text, &["push", "--raw", line]);
        assert_eq!(ran.expect(0).stdout, "ok\n");
        assert_eq!(next_text(&mut client).await, line);

        let ran = ask(
            server.text,
            &["push", "--raw", r#"{"uid":"uid2","percent":"1%"}"#],
        );
        assert_eq!(ran.expect(1).says("fail").stdout, "fail\n");

        // Any command goes too, and its reply is printed as it came.
        let ran = ask(
            server.text,
            &["push", "--raw", r#"{"cmd":"online","uid":"uid1"}"#],
        );
        assert_eq!(
            ran.expect(0).stdout,
            "{\"ok\":true,\"online\":true,\"connections\":1}\n"
        );
    });
}

#[test]
fn json_prints_the_reply_line_as_it_came() {
    let server = Server::start(plain_config());
    run(async {
        let mut client = login(&server, "uid1").await;
        let ran = ask(server.text, &["push", "uid1", "hi", "--json"]);
        assert_eq!(ran.expect(0).stdout, "{\"ok\":true,\"delivered\":1}\n");
        assert_eq!(next_text(&mut client).await, "hi");

        // The exit status still says what the reply means.
        let ran = ask(server.text, &["online", "--json", "nobody"]);
        assert_eq!(
            ran.expect(1).says("nobody is offline").stdout,
            "{\"ok\":true,\"online\":false,\"connections\":0}\n"
        );

        let ran = ask(server.text, &["stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_str(&ran.expect(0).stdout).unwrap();
        assert_eq!(stats["ok"], true);
        assert_eq!(stats["authenticated"], 1);
        assert!(stats["text_errors"].is_object(), "{stats}");
    });
}

#[test]
fn broadcast_reaches_every_authenticated_connection() {
    let server = Server::start(plain_config());
    run(async {
        ask(server.text, &["broadcast", "anyone?"])
            .expect(1)
            .says("nobody took it");
        let mut one = login(&server, "uid1").await;
        let mut two = login(&server, "uid2").await;
        // Connected, but not logged in: broadcasts skip it.
        let _anonymous = connect(server.ws, "/").await;
        let ran = ask(server.text, &["broadcast", r#"{"notice":"22:00"}"#]);
        assert_eq!(ran.expect(0).stdout, "delivered to 2 connections\n");
        assert_eq!(next_text(&mut one).await, r#"{"notice":"22:00"}"#);
        assert_eq!(next_text(&mut two).await, r#"{"notice":"22:00"}"#);
    });
}

#[test]
fn online_with_one_uid_and_with_several() {
    let server = Server::start(plain_config());
    run(async {
        let _one = login(&server, "uid1").await;
        let _two = login(&server, "uid2").await;
        let _again = login(&server, "uid2").await;
        let ran = ask(server.text, &["online", "uid1"]);
        assert_eq!(ran.expect(0).stdout, "uid1: online, 1 connection\n");
        let ran = ask(server.text, &["online", "nobody"]);
        assert_eq!(
            ran.expect(1).says("nobody is offline").stdout,
            "nobody: offline\n"
        );
        let ran = ask(server.text, &["online", "uid2", "uid1"]);
        assert_eq!(
            ran.expect(0).stdout,
            "uid2: online, 2 connections\nuid1: online, 1 connection\n"
        );
        let ran = ask(server.text, &["online", "uid1", "nobody", "uid2"]);
        assert_eq!(
            ran.expect(1).says("1 of 3 uids offline: nobody").stdout,
            "uid1: online, 1 connection\nnobody: offline\nuid2: online, 2 connections\n"
        );
    });
}

#[test]
fn kick_closes_the_uids_connections_with_4000() {
    let server = Server::start(plain_config());
    run(async {
        let mut client = login(&server, "uid1").await;
        let ran = ask(server.text, &["kick", "uid1"]);
        assert_eq!(ran.expect(0).stdout, "kicked 1 connection\n");
        assert_eq!(
            expect_close(&mut client).await,
            (4000, "kicked".to_string())
        );
        expect_end(&mut client).await;
        ask(server.text, &["kick", "uid1"])
            .expect(1)
            .says("uid1 is offline");
    });
}

#[test]
fn channels_from_the_command_line() {
    let server = Server::start(plain_config());
    run(async {
        let mut a = login(&server, "a").await;
        let mut b = login(&server, "b").await;
        let ran = ask(server.text, &["subscribe", "a", "room:1", "news"]);
        assert_eq!(ran.expect(0).stdout, "subscribed 2 connections\n");
        ask(server.text, &["subscribe", "b", "room:1"]).expect(0);
        ask(server.text, &["subscribe", "b", "room:1"])
            .expect(1)
            .says("no connection of b was newly subscribed");
        let ran = ask(server.text, &["publish", "room:1", r#"{"t":1}"#]);
        assert_eq!(ran.expect(0).stdout, "delivered to 2 connections\n");
        for client in [&mut a, &mut b] {
            assert_eq!(next_text(client).await, r#"{"t":1}"#);
        }
        let ran = ask(server.text, &["channels"]);
        assert_eq!(
            ran.expect(0).stdout,
            "news: 1 connection\nroom:1: 2 connections\n"
        );
        assert_eq!(
            ask(server.text, &["channels", "room"]).expect(0).stdout,
            "room:1: 2 connections\n"
        );
        let ran = ask(server.text, &["members", "room:1"]);
        assert_eq!(ran.expect(0).stdout, "room:1: 2 connections\na\nb\n");
        let ran = ask(server.text, &["unsubscribe", "a", "room:1"]);
        assert_eq!(ran.expect(0).stdout, "unsubscribed 1 connection\n");
        ask(server.text, &["members", "empty"])
            .expect(1)
            .says("empty has no subscriber");
        ask(server.text, &["publish", "empty", "x"])
            .expect(1)
            .says("empty has no subscriber");
        ask(server.text, &["publish", "a b", "x"])
            .expect(1)
            .says("bad channel name");
        ask(server.text, &["subscribe", "a"])
            .expect(2)
            .says("give the uid, then one channel or more");
    });
}

#[test]
fn stats_prints_one_counter_per_line_from_the_binarys_hub() {
    // The hub here is the binary too, started with its flags as ever.
    let hub = Binary::start(
        &[
            "--ws",
            "127.0.0.1:0",
            "--text",
            "127.0.0.1:0",
            "--allow-plain-uid",
        ],
        &[],
    );
    ask(hub.text, &["push", "nobody", "x"]).expect(1);
    let ran = ask(hub.text, &["stats"]);
    let figures: Vec<(&str, u64)> = ran
        .expect(0)
        .stdout
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(' ').expect("a name and a value");
            (name, value.trim().parse().expect("a count"))
        })
        .collect();
    let figure = |name| figures.iter().find(|f| f.0 == name).map(|f| f.1);
    assert_eq!(figure("connections"), Some(0), "{figures:?}");
    assert_eq!(figure("pushes"), Some(1), "{figures:?}");
    assert!(figure("uptime_secs").is_some(), "{figures:?}");
}

#[test]
fn a_minted_token_logs_in_with_the_secret_from_a_file_or_the_environment() {
    let server = Server::start(token_config());
    let scratch = Scratch::new("cli-token");
    let file = scratch.path("secret");
    // The newline `echo` leaves is not part of the secret, as for the hub.
    let mut contents = SECRET.to_vec();
    contents.push(b'\n');
    std::fs::write(&file, contents).unwrap();
    let file = file.to_str().unwrap();
    let spaced = format!("  {}\n", std::str::from_utf8(SECRET).unwrap());
    let before = unix_now();
    let from_file = pushhub(&["token", "file-user", "--secret-file", file], &[]);
    let from_env = pushhub(
        &["token", "env-user", "--ttl", "10m"],
        &[("PUSHHUB_SECRET", &spaced)],
    );
    let after = unix_now();
    let key = Secret::from_file_contents(SECRET).unwrap();
    let token = from_env.expect(0).stdout.trim_end();
    assert_eq!(
        verify(token, &key, before + 599).map(|v| v.uid),
        Ok("env-user".to_string())
    );
    assert_eq!(verify(token, &key, after + 601), Err(TokenError::Expired));
    run(async {
        for (ran, uid) in [(&from_file, "file-user"), (&from_env, "env-user")] {
            let token = ran.expect(0).stdout.strip_suffix('\n').unwrap();
            assert_eq!(token.lines().count(), 1, "{ran:?}");
            let mut client = connect(server.ws, "/").await;
            send_text(&mut client, token).await;
            let mut backend = Backend::connect(server.text).await;
            wait_connections(&mut backend, uid, 1).await;
            ask(server.text, &["push", uid, "signed"]).expect(0);
            assert_eq!(next_text(&mut client).await, "signed");
        }
    });
    // A file wins over the variable, as for the hub.
    let both = pushhub(
        &["token", "u1", "--secret-file", file],
        &[("PUSHHUB_SECRET", "another secret")],
    );
    let token = both.expect(0).stdout.trim_end();
    assert_eq!(
        verify(token, &key, unix_now()).map(|v| v.uid),
        Ok("u1".to_string())
    );
}

#[test]
fn a_minted_token_carries_the_grants_given() {
    let secret = [("PUSHHUB_SECRET", "s3cret")];
    let claims = |ran: &Ran| -> serde_json::Value {
        let token = ran.expect(0).stdout.trim_end();
        let payload = token.split('.').nth(1).expect("three parts");
        serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
    };
    let before = unix_now();
    let granted = pushhub(
        &[
            "token",
            "u1",
            "--channel",
            "room:*",
            "--channel",
            "news",
            "--publish",
            "room:42",
            "--sub",
            "news",
            "--sub",
            "notifications#u1",
            "--ttl",
            "2m",
        ],
        &secret,
    );
    let got = claims(&granted);
    let exp = got["exp"].as_u64().expect("exp");
    assert!((before + 120..=unix_now() + 120).contains(&exp), "{got}");
    assert_eq!(
        got,
        serde_json::json!({
            "sub": "u1",
            "exp": exp,
            "channels": ["room:*", "news"],
            "publish": ["room:42"],
            "subs": ["news", "notifications#u1"],
        })
    );
    let key = Secret::from_file_contents(b"s3cret").unwrap();
    let verified = verify(granted.stdout.trim_end(), &key, unix_now()).unwrap();
    assert_eq!(verified.grants.subs, ["news", "notifications#u1"]);
    // Without grants, the claims are what they always were.
    let plain = claims(&pushhub(&["token", "u1"], &secret));
    assert_eq!(plain, serde_json::json!({"sub": "u1", "exp": plain["exp"]}));
}

#[test]
fn token_with_a_bad_pattern_or_channel_exits_2() {
    let secret = [("PUSHHUB_SECRET", "s3cret")];
    for (args, says) in [
        (&["token", "u1", "--channel", "a b"][..], "printable ASCII"),
        (&["token", "u1", "--channel", "room:*:*"], "`*` is reserved"),
        (&["token", "u1", "--publish", ""], "must not be empty"),
        (&["token", "u1", "--sub", "room:*"], "`*` is reserved"),
        (&["token", "u1", "--channel"], "--channel"),
    ] {
        let ran = pushhub(args, &secret);
        ran.expect(2).says(says);
        assert_eq!(ran.stdout, "", "{args:?}");
    }
}

#[test]
fn token_without_a_usable_secret_or_uid_exits_2() {
    let scratch = Scratch::new("cli-token-bad");
    let missing = scratch.path("no-such-secret");
    let missing = missing.to_str().unwrap();
    let empty = scratch.path("empty");
    std::fs::write(&empty, b" \n").unwrap();
    let empty = empty.to_str().unwrap();
    let uid = "a".repeat(257);
    for (args, env, says) in [
        (vec!["token", "u1"], vec![], "no secret"),
        (
            vec!["token", "u1", "--secret-file", missing],
            vec![],
            "no-such-secret",
        ),
        (vec!["token", "u1", "--secret-file", empty], vec![], "empty"),
        (vec!["token", "u1"], vec![("PUSHHUB_SECRET", " ")], "empty"),
        (
            vec!["token", &uid],
            vec![("PUSHHUB_SECRET", "s")],
            "uid must be",
        ),
        (
            vec!["token", "u1", "--ttl", "0s"],
            vec![("PUSHHUB_SECRET", "s")],
            "at least 1s",
        ),
    ] {
        let ran = pushhub(&args, &env);
        ran.expect(2).says(says);
        assert_eq!(ran.stdout, "", "{args:?}");
    }
}

#[test]
fn a_hub_that_is_not_there_exits_2() {
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    for command in [&["stats"][..], &["push", "uid1", "x"]] {
        ask(addr, command)
            .expect(2)
            .says("cannot connect")
            .says(&addr.to_string());
    }
}

#[test]
fn a_hub_that_never_answers_exits_2_after_the_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    // The accepted socket is kept, unanswered, until the test ends.
    let holder = std::thread::spawn(move || silent.accept().unwrap().0);
    let ran = ask(addr, &["stats", "--timeout", "1s"]);
    ran.expect(2).says("no reply").says("within 1s");
    assert!(
        ran.took >= Duration::from_secs(1) && ran.took < STEP,
        "took {:?}",
        ran.took
    );
    drop(holder.join().unwrap());
}

#[test]
fn a_hub_that_hangs_up_without_a_reply_exits_2() {
    let rude = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = rude.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut socket, _) = rude.accept().unwrap();
        // Read the request to its end, so that closing sends a FIN, not a reset.
        let mut request = Vec::new();
        socket.read_to_end(&mut request).unwrap();
        request
    });
    ask(addr, &["kick", "uid1"])
        .expect(2)
        .says("closed the connection without a reply");
    assert_eq!(
        peer.join().unwrap(),
        b"{\"cmd\":\"kick\",\"uid\":\"uid1\"}\n"
    );
}

#[test]
fn an_error_reply_exits_1_with_the_error() {
    let mut config = plain_config();
    config.max_line_length = 64;
    let server = Server::start(config);
    let long = "x".repeat(100);
    ask(server.text, &["push", "uid1", &long])
        .expect(1)
        .says("the hub answered an error: line longer than 64 bytes");
    let ran = ask(server.text, &["push", "--raw", r#"{"cmd":"explode"}"#]);
    ran.expect(1).says("unknown cmd `explode`");
    assert!(ran.stdout.starts_with("{\"ok\":false,"), "{ran:?}");
    ask(server.text, &["push", "--raw", "hello"])
        .expect(1)
        .says("invalid JSON");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        // A word where the hub takes only flags: not started as a hub.
        (&["frobnicate"], "unknown command `frobnicate`"),
        (&["help", "frobnicate"], "unknown command `frobnicate`"),
        (&["push"], "give UID and DATA"),
        (&["push", "uid1"], "give DATA"),
        (&["push", "a", "b", "c"], "UID and DATA only"),
        (&["push", "--raw", "{}", "uid1"], "give no UID or DATA"),
        (&["push", "--raw", "{}\n{}"], "line break"),
        (&["push", "--bogus"], "--bogus"),
        (&["broadcast"], "data"),
        (&["online"], "one uid or more"),
        (&["kick"], "uid"),
        (&["stats", "extra"], "extra"),
        (&["stats", "--timeout", "0"], "longer than zero"),
        (&["stats", "--timeout", "soon"], "soon"),
        (&["stats", "--text", "nowhere"], "nowhere"),
        (&["token"], "uid"),
    ];
    for (args, says) in cases {
        let ran = pushhub(args, &[]);
        ran.expect(2).says(says);
        assert_eq!(ran.stdout, "", "{args:?}");
    }
}

#[test]
fn help_for_each_command() {
    let push = pushhub(&["help", "push"], &[]);
    let text = &push.expect(0).stdout;
    for needle in [
        "Usage:",
        "--raw",
        "--text",
        "[default: 127.0.0.1:5678]",
        "--json",
        "--timeout",
        "[default: 5s]",
        "Exit status",
    ] {
        assert!(text.contains(needle), "help push lacks {needle:?}:\n{text}");
    }
    assert_eq!(&pushhub(&["push", "--help"], &[]).expect(0).stdout, text);
    assert_eq!(&pushhub(&["push", "-h"], &[]).expect(0).stdout, text);
    for name in ["broadcast", "online", "kick", "stats", "token"] {
        let ran = pushhub(&["help", name], &[]);
        assert!(ran.expect(0).stdout.contains("Exit status"), "{ran:?}");
        assert_eq!(pushhub(&[name, "--help"], &[]).expect(0).stdout, ran.stdout);
    }
    let token = pushhub(&["help", "token"], &[]);
    for needle in [
        "--secret-file",
        "PUSHHUB_SECRET",
        "--ttl",
        "[default: 1h]",
        "--channel",
        "--publish",
        "--sub",
    ] {
        assert!(token.stdout.contains(needle), "{needle}: {token:?}");
    }
}

#[test]
fn hub_help_lists_the_commands() {
    let ran = pushhub(&["--help"], &[]);
    let help = &ran.expect(0).stdout;
    // Still the hub's flags...
    assert!(
        help.contains("--allow-plain-uid") && help.contains("--ws"),
        "{help}"
    );
    // ...and then the commands, one line each.
    let commands = help
        .split_once("\nCommands")
        .unwrap_or_else(|| panic!("no Commands section:\n{help}"))
        .1;
    for name in [
        "push",
        "broadcast",
        "online",
        "kick",
        "stats",
        "token",
        "help",
    ] {
        let line = format!("\n  {name} ");
        assert_eq!(commands.matches(&line).count(), 1, "{name}:\n{help}");
    }
    assert_eq!(&pushhub(&["help"], &[]).expect(0).stdout, help);
}
