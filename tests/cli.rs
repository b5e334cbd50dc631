//! The binary's command line: `--help`, refusing to start without a way to
//! authenticate, bad flags, and the token secret from `--secret-file` or
//! PUSHHUB_SECRET.

mod common;

use std::path::PathBuf;

use common::*;
use pushhub::auth::{Secret, mint};
use pushhub::time::unix_now;

const EPHEMERAL: [&str; 4] = ["--ws", "127.0.0.1:0", "--text", "127.0.0.1:0"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    EPHEMERAL
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("pushhub-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn help_lists_every_flag() {
    let (status, stdout, _) = run_binary(&["--help"], &[]);
    assert!(status.success(), "--help exited with {status}");
    for flag in [
        "--ws",
        "--text",
        "--allow-plain-uid",
        "--login-reply",
        "--secret-file",
        "--public-channel",
        "--max-subscriptions-per-connection",
        "--max-channels",
        "--max-connections",
        "--handshake-timeout",
        "--auth-timeout",
        "--ping-interval",
        "--idle-timeout",
        "--max-message-size",
        "--max-queue-messages",
        "--max-queue-bytes",
        "--max-line-length",
        "--shutdown-timeout",
        "--log-level",
        "--tls-cert",
        "--tls-key",
        "--tls-pkcs12",
        "--tls-password-file",
        "--help",
    ] {
        assert!(
            stdout.contains(flag),
            "--help does not mention {flag}:\n{stdout}"
        );
    }
    assert!(stdout.contains("PUSHHUB_SECRET"), "{stdout}");
    assert!(stdout.contains("PUSHHUB_TLS_PASSWORD"), "{stdout}");
}

/// `--help`'s options as (flag, meaning, default), continuation lines joined.
/// The section ends at its first empty line (the commands' list follows).
fn help_entries(help: &str) -> Vec<(String, String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let options = help.split_once("Options:\n").expect("an Options section").1;
    for line in options.lines().take_while(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("  --") {
            let (flag, text) = rest.split_once(' ').unwrap_or((rest, ""));
            entries.push((format!("--{flag}"), text.trim().to_string()));
        } else if let Some((_, text)) = entries.last_mut() {
            text.push(' ');
            text.push_str(line.trim());
        }
    }
    entries
        .into_iter()
        .filter(|(flag, _)| !flag.starts_with("--help"))
        .map(|(flag, text)| {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let (meaning, default) = text
                .rsplit_once(" [default: ")
                .unwrap_or_else(|| panic!("{flag} states no default: {text}"));
            let default = default.trim_end_matches(']').to_string();
            (flag, meaning.to_string(), default)
        })
        .collect()
}

/// The README's flags table says what `--help` says, flag for flag.
#[test]
fn readme_flags_table_matches_help() {
    let (_, help, _) = run_binary(&["--help"], &[]);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme.split_once("## Flags\n").expect("a Flags section").1;
    let rows: Vec<Vec<String>> = table
        .lines()
        .skip_while(|l| !l.starts_with("| flag |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let entries = help_entries(&help);
    let readme_flags: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let help_flags: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        readme_flags, help_flags,
        "the README's flags differ from --help"
    );
    for ((flag, meaning, default), row) in entries.iter().zip(&rows) {
        assert_eq!(&row[1], default, "README default of {flag}");
        assert_eq!(&row[2], meaning, "README meaning of {flag}");
    }
}

#[test]
fn refuses_to_start_without_a_way_to_authenticate() {
    let (status, _, stderr) = run_binary(&args(&[]), &[]);
    assert!(!status.success(), "started without auth: {status}");
    assert!(stderr.contains("--secret-file"), "stderr: {stderr}");
    assert!(stderr.contains("--allow-plain-uid"), "stderr: {stderr}");
    assert!(!stderr.contains("WebSocket on"), "stderr: {stderr}");
}

#[test]
fn refuses_bad_flags_and_settings() {
    let missing = std::env::temp_dir().join("pushhub-test-no-such-secret");
    let missing = missing.to_str().unwrap();
    let empty = TempFile::new("empty-secret", b" \n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            args(&["--allow-plain-uid", "--no-such-flag"]),
            "--no-such-flag",
        ),
        (
            args(&["--allow-plain-uid", "--ping-interval", "soon"]),
            "soon",
        ),
        (
            args(&[
                "--allow-plain-uid",
                "--ping-interval",
                "30s",
                "--idle-timeout",
                "10s",
            ]),
            "--idle-timeout",
        ),
        (
            args(&["--allow-plain-uid", "--max-connections", "0"]),
            "--max-connections",
        ),
        (
            args(&["--allow-plain-uid", "--max-channels", "0"]),
            "--max-channels must be at least 1",
        ),
        (
            args(&["--allow-plain-uid", "--max-channels", "4294967296"]),
            "--max-channels must be at most 4294967295",
        ),
        (
            args(&["--allow-plain-uid", "--public-channel", "a b"]),
            "--public-channel `a b`",
        ),
        (
            args(&["--secret-file", missing]),
            "pushhub-test-no-such-secret",
        ),
        (args(&["--secret-file", empty.path()]), "empty"),
        // A registry in a directory that does not exist.
        (
            args(&[
                "--allow-plain-uid",
                "--apns-db",
                "/nonexistent-pushhub-dir/devices.sqlite3",
            ]),
            "cannot open the device registry /nonexistent-pushhub-dir/devices.sqlite3",
        ),
        // The registry's two names at once.
        (
            args(&[
                "--allow-plain-uid",
                "--devices-db",
                "a.db",
                "--apns-db",
                "b.db",
            ]),
            "give one",
        ),
    ];
    for (argv, says) in cases {
        let (status, _, stderr) = run_binary(&argv, &[]);
        assert_eq!(
            status.code(),
            Some(2),
            "{argv:?}: {status}; stderr: {stderr}"
        );
        assert!(
            stderr.contains(says),
            "{argv:?}: stderr lacks {says:?}: {stderr}"
        );
    }
}

/// Starts the binary in token mode and checks that tokens signed with `secret`
/// are accepted and others refused.
fn check_token_mode(hub: &Binary, secret: &Secret) {
    let (ws, text) = (hub.ws, hub.text);
    run(async {
        let mut backend = Backend::connect(text).await;
        let good = mint(secret, "env-user", unix_now() + 60);
        let mut client = connect(ws, "/").await;
        send_text(&mut client, &good).await;
        wait_connections(&mut backend, "env-user", 1).await;
        assert_eq!(backend.push("env-user", "signed in").await, 1);
        assert_eq!(next_text(&mut client).await, "signed in");

        let mut by_query = connect(ws, &format!("/?token={good}")).await;
        assert_eq!(backend.connections("env-user").await, 2);
        assert_eq!(backend.push("env-user", "twice").await, 2);
        assert_eq!(next_text(&mut by_query).await, "twice");
        assert_eq!(next_text(&mut client).await, "twice");

        let wrong = mint(
            &Secret::from_file_contents(b"not the secret").unwrap(),
            "env-user",
            unix_now() + 60,
        );
        for bad in [wrong.as_str(), "env-user"] {
            let mut refused = connect(ws, "/").await;
            send_text(&mut refused, bad).await;
            assert_eq!(expect_close(&mut refused).await.0, 4001, "{bad}");
        }
        close_client(&mut client).await;
        assert_eq!(backend.connections("env-user").await, 1);
    });
}

#[test]
fn secret_from_the_environment() {
    let raw = "environment-secret-0123456789abcdef";
    let hub = Binary::start(&args(&[]), &[("PUSHHUB_SECRET", raw)]);
    check_token_mode(&hub, &Secret::from_file_contents(raw.as_bytes()).unwrap());
}

#[test]
fn secret_from_a_file_with_a_trailing_newline() {
    let file = TempFile::new("secret", b"file-secret-0123456789abcdef0123\n");
    let hub = Binary::start(&args(&["--secret-file", file.path()]), &[]);
    // The newline `echo` leaves is not part of the secret.
    check_token_mode(
        &hub,
        &Secret::from_file_contents(b"file-secret-0123456789abcdef0123").unwrap(),
    );
}

#[test]
fn plain_uid_mode_warns_and_serves() {
    let mut hub = Binary::start(&args(&["--allow-plain-uid"]), &[]);
    let line = hub.wait_for_line("plain-uid mode");
    assert!(line.contains("WARN"), "{line}");
    let (ws, text) = (hub.ws, hub.text);
    run(async {
        let mut backend = Backend::connect(text).await;
        let mut client = connect(ws, "/").await;
        send_text(&mut client, "uid1").await;
        logged_in(&mut client).await;
        assert_eq!(
            backend.request(r#"{"uid":"uid1","percent":"88%"}"#).await,
            "ok"
        );
        assert_eq!(
            next_text(&mut client).await,
            r#"{"uid":"uid1","percent":"88%"}"#
        );
    });
}

#[test]
fn login_reply_flag_turns_the_greeting_on() {
    let hub = Binary::start(&args(&["--allow-plain-uid", "--login-reply"]), &[]);
    run(async {
        let mut client = connect(hub.ws, "/").await;
        send_text(&mut client, "uid1").await;
        assert_eq!(
            next_text(&mut client).await,
            "login success, your uid is uid1"
        );
    });
}
