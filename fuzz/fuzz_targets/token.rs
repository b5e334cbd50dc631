//! Token verification on arbitrary text, with and without plain uids: never a
//! panic, and whatever is accepted is a valid uid, with valid grants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushhub::auth::AuthConfig;
use pushhub::auth::{Secret, authenticate, valid_uid, verify};
use pushhub::channel::check_name;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secret = Secret::from_file_contents(b"fuzzing-secret-0123456789abcdef").unwrap();
    if let Ok(verified) = verify(text, &secret, 1_800_000_000) {
        assert!(valid_uid(&verified.uid));
        assert!(verified.grants.subs.iter().all(|ch| check_name(ch).is_ok()));
    }
    let both = AuthConfig {
        allow_plain_uid: true,
        secret: Some(secret),
    };
    if let Ok(identity) = authenticate(&both, text, 1_800_000_000) {
        assert!(valid_uid(&identity.uid));
    }
});
