//! `pushhub vapid-keygen PATH`, the real binary in a scratch directory: the
//! key file it writes (mode 0600, a P-256 key that OpenSSL reads), the public
//! key it prints (that key's, and nothing else on stdout), and its refusal to
//! overwrite a file; the hub given that key telling its public key on the
//! text port, and bad VAPID flags stopping its start.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use data_encoding::BASE64URL_NOPAD;
use openssl::bn::BigNumContext;
use openssl::ec::PointConversionForm;
use openssl::nid::Nid;
use openssl::pkey::PKey;

#[test]
fn writes_a_private_key_and_prints_its_public_key() {
    let scratch = Scratch::new("vapid-keygen");
    let path = scratch.path("vapid.pem");
    let path_arg = path.to_str().unwrap();

    let (status, stdout, stderr) = run_command(&["vapid-keygen", path_arg]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");

    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    // Parsed here with OpenSSL alone, not with the code that wrote it.
    let pem = std::fs::read(&path).unwrap();
    assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    let key = PKey::private_key_from_pem(&pem).unwrap().ec_key().unwrap();
    assert_eq!(key.group().curve_name(), Some(Nid::X9_62_PRIME256V1));
    let mut ctx = BigNumContext::new().unwrap();
    let point = key
        .public_key()
        .to_bytes(key.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    assert_eq!(point.len(), 65);
    assert_eq!(stdout, format!("{}\n", BASE64URL_NOPAD.encode(&point)));

    // A second run keeps the first key: the subscriptions depend on it.
    let (status, stdout, stderr) = run_command(&["vapid-keygen", path_arg]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), pem);
}

#[test]
fn is_listed_in_the_help_and_needs_a_path() {
    let (status, stdout, _) = run_command(&["--help"]);
    assert!(status.success());
    assert!(
        stdout.lines().any(|l| l.starts_with("  vapid-keygen ")),
        "{stdout}"
    );
    let (status, stdout, _) = run_command(&["help", "vapid-keygen"]);
    assert!(status.success());
    assert!(stdout.contains("0600"), "{stdout}");

    let (status, _, stderr) = run_command(&["vapid-keygen"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("path"), "{stderr}");
}

/// The hub started with a key made by `vapid-keygen` tells its public key
/// on the text port; bad VAPID flags stop the start with exit 2.
#[test]
fn the_hub_tells_the_public_key_it_was_given() {
    let scratch = Scratch::new("vapid-hub");
    let path = scratch.path("vapid.pem");
    let path = path.to_str().unwrap();
    let (status, stdout, stderr) = run_command(&["vapid-keygen", path]);
    assert!(status.success(), "{stderr}");
    let public = stdout.trim().to_string();
    let devices = scratch.path("devices.sqlite3");
    let flags = [
        "--devices-db",
        devices.to_str().unwrap(),
        "--allow-plain-uid",
        "--ws",
        "127.0.0.1:0",
        "--text",
        "127.0.0.1:0",
        "--vapid-key-file",
        path,
        "--vapid-subject",
        "mailto:ops@example.com",
    ];
    let hub = Binary::start(&flags, &[]);
    run(async {
        let mut backend = Backend::connect(hub.text).await;
        let reply = backend.json(serde_json::json!({"cmd": "vapid_key"})).await;
        assert_eq!(reply, serde_json::json!({"ok": true, "key": public}));
    });
    let garbage = scratch.path("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let garbage = garbage.to_str().unwrap();
    for (extra, says) in [
        (&["--vapid-key-file", path][..], "--vapid-subject"),
        (&["--vapid-subject", "mailto:a@b.c"][..], "--vapid-key-file"),
        (
            &[
                "--vapid-key-file",
                path,
                "--vapid-subject",
                "ops@example.com",
            ][..],
            "--vapid-subject",
        ),
        (
            &[
                "--vapid-key-file",
                garbage,
                "--vapid-subject",
                "mailto:a@b.c",
            ][..],
            "--vapid-key-file",
        ),
        (
            &[
                "--vapid-key-file",
                "/nonexistent/k.pem",
                "--vapid-subject",
                "mailto:a@b.c",
            ][..],
            "--vapid-key-file",
        ),
    ] {
        let argv = [&flags[..7], extra].concat();
        let (status, _, stderr) = run_binary(&argv, &[]);
        assert_eq!(status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let plain = Server::start(plain_config());
    run(async {
        let mut backend = Backend::connect(plain.text).await;
        let reply = backend.json(serde_json::json!({"cmd": "vapid_key"})).await;
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains("--vapid-key-file"), "{reply}");
    });
}
