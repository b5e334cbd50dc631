//! The `--redis` URL: where the hub's Redis is, as a [`RedisUrl`].
//!
//! Accepted: `redis://[USER@]HOST[:PORT][/DB]` (HOST a name, an IPv4
//! address or a bracketed IPv6 one), the same with `rediss://` (TLS), and
//! `unix:///ABSOLUTE/PATH[?db=N]`. Anything else is refused with the reason,
//! rather than guessed at: a hub that quietly talks to the wrong Redis, or
//! the wrong database, splits the cluster without an error anywhere.
//!
//! A URL never carries the password: it would show in `ps`, shell history,
//! unit files and our own log lines. One that does is refused (pointing to
//! `--redis-password-file` and `PUSHHUB_REDIS_PASSWORD`), no error repeats any
//! part of it, and [`RedisUrl`] has nowhere to keep one, so its `Display` is
//! safe to log.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// Redis's own default port.
const DEFAULT_PORT: u16 = 6379;

/// Where the hub's Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `host` is a name or an IP address; an IPv6 address without its brackets.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

/// A parsed `--redis` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: Addr,
    /// The database to `SELECT`; 0 is Redis's default.
    pub db: u32,
    /// The ACL user to `AUTH` as; `None` is Redis's `default` user.
    pub username: Option<String>,
    /// `rediss://`: TLS to the server.
    pub tls: bool,
}

/// Why a `--redis` URL was refused. Only the offending piece is ever quoted,
/// and never from a URL that held a password.
#[derive(Debug, PartialEq, Eq)]
pub enum UrlError {
    /// No `scheme://` at the start.
    NotAUrl,
    UnknownScheme(String),
    /// A password in the user part or in a query parameter.
    Password,
    EmptyHost,
    /// A host with a character no host name has.
    BadHost(String),
    /// An IPv6 address without its brackets: its colons read as a port.
    UnbracketedIpv6,
    /// Between brackets, something that is not an IPv6 address.
    BadIpv6(String),
    /// Percent-encoding is not decoded, so a `%` would reach Redis literally.
    PercentEncoding,
    EmptyUsername,
    BadUsername,
    BadPort(String),
    BadDb(String),
    /// `unix://` followed by something other than `/`: a relative path, or a host.
    RelativePath(String),
    /// A unix path that names a directory (ends with `/`).
    NoSocketName(String),
    UnixUsername,
    UnknownParam(String),
    EmptyParam,
    DuplicateDb,
    /// A query on a TCP URL, where the database goes in the path.
    Query,
    Fragment,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NotAUrl => write!(
                f,
                "not a Redis URL: expected redis://HOST[:PORT][/DB], rediss://... or unix:///PATH[?db=N]"
            ),
            UrlError::UnknownScheme(scheme) => write!(
                f,
                "unknown scheme {scheme:?}: expected redis://, rediss:// or unix://"
            ),
            UrlError::Password => write!(
                f,
                "the Redis URL contains a password, which would show in process lists and logs: \
                 put it in a file named by --redis-password-file, or in PUSHHUB_REDIS_PASSWORD, \
                 and leave it out of the URL"
            ),
            UrlError::EmptyHost => write!(f, "the Redis URL has no host"),
            UrlError::BadHost(host) => write!(f, "{host:?} is not a host name or IP address"),
            UrlError::UnbracketedIpv6 => write!(
                f,
                "an IPv6 address goes in brackets, as in redis://[::1]:6379"
            ),
            UrlError::BadIpv6(inside) => write!(f, "[{inside}] is not an IPv6 address"),
            UrlError::PercentEncoding => {
                write!(f, "percent-encoding (%) is not supported in the Redis URL")
            }
            UrlError::EmptyUsername => write!(f, "the username before @ is empty"),
            UrlError::BadUsername => write!(
                f,
                "the username has a character a Redis URL cannot carry (/ ? # [ ] or whitespace)"
            ),
            UrlError::BadPort(port) => {
                write!(f, "port {port:?} is not a number from 1 to 65535")
            }
            UrlError::BadDb(db) => {
                write!(f, "database {db:?} is not a number from 0 to {}", u32::MAX)
            }
            UrlError::RelativePath(path) => write!(
                f,
                "unix://{path} is not an absolute path: write three slashes, as in unix:///run/redis.sock"
            ),
            UrlError::NoSocketName(path) => {
                write!(f, "{path:?} names a directory, not a unix socket")
            }
            UrlError::UnixUsername => write!(
                f,
                "a unix:// URL takes no username: use redis://USER@HOST for an ACL user"
            ),
            UrlError::UnknownParam(name) => write!(
                f,
                "unknown parameter {name:?} in the unix:// URL: only db=N is accepted"
            ),
            UrlError::EmptyParam => write!(f, "an empty parameter (a stray ? or &) in the URL"),
            UrlError::DuplicateDb => write!(f, "db is given more than once"),
            UrlError::Query => write!(
                f,
                "a redis:// URL takes no query: put the database in the path, as in redis://HOST:6379/2"
            ),
            UrlError::Fragment => write!(f, "a Redis URL takes no #fragment"),
        }
    }
}

