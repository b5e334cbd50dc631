//! `pushhub vapid-keygen PATH`: a new VAPID key for Web Push, written where
//! the hub will read it, and its public key printed for the pages. The file
//! is created readable by its owner only, and never over an existing one: a
//! replaced key would silently orphan every subscription made with the old.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::push::webpush::vapid::VapidKey;

use super::args;
use super::{Failure, Outcome};

pub fn run(command: &args::VapidKeygen) -> Outcome {
    let path = &command.path;
    let made = VapidKey::generate().and_then(|key| key.to_pem().map(|pem| (key, pem)));
    let (key, pem) = match made {
        Ok(made) => made,
        Err(e) => return Outcome::failed(Failure::Config(format!("cannot make a key: {e}"))),
    };
    match write_new(path, &pem) {
        Ok(()) => Outcome::with(vec![key.public_key_base64url()], None),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Outcome::failed(Failure::Usage(format!(
                "{} exists; it may be the key your subscriptions were made with, so it is \
                 left as it is: give a new path, or remove the file first",
                path.display()
            )))
        }
        Err(e) => Outcome::failed(Failure::Config(format!(
            "cannot write {}: {e}",
            path.display()
        ))),
    }
}

/// Writes `pem` to a file that must not exist yet, created with mode 0600
/// (not written then narrowed: the key is never readable by others, even
/// for a moment). A file left half-written is removed.
fn write_new(path: &Path, pem: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = file.write_all(pem).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_that_does_not_exist() {
        let command = args::VapidKeygen {
            path: std::env::temp_dir()
                .join(format!("pushhub-no-such-dir-{}", std::process::id()))
                .join("vapid.pem"),
        };
        let outcome = run(&command);
        assert!(outcome.out.is_empty());
        let failure = outcome.failure.expect("a failure");
        assert_eq!(failure.exit_code(), 2);
        assert!(failure.to_string().contains("cannot write"), "{failure}");
    }
}
