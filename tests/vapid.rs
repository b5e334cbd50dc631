//! `pushhub vapid-keygen PATH`, the real binary in a scratch directory: the
//! key file it writes (mode 0600, a P-256 key that OpenSSL reads), the public
//! key it prints (that key's, and nothing else on stdout), and its refusal to
//! overwrite a file.

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