impl std::error::Error for UrlError {}

impl RedisUrl {
    pub fn parse(s: &str) -> Result<RedisUrl, UrlError> {
        let (scheme, rest) = s.split_once("://").ok_or(UrlError::NotAUrl)?;
        // Only a real scheme is quoted back: the text before "://" may be anything.
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(UrlError::NotAUrl);
        }
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => parse_tcp(rest, false),
            "rediss" => parse_tcp(rest, true),
            "unix" => parse_unix(rest),
            _ => Err(UrlError::UnknownScheme(scheme.to_string())),
        }
    }
}

/// The part after `redis://` or `rediss://`.
fn parse_tcp(rest: &str, tls: bool) -> Result<RedisUrl, UrlError> {
    // The last @, not the first: a password may hold @, / or ? itself, and
    // splitting inside it would quote part of it back in another error.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(UrlError::Password);
    }
    let (rest, query) = split_query(rest)?;
    if let Some(query) = query {
        // Named like a password, it is refused as one, so its value is not quoted.
        for (name, _) in params(query)? {
            if is_password_param(name) {
                return Err(UrlError::Password);
            }
        }
        return Err(UrlError::Query);
    }
    let username = userinfo.map(parse_username).transpose()?;
    let (authority, db) = match rest.split_once('/') {
        Some((authority, "")) => (authority, 0),
        Some((authority, db)) => (authority, parse_db(db)?),
        None => (rest, 0),
    };
    let (host, port) = parse_authority(authority)?;
    Ok(RedisUrl {
        addr: Addr::Tcp { host, port },
        db,
        username,
        tls,
    })
}

/// The part after `unix://`.
fn parse_unix(rest: &str) -> Result<RedisUrl, UrlError> {
    // `unix://user:pw@/path` has a user part where the path must start; it
    // is judged before the query, which a password's `?` would seem to open.
    if !rest.starts_with('/')
        && let Some((userinfo, _)) = rest.rsplit_once('@')
    {
        return Err(if userinfo.contains(':') {
            UrlError::Password
        } else {
            UrlError::UnixUsername
        });
    }
    let (path, query) = split_query(rest)?;
    let mut db = None;
    if let Some(query) = query {
        for (name, value) in params(query)? {
            if is_password_param(name) {
                return Err(UrlError::Password);
            }
            if name != "db" {
                return Err(UrlError::UnknownParam(name.to_string()));
            }
            if db.is_some() {
                return Err(UrlError::DuplicateDb);
            }
            db = Some(parse_db(value.unwrap_or_default())?);
        }
    }
    if !path.starts_with('/') {
        return Err(UrlError::RelativePath(path.to_string()));
    }
    if path.contains('%') {
        return Err(UrlError::PercentEncoding);
    }
    if path.ends_with('/') {
        return Err(UrlError::NoSocketName(path.to_string()));
    }
    Ok(RedisUrl {
        addr: Addr::Unix(PathBuf::from(path)),
        db: db.unwrap_or(0),
        username: None,
        tls: false,
    })
}

/// Splits off `?query`, refusing a `#fragment` anywhere.
fn split_query(s: &str) -> Result<(&str, Option<&str>), UrlError> {
    if s.contains('#') {
        return Err(UrlError::Fragment);
    }
    Ok(match s.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (s, None),
    })
}

