//! `pushhub token`: an HS256 token for a uid, with its channel grants, minted
//! here with the hub's secret, so that token mode and channels can be tried
//! without a backend. The secret is read as the hub reads it (one function
//! does both), and never taken from a flag's value.

use crate::auth::{AuthError, Grants, mint_with_grants, valid_uid};
use crate::config::{SECRET_ENV, read_secret};

use super::args;
use super::{Failure, Outcome};

/// Mints the token at time `now` (Unix seconds). `env_secret` is the value of
/// [`SECRET_ENV`], passed in so that tests need not touch the environment.
pub fn run(command: &args::Token, env_secret: Option<String>, now: u64) -> Outcome {
    if !valid_uid(&command.uid) {
        // The hub would refuse the token's `sub` with this very reason.
        return Outcome::failed(Failure::Usage(AuthError::InvalidUid.to_string()));
    }
    let secret = match read_secret(command.secret_file.as_deref(), env_secret) {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Outcome::failed(Failure::Config(format!(
                "no secret: give --secret-file PATH or set {SECRET_ENV}, as for the hub"
            )));
        }
        Err(e) => return Outcome::failed(Failure::Config(e.to_string())),
    };
    let exp = now.saturating_add(command.ttl.as_secs());
    let grants = Grants {
        channels: command.channel.clone(),
        publish: command.publish.clone(),
        subs: command.sub.clone(),
    };
    let token = mint_with_grants(&secret, &command.uid, exp, &grants);
    Outcome::with(vec![token], None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::{Secret, verify};
    use crate::channel::Pattern;

    const NOW: u64 = 1_800_000_000;

    fn token(uid: &str) -> args::Token {
        args::Token {
            uid: uid.to_string(),
            ttl: Duration::from_secs(60),
            channel: Vec::new(),
            publish: Vec::new(),
            sub: Vec::new(),
            secret_file: None,
        }
    }

    #[test]
    fn mints_what_the_hub_verifies_with_the_trimmed_secret() {
        let outcome = run(&token("uid1"), Some(" s3cret\n".into()), NOW);
        assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
        let secret = Secret::from_file_contents(b"s3cret").unwrap();
        let verified = verify(&outcome.out[0], &secret, NOW + 59).unwrap();
        assert_eq!(verified.uid, "uid1");
        assert!(verified.grants.is_empty());
        assert!(verify(&outcome.out[0], &secret, NOW + 60).is_err());
    }

    #[test]
    fn mints_the_grants_it_is_given() {
        let command = args::Token {
            channel: vec![Pattern::parse("room:*").unwrap()],
            publish: vec![Pattern::parse("room:42").unwrap()],
            sub: vec!["news".to_string()],
            ..token("uid1")
        };
        let outcome = run(&command, Some("s3cret".into()), NOW);
        let secret = Secret::from_file_contents(b"s3cret").unwrap();
        let verified = verify(&outcome.out[0], &secret, NOW).unwrap();
        assert_eq!(
            verified.grants,
            Grants {
                channels: command.channel.clone(),
                publish: command.publish.clone(),
                subs: command.sub.clone(),
            }
        );
    }

    #[test]
    fn refuses_what_the_hub_would_refuse() {
        for (outcome, says) in [
            (run(&token("a\nb"), Some("s".into()), NOW), "uid must be"),
            (run(&token("uid1"), None, NOW), "no secret"),
            (run(&token("uid1"), Some(" \n".into()), NOW), "is empty"),
        ] {
            let failure = outcome.failure.expect("a failure");
            assert_eq!(failure.exit_code(), 2);
            assert!(failure.to_string().contains(says), "{failure}");
        }
    }
}
