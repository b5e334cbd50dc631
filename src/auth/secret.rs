//! Secrets read from a file or the environment (the token key, certificate
//! passwords): never from a flag value, never shown in logs or `Debug` output.

use std::fmt;

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The HS256 key shared with the backends that mint tokens.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// The secret as stored in a file or an environment variable: surrounding
    /// whitespace (a trailing newline from `echo`) is not part of it. `None` if empty.
    pub fn from_file_contents(raw: &[u8]) -> Option<Secret> {
        let start = raw.iter().position(|b| !b.is_ascii_whitespace())?;
        let end = raw.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
        Some(Secret(raw[start..end].to_vec()))
    }

    /// Reads a secret file; `Ok(None)` if it holds nothing but whitespace.
    pub fn read(path: &std::path::Path) -> std::io::Result<Option<Secret>> {
        std::fs::read(path).map(|raw| Secret::from_file_contents(&raw))
    }

    /// A password from its file if one is given, else from an environment
    /// variable's value; `None` if neither (or it is empty). The error names
    /// the file.
    pub fn password(
        file: Option<&std::path::Path>,
        env_value: Option<String>,
    ) -> Result<Option<Secret>, String> {
        match (file, env_value) {
            (Some(path), _) => Secret::read(path)
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display())),
            (None, Some(value)) => Ok(Secret::from_file_contents(value.as_bytes())),
            (None, None) => Ok(None),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The secret's bytes, for the one place that must hand them on (a TLS
    /// library decrypting a key). Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_not_part_of_a_secret() {
        assert!(Secret::from_file_contents(b" \n\t").is_none());
        let secret = Secret::from_file_contents(b"  key\n").unwrap();
        assert_eq!(secret.expose(), b"key");
        assert_eq!(format!("{secret:?}"), "Secret(3 bytes)");
    }
}