/// `name=value&...`, each value optional.
fn params(query: &str) -> Result<Vec<(&str, Option<&str>)>, UrlError> {
    query
        .split('&')
        .map(|param| match param.split_once('=') {
            _ if param.is_empty() => Err(UrlError::EmptyParam),
            Some((name, value)) => Ok((name, Some(value))),
            None => Ok((param, None)),
        })
        .collect()
}

fn is_password_param(name: &str) -> bool {
    ["password", "pass", "passwd", "pwd", "requirepass"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

fn parse_username(user: &str) -> Result<String, UrlError> {
    if user.is_empty() {
        return Err(UrlError::EmptyUsername);
    }
    if user.contains('%') {
        return Err(UrlError::PercentEncoding);
    }
    if user
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/?#[]".contains(c))
    {
        return Err(UrlError::BadUsername);
    }
    Ok(user.to_string())
}

/// `HOST[:PORT]`, HOST possibly `[IPv6]`.
fn parse_authority(authority: &str) -> Result<(String, u16), UrlError> {
    if authority.contains('%') {
        // Also an IPv6 zone (`[fe80::1%eth0]`), which would need decoding (`%25`).
        return Err(UrlError::PercentEncoding);
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::BadIpv6(bracketed.to_string()))?;
        if inside.is_empty() {
            return Err(UrlError::EmptyHost);
        }
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::BadIpv6(inside.to_string()));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| UrlError::BadHost(authority.to_string()))?,
            ),
        };
        (inside, port)
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => return Err(UrlError::UnbracketedIpv6),
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    let is_ipv6 = authority.starts_with('[');
    if !is_ipv6
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(UrlError::BadHost(host.to_string()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => parse_port(port)?,
    };
    Ok((host.to_string(), port))
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    // Digits only: `u16::from_str` would also take a leading `+`.
    let bad = || UrlError::BadPort(port.to_string());
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

/// Any u32: Redis's 16 databases are only its default (`databases` in its config).
fn parse_db(db: &str) -> Result<u32, UrlError> {
    if db.is_empty() || !db.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::BadDb(db.to_string()));
    }
    db.parse().map_err(|_| UrlError::BadDb(db.to_string()))
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.addr {
            Addr::Tcp { host, port } => {
                f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
                if let Some(user) = &self.username {
                    write!(f, "{user}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]:{port}")?;
                } else {
                    write!(f, "{host}:{port}")?;
                }
                if self.db != 0 {
                    write!(f, "/{}", self.db)?;
                }
            }
            Addr::Unix(path) => {
                write!(f, "unix://{}", path.display())?;
                if self.db != 0 {
                    write!(f, "?db={}", self.db)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, db: u32) -> RedisUrl {
        RedisUrl {
            addr: Addr::Tcp {
                host: host.to_string(),
                port,
            },
            db,
            username: None,
            tls: false,
        }
    }

    fn unix(path: &str, db: u32) -> RedisUrl {
        RedisUrl {
            addr: Addr::Unix(PathBuf::from(path)),
            db,
            username: None,
            tls: false,
        }
    }

    fn parsed(s: &str) -> RedisUrl {
        RedisUrl::parse(s).unwrap_or_else(|e| panic!("{s:?} was refused: {e}"))
    }

    fn refused(s: &str) -> UrlError {
        match RedisUrl::parse(s) {
            Ok(url) => panic!("{s:?} was accepted as {url:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_host_alone_is_port_6379_db_0() {
        assert_eq!(parsed("redis://localhost"), tcp("localhost", 6379, 0));
        assert_eq!(parsed("redis://localhost/"), tcp("localhost", 6379, 0));
        assert_eq!(parsed("redis://10.0.0.5"), tcp("10.0.0.5", 6379, 0));
        assert_eq!(
            parsed("redis://redis-1.internal_net.example"),
            tcp("redis-1.internal_net.example", 6379, 0)
        );
    }

    #[test]
    fn port_and_db_are_read() {
        assert_eq!(parsed("redis://h:7000"), tcp("h", 7000, 0));
        assert_eq!(parsed("redis://h:7000/3"), tcp("h", 7000, 3));
        assert_eq!(parsed("redis://h/2"), tcp("h", 6379, 2));
        assert_eq!(parsed("redis://h:1"), tcp("h", 1, 0));
        assert_eq!(parsed("redis://h:65535"), tcp("h", 65535, 0));
        assert_eq!(parsed("redis://h:06379"), tcp("h", 6379, 0));
    }

    #[test]
    fn any_u32_db_is_accepted() {
        assert_eq!(parsed("redis://h/16").db, 16);
        assert_eq!(parsed("redis://h/4294967295").db, u32::MAX);
        assert_eq!(parsed("unix:///s?db=4294967295").db, u32::MAX);
    }

    #[test]
    fn ipv6_literals_go_in_brackets() {
        assert_eq!(parsed("redis://[::1]"), tcp("::1", 6379, 0));
        assert_eq!(parsed("redis://[::1]:7000/1"), tcp("::1", 7000, 1));
        assert_eq!(
            parsed("redis://[2001:db8::10]:6380"),
            tcp("2001:db8::10", 6380, 0)
        );
    }

    #[test]
    fn a_username_is_the_acl_user() {
        let url = parsed("redis://alice@h:6379/4");
        assert_eq!(url.username.as_deref(), Some("alice"));
        assert_eq!(url.addr, tcp("h", 6379, 4).addr);
        assert_eq!(url.db, 4);
        assert_eq!(
            parsed("redis://hub.eu-1@[::1]").username.as_deref(),
            Some("hub.eu-1")
        );
    }

    #[test]
    fn rediss_is_tls() {
        let url = parsed("rediss://bob@h:6380/1");
        assert!(url.tls);
        assert_eq!(url.username.as_deref(), Some("bob"));
        assert_eq!(url.addr, tcp("h", 6380, 0).addr);
        assert!(!parsed("redis://h").tls);
    }

    #[test]
    fn schemes_are_case_insensitive() {
        assert_eq!(parsed("REDIS://h"), tcp("h", 6379, 0));
        assert!(parsed("Rediss://h").tls);
        assert_eq!(parsed("UNIX:///s"), unix("/s", 0));
    }

    #[test]
    fn unix_sockets_take_an_absolute_path_and_maybe_a_db() {
        assert_eq!(
            parsed("unix:///run/redis/redis.sock"),
            unix("/run/redis/redis.sock", 0)
        );
        assert_eq!(
            parsed("unix:///run/redis.sock?db=3"),
            unix("/run/redis.sock", 3)
        );
        // @ and : are plain path characters there: no user part to mistake them for.
        assert_eq!(parsed("unix:///tmp/a@b:c.sock"), unix("/tmp/a@b:c.sock", 0));
    }

    #[test]
    fn display_gives_the_url_back() {
        for (input, shown) in [
            ("redis://h", "redis://h:6379"),
            ("redis://h:7000/3", "redis://h:7000/3"),
            ("redis://h/0", "redis://h:6379"),
            ("redis://[::1]:7000/1", "redis://[::1]:7000/1"),
            ("redis://alice@h/4", "redis://alice@h:6379/4"),
            ("rediss://bob@h:6380", "rediss://bob@h:6380"),
            ("REDIS://h", "redis://h:6379"),
            ("unix:///run/redis.sock", "unix:///run/redis.sock"),
            ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
            ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock"),
        ] {
            let url = parsed(input);
            assert_eq!(url.to_string(), shown, "{input}");
            assert_eq!(parsed(shown), url, "{shown} reads back as {input}");
        }
    }

    #[test]
    fn display_never_shows_a_password() {
        // The password is never in a RedisUrl; the user part shows no `:`.
        let url = parsed("rediss://alice@h:6380/2");
        let shown = url.to_string();
        assert_eq!(shown, "rediss://alice@h:6380/2");
        let user_part = shown
            .split_once("://")
            .unwrap()
            .1
            .split_once('@')
            .unwrap()
            .0;
        assert!(!user_part.contains(':'), "{shown}");
    }

    #[test]
    fn a_password_is_refused_without_being_repeated() {
        for input in [
            "redis://:hunter2@h",
            "redis://:hunter2@h:6379/1",
            "redis://alice:hunter2@h",
            "rediss://alice:hunter2@h:6380",
            // A password with the URL's own delimiters in it.
            "redis://alice:hun/ter2@h",
            "redis://alice:hun@ter2@h",
            "redis://:hunter2?x@h",
            "redis://:hunter2#x@h",
            "redis://alice:hunter2@",
            "redis://h?password=hunter2",
            "redis://h/0?pass=hunter2",
            "unix://:hunter2@/run/redis.sock",
            "unix://alice:hunter2@/run/redis.sock",
            "unix://:hun?ter2@/run/redis.sock",
            "unix://:hun#ter2@/run/redis.sock",
            "unix:///run/redis.sock?password=hunter2",
            "unix:///run/redis.sock?db=1&PASSWORD=hunter2",
        ] {
            let e = refused(input);
            let (shown, debug) = (e.to_string(), format!("{e:?}"));
            assert!(
                !shown.contains("hunter2") && !shown.contains("hun"),
                "{input}: {shown}"
            );
            assert!(!debug.contains("hun"), "{input}: {debug}");
            assert_eq!(e, UrlError::Password, "{input}");
            assert!(shown.contains("--redis-password-file"), "{shown}");
            assert!(shown.contains("PUSHHUB_REDIS_PASSWORD"), "{shown}");
        }
    }

    #[test]
    fn what_is_not_a_url_is_not_quoted() {
        for input in ["localhost:6379", "", "redis:/h", "alice:hunter2@h://x"] {
            let e = refused(input);
            assert_eq!(e, UrlError::NotAUrl, "{input}");
            assert!(!e.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn unknown_schemes_are_refused() {
        assert_eq!(
            refused("http://h"),
            UrlError::UnknownScheme("http".to_string())
        );
        assert_eq!(
            refused("redis+unix:///s"),
            UrlError::UnknownScheme("redis+unix".to_string())
        );
        assert_eq!(
            refused("valkey://h"),
            UrlError::UnknownScheme("valkey".to_string())
        );
        assert!(refused("tcp://h").to_string().contains("redis://"));
    }

    #[test]
    fn a_host_is_required() {
        for input in [
            "redis://",
            "redis://:6379",
            "redis:///1",
            "redis://alice@",
            "redis://alice@:6379",
            "redis://[]",
            "redis://[]:6379",
            "rediss://",
        ] {
            assert_eq!(refused(input), UrlError::EmptyHost, "{input}");
        }
    }

    #[test]
    fn odd_hosts_are_refused() {
        assert_eq!(
            refused("redis://ho st"),
            UrlError::BadHost("ho st".to_string())
        );
        assert_eq!(refused("redis://h!"), UrlError::BadHost("h!".to_string()));
        assert_eq!(refused("redis://::1"), UrlError::UnbracketedIpv6);
        assert_eq!(
            refused("redis://2001:db8::1:6379"),
            UrlError::UnbracketedIpv6
        );
        assert_eq!(
            refused("redis://[::g]"),
            UrlError::BadIpv6("::g".to_string())
        );
        assert_eq!(
            refused("redis://[10.0.0.1]"),
            UrlError::BadIpv6("10.0.0.1".to_string())
        );
        assert_eq!(
            refused("redis://[::1"),
            UrlError::BadIpv6("::1".to_string())
        );
        assert_eq!(
            refused("redis://[::1]x"),
            UrlError::BadHost("[::1]x".to_string())
        );
    }

    #[test]
    fn percent_encoding_is_refused() {
        for input in [
            "redis://h%41",
            "redis://[fe80::1%25eth0]",
            "redis://al%40ce@h",
            "unix:///run/redis%20x.sock",
        ] {
            assert_eq!(refused(input), UrlError::PercentEncoding, "{input}");
        }
    }

    #[test]
    fn odd_usernames_are_refused() {
        assert_eq!(refused("redis://@h"), UrlError::EmptyUsername);
        assert_eq!(refused("redis://al ice@h"), UrlError::BadUsername);
        assert_eq!(refused("redis://al[ice@h"), UrlError::BadUsername);
        assert_eq!(refused("redis://h/0@x"), UrlError::BadUsername);
        assert_eq!(
            refused("unix://alice@/run/redis.sock"),
            UrlError::UnixUsername
        );
    }

    #[test]
    fn bad_ports_are_refused() {
        for port in [
            "",
            "0",
            "00",
            "65536",
            "99999999999",
            "abc",
            "+1",
            "-1",
            "1x",
            " 1",
        ] {
            assert_eq!(
                refused(&format!("redis://h:{port}")),
                UrlError::BadPort(port.to_string()),
                "{port:?}"
            );
        }
        assert_eq!(refused("redis://[::1]:"), UrlError::BadPort(String::new()));
        assert_eq!(
            refused("redis://[::1]:0"),
            UrlError::BadPort("0".to_string())
        );
        assert!(refused("redis://h:0").to_string().contains("1 to 65535"));
    }

    #[test]
    fn bad_dbs_are_refused() {
        for db in ["x", "1/2", "-1", "+1", "4294967296", "1.0", " 1"] {
            assert_eq!(
                refused(&format!("redis://h/{db}")),
                UrlError::BadDb(db.to_string()),
                "{db:?}"
            );
        }
        assert_eq!(refused("unix:///s?db=x"), UrlError::BadDb("x".to_string()));
        assert_eq!(refused("unix:///s?db="), UrlError::BadDb(String::new()));
        assert_eq!(refused("unix:///s?db"), UrlError::BadDb(String::new()));
    }

    #[test]
    fn unix_paths_must_be_absolute_socket_paths() {
        assert_eq!(
            refused("unix://run/redis.sock"),
            UrlError::RelativePath("run/redis.sock".to_string())
        );
        assert_eq!(refused("unix://"), UrlError::RelativePath(String::new()));
        assert_eq!(
            refused("unix://?db=1"),
            UrlError::RelativePath(String::new())
        );
        assert_eq!(refused("unix:///"), UrlError::NoSocketName("/".to_string()));
        assert_eq!(
            refused("unix:///run/redis/"),
            UrlError::NoSocketName("/run/redis/".to_string())
        );
        assert!(
            refused("unix://run/redis.sock")
                .to_string()
                .contains("unix:///")
        );
    }

    #[test]
    fn unix_queries_take_only_one_db() {
        assert_eq!(
            refused("unix:///s?timeout=1"),
            UrlError::UnknownParam("timeout".to_string())
        );
        assert_eq!(
            refused("unix:///s?db=1&user=alice"),
            UrlError::UnknownParam("user".to_string())
        );
        assert_eq!(refused("unix:///s?db=1&db=2"), UrlError::DuplicateDb);
        assert_eq!(refused("unix:///s?"), UrlError::EmptyParam);
        assert_eq!(refused("unix:///s?db=1&"), UrlError::EmptyParam);
    }

    #[test]
    fn tcp_urls_take_no_query_or_fragment() {
        assert_eq!(refused("redis://h?db=1"), UrlError::Query);
        assert_eq!(refused("redis://h:6379/0?timeout=1"), UrlError::Query);
        assert_eq!(refused("redis://h?"), UrlError::EmptyParam);
        assert_eq!(refused("redis://h#x"), UrlError::Fragment);
        assert_eq!(refused("unix:///s#x"), UrlError::Fragment);
    }

    #[test]
    fn every_error_says_something() {
        let all = [
            UrlError::NotAUrl,
            UrlError::UnknownScheme("x".into()),
            UrlError::Password,
            UrlError::EmptyHost,
            UrlError::BadHost("x".into()),
            UrlError::UnbracketedIpv6,
            UrlError::BadIpv6("x".into()),
            UrlError::PercentEncoding,
            UrlError::EmptyUsername,
            UrlError::BadUsername,
            UrlError::BadPort("x".into()),
            UrlError::BadDb("x".into()),
            UrlError::RelativePath("x".into()),
            UrlError::NoSocketName("x".into()),
            UrlError::UnixUsername,
            UrlError::UnknownParam("x".into()),
            UrlError::EmptyParam,
            UrlError::DuplicateDb,
            UrlError::Query,
            UrlError::Fragment,
        ];
        for e in all {
            assert!(e.to_string().len() > 15, "{e:?}: {e}");
        }
    }
}
