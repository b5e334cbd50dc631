//! Token verification on arbitrary text, with and without plain uids: never a
//! panic, and whatever is accepted is a valid uid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushhub::auth::{Secret, authenticate, valid_uid, verify};
use pushhub::auth::AuthConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secret = Secret::from_file_contents(b"fuzzing-secret-0123456789abcdef").unwrap();
    if let Ok(uid) = verify(text, &secret, 1_800_000_000) {
        assert!(valid_uid(&uid));
    }
    let both = AuthConfig {
        allow_plain_uid: true,
        secret: Some(secret),
    };
    if let Ok(identity) = authenticate(&both, text, 1_800_000_000) {
        assert!(valid_uid(&identity.uid));
    }
});
