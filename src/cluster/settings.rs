//! The `--redis*`, `--node-id` and `--cluster-timeout` flags, checked,
//! into a [`ClusterConfig`](super::ClusterConfig).

use std::path::Path;
use std::time::Duration;

use super::ClusterConfig;
use super::redis::url::RedisUrl;
use crate::auth::Secret;

/// The cluster's flags as given.
pub struct ClusterFlags<'a> {
    pub redis: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub node_id: Option<&'a str>,
    pub prefix: &'a str,
    pub timeout: Duration,
    /// `--max-line-length`: a request published carries one line.
    pub max_line_length: usize,
}

/// The longest `--cluster-timeout`: a reply waits that long at most, and
/// a backend's replies queue behind it.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// `None` without `--redis`; the flags that only mean something with it
/// are then refused, rather than silently ignored.
pub fn from_flags(
    flags: ClusterFlags,
    env_password: Option<String>,
) -> Result<Option<ClusterConfig>, String> {
    let Some(redis) = flags.redis else {
        if flags.node_id.is_some() || flags.password_file.is_some() {
            return Err("--node-id and --redis-password-file need --redis URL".into());
        }
        return Ok(None);
    };
    let url = RedisUrl::parse(redis).map_err(|e| format!("--redis: {e}"))?;
    let password = Secret::password(flags.password_file, env_password)
        .map_err(|e| format!("--redis-password-file: {e}"))?;
    if flags.password_file.is_some() && password.is_none() {
        return Err("--redis-password-file: the file is empty".into());
    }
    let node = match flags.node_id {
        Some(id) => {
            check_name("--node-id", id)?;
            id.to_string()
        }
        None => random_node_id(),
    };
    check_name("--redis-prefix", flags.prefix)?;
    if flags.timeout.is_zero() {
        return Err("--cluster-timeout must be longer than zero".into());
    }
    if flags.timeout > MAX_TIMEOUT {
        return Err(format!(
            "--cluster-timeout must be at most {}s",
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(Some(ClusterConfig {
        url,
        password,
        node,
        prefix: flags.prefix.to_string(),
        timeout: flags.timeout,
        // The line, its header and Redis's framing, with room for an
        // answer as large (a channel's members).
        max_frame: flags
            .max_line_length
            .saturating_mul(2)
            .saturating_add(1 << 20),
        // The hub's own, set with the rest of its configuration.
        history: crate::config::HistoryLimits::default(),
    }))
}

/// Node ids and the prefix go into channel names and message headers,
/// which a space or a colon would make ambiguous.
fn check_name(flag: &str, name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{flag} must be 1 to 64 letters, digits, '.', '_' or '-' (got {name:?})"
        )),
    }
}

/// 16 hex digits from the clock and the pid: unique among the hubs of a
/// cluster, which is all a node id must be.
fn random_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(redis: Option<&str>) -> ClusterFlags<'_> {
        ClusterFlags {
            redis,
            password_file: None,
            node_id: None,
            prefix: "pushhub",
            timeout: Duration::from_secs(1),
            max_line_length: 1 << 20,
        }
    }

    #[test]
    fn without_redis_a_single_hub() {
        assert!(from_flags(flags(None), None).unwrap().is_none());
        let lone = ClusterFlags {
            node_id: Some("a"),
            ..flags(None)
        };
        assert!(from_flags(lone, None).unwrap_err().contains("need --redis"));
    }

    #[test]
    fn node_ids_are_checked_or_made() {
        let a = from_flags(flags(Some("redis://127.0.0.1:6379")), None)
            .unwrap()
            .unwrap();
        let b = from_flags(flags(Some("redis://127.0.0.1:6379")), None)
            .unwrap()
            .unwrap();
        assert_eq!(a.node.len(), 16);
        assert_ne!(a.node, b.node);
        for bad in ["", "a b", "a:b", &"x".repeat(65)] {
            let f = ClusterFlags {
                node_id: Some(bad),
                ..flags(Some("redis://h"))
            };
            assert!(
                from_flags(f, None).unwrap_err().contains("--node-id"),
                "{bad:?}"
            );
        }
        let zero = ClusterFlags {
            timeout: Duration::ZERO,
            ..flags(Some("redis://h"))
        };
        assert!(from_flags(zero, None).is_err());
    }

    #[test]
    fn the_password_comes_from_the_environment() {
        let c = from_flags(flags(Some("redis://h")), Some("pw\n".into()))
            .unwrap()
            .unwrap();
        assert_eq!(c.password.unwrap().expose(), b"pw");
    }
}
