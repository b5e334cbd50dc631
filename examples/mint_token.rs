//! Mints a token for one uid, as your backend would, and prints it.
//!
//! ```text
//! cargo run --example mint_token -- --secret-file /etc/pushhub/secret uid1 1h
//! PUSHHUB_SECRET="$(cat secret)" cargo run --example mint_token -- uid1
//! ```
//!
//! Arguments: `[--secret-file PATH] UID [LIFETIME]`. The secret comes from the
//! file, or else from `PUSHHUB_SECRET`, never from a command-line value
//! (arguments are visible to every user in `ps`), and surrounding whitespace is
//! trimmed exactly as the hub does. LIFETIME takes the hub's duration units
//! (`90s`, `10m`, `1h`, a bare number is seconds) and defaults to 1h.
//!
//! The token is HS256 with claims `{"sub": UID, "exp": now + LIFETIME}`. Give it
//! to the client, which sends it as its first WebSocket message or connects to
//! `ws://host:1234/?token=TOKEN`.

use std::path::PathBuf;
use std::process::ExitCode;

use pushhub::auth::{Secret, mint, valid_uid};
use pushhub::config::{SECRET_ENV, parse_duration};
use pushhub::time::unix_now;

const USAGE: &str = "usage: mint_token [--secret-file PATH] UID [LIFETIME]\n\
                     the secret is read from PATH, or else from PUSHHUB_SECRET";

fn main() -> ExitCode {
    match run() {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mint_token: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<String, String> {
    let mut secret_file = None;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secret-file" => {
                let path = args.next().ok_or("--secret-file needs a path")?;
                secret_file = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Err("help requested".into()),
            _ => positional.push(arg),
        }
    }
    let (uid, lifetime) = match positional.as_slice() {
        [uid] => (uid, "1h"),
        [uid, lifetime] => (uid, lifetime.as_str()),
        _ => return Err("give a uid and, optionally, a lifetime".into()),
    };
    if !valid_uid(uid) {
        return Err("a uid is 1 to 256 bytes without control characters".into());
    }
    let lifetime = parse_duration(lifetime)?;

    let (raw, source) = match secret_file {
        Some(path) => {
            let raw = std::fs::read(&path)
                .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
            (raw, path.display().to_string())
        }
        None => {
            let value = std::env::var(SECRET_ENV)
                .map_err(|_| format!("give --secret-file PATH or set {SECRET_ENV}"))?;
            (value.into_bytes(), SECRET_ENV.to_string())
        }
    };
    let secret = Secret::from_file_contents(&raw)
        .ok_or(format!("the token secret from {source} is empty"))?;

    let exp = unix_now().saturating_add(lifetime.as_secs().max(1));
    Ok(mint(&secret, uid, exp))
}
