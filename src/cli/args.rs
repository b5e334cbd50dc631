//! The commands' flags and help, parsed by argh. The names are an interface:
//! the README, the Makefile and people's scripts use them.
//!
//! argh has no flattening, so the flags every text-port command shares are
//! written once, in the `text_port_command!` macro that declares each
//! command's struct.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::channel::{Pattern, check_name};
use crate::config::parse_duration;

/// How long a command waits for the connection and the reply together, unless
/// `--timeout` says otherwise: a hub on the same machine answers in
/// milliseconds, so this only ends waits that would never end.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A token's lifetime, unless `--ttl` says otherwise: long enough to try
/// things by hand, as short as the README advises for pages.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The commands, each named by the first argument.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Push(Push),
    Broadcast(Broadcast),
    Online(Online),
    Kick(Kick),
    Publish(Publish),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Channels(Channels),
    Members(Members),
    Stats(Stats),
    Token(Token),
    VapidKeygen(VapidKeygen),
}

/// Where a text-port command asks, and how it answers.
#[derive(Debug, Clone, Copy)]
pub struct TextPort {
    pub addr: SocketAddr,
    /// Print the reply line as it came instead of a sentence.
    pub json: bool,
    pub timeout: Duration,
}

fn default_text() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5678))
}

/// A duration above zero: a zero timeout could never be met.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("--timeout must be longer than zero".to_string()),
        d => Ok(d),
    }
}

/// Whole seconds, at least one: a token's `exp` counts seconds, and one that
/// is already due would be refused at once.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.as_secs() == 0 => Err("--ttl must be at least 1s".to_string()),
        d => Ok(d),
    }
}

macro_rules! text_port_command {
    // The command's own fields pass through as raw tokens: argh must see
    // `Option<..>` and `Vec<..>` spelled out, which a `ty` fragment would hide.
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($fields:tt)* }
    ) => {
        #[derive(FromArgs, Debug)]
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// the hub's text port [default: 127.0.0.1:5678]
            #[argh(option, arg_name = "addr", default = "default_text()")]
            pub text: SocketAddr,
            /// print the hub's reply line exactly as it came, instead of a
            /// sentence [default: off]
            #[argh(switch)]
            pub json: bool,
            /// give up (exit 2) when connecting and the reply together take
            /// longer than this [default: 5s]
            #[argh(
                option,
                arg_name = "duration",
                default = "DEFAULT_TIMEOUT",
                from_str_fn(parse_timeout)
            )]
            pub timeout: Duration,
        }

        impl $name {
            pub fn text_port(&self) -> TextPort {
                TextPort {
                    addr: self.text,
                    json: self.json,
                    timeout: self.timeout,
                }
            }
        }
    };
}

text_port_command! {
    /// push DATA to the connections of UID, or send --raw LINE
    #[argh(
        subcommand,
        name = "push",
        help_triggers("-h", "--help"),
        usage = "(<uid> <data> | --raw <line>) [--text <addr>] [--json] [--timeout <duration>]",
        example = "{command_name} uid1 hello",
        example = "{command_name} uid1 '{{\"percent\":\"88%\"}}'",
        example = "{command_name} --raw '{{\"uid\":\"uid1\",\"percent\":\"88%\"}}'",
        note = "DATA is sent as JSON when it is JSON ({{\"a\":1}}, 42, '\"quoted\"'), and as a\n\
                string otherwise (hello is \"hello\"). The client receives a string's\n\
                contents, and any other value as its JSON text. A DATA that starts\n\
                with - goes after --: {command_name} uid1 -- -5",
        note = "\nExit status: 0 when at least one connection took it (with --raw: ok, or\n\
                \"ok\":true); 1 when none did, or the hub answered fail or an error; 2 for\n\
                bad arguments, and when the hub cannot be reached or does not answer."
    )]
    pub struct Push {
        /// the uid, then the data; neither with --raw
        #[argh(positional, arg_name = "uid data")]
        pub args: Vec<String>,
        /// send this request line as it is and print the reply as it came: the
        /// Workerman original's {"uid":"uid1",...}, answered ok or fail, or any
        /// command
        #[argh(option, arg_name = "line")]
        pub raw: Option<String>,
    }
}

text_port_command! {
    /// push DATA to every authenticated connection
    #[argh(
        subcommand,
        name = "broadcast",
        help_triggers("-h", "--help"),
        example = "{command_name} 'maintenance at 22:00'",
        note = "DATA is taken as for push: JSON when it is JSON, a string otherwise.",
        note = "\nExit status: 0 when at least one connection took it; 1 when none did, or\n\
                the hub answered an error; 2 for bad arguments, and when the hub cannot\n\
                be reached or does not answer."
    )]
    pub struct Broadcast {
        /// what to send
        #[argh(positional)]
        pub data: String,
    }
}

text_port_command! {
    /// say whether each UID is online, with its connections
    #[argh(
        subcommand,
        name = "online",
        help_triggers("-h", "--help"),
        example = "{command_name} uid1",
        example = "{command_name} uid1 uid2 42",
        note = "Prints one line per uid, in the order given.",
        note = "\nExit status: 0 when every uid is online; 1 when one is not, or the hub\n\
                answered an error; 2 for bad arguments, and when the hub cannot be\n\
                reached or does not answer."
    )]
    pub struct Online {
        /// one uid or several
        #[argh(positional, arg_name = "uid")]
        pub uids: Vec<String>,
    }
}

text_port_command! {
    /// close every connection of UID (close code 4000)
    #[argh(
        subcommand,
        name = "kick",
        help_triggers("-h", "--help"),
        example = "{command_name} uid1",
        note = "\nExit status: 0 when a connection was closed; 1 when the uid had none, or\n\
                the hub answered an error; 2 for bad arguments, and when the hub cannot\n\
                be reached or does not answer."
    )]
    pub struct Kick {
        /// the uid to disconnect
        #[argh(positional)]
        pub uid: String,
    }
}

text_port_command! {
    /// publish DATA to every subscriber of the channel CH
    #[argh(
        subcommand,
        name = "publish",
        help_triggers("-h", "--help"),
        example = "{command_name} room:42 '{{\"text\":\"hi\"}}'",
        note = "DATA is taken as for push: JSON when it is JSON, a string otherwise.",
        note = "\nExit status: 0 when at least one connection took it; 1 when none did, or\n\
                the hub answered an error (a bad channel name); 2 for bad arguments, and\n\
                when the hub cannot be reached or does not answer."
    )]
    pub struct Publish {
        /// the channel
        #[argh(positional)]
        pub ch: String,
        /// what to send
        #[argh(positional)]
        pub data: String,
    }
}

text_port_command! {
    /// subscribe the connections of UID to the channels CH...
    #[argh(
        subcommand,
        name = "subscribe",
        help_triggers("-h", "--help"),
        example = "{command_name} uid1 room:42 news",
        note = "Only the uid's connections open now are subscribed, raw clients too\n\
                (they then receive the channels' publications as plain messages).",
        note = "\nExit status: 0 when a connection was newly subscribed; 1 when none was\n\
                (the uid is offline, already subscribed, or at a limit), or the hub\n\
                answered an error; 2 for bad arguments, and when the hub cannot be\n\
                reached or does not answer."
    )]
    pub struct Subscribe {
        /// the uid, then one channel or several
        #[argh(positional, arg_name = "uid ch")]
        pub args: Vec<String>,
    }
}

text_port_command! {
    /// unsubscribe the connections of UID from the channels CH...
    #[argh(
        subcommand,
        name = "unsubscribe",
        help_triggers("-h", "--help"),
        example = "{command_name} uid1 room:42",
        note = "\nExit status: 0 when a connection was unsubscribed; 1 when none was, or\n\
                the hub answered an error; 2 for bad arguments, and when the hub cannot\n\
                be reached or does not answer."
    )]
    pub struct Unsubscribe {
        /// the uid, then one channel or several
        #[argh(positional, arg_name = "uid ch")]
        pub args: Vec<String>,
    }
}

text_port_command! {
    /// list the channels that have subscribers (starting with PREFIX)
    #[argh(
        subcommand,
        name = "channels",
        help_triggers("-h", "--help"),
        example = "{command_name}",
        example = "{command_name} room:",
        note = "Prints one line per channel: its name and its connections.",
        note = "\nExit status: 0 when the hub answered; 1 when it answered an error; 2 for\n\
                bad arguments, and when the hub cannot be reached or does not answer."
    )]
    pub struct Channels {
        /// only the channels whose name starts with this
        #[argh(positional, default = "String::new()")]
        pub prefix: String,
    }
}

text_port_command! {
    /// list the uids subscribed to the channel CH
    #[argh(
        subcommand,
        name = "members",
        help_triggers("-h", "--help"),
        example = "{command_name} room:42",
        note = "Prints the connection count, then one uid per line.",
        note = "\nExit status: 0 when the channel has subscribers; 1 when it has none, or\n\
                the hub answered an error; 2 for bad arguments, and when the hub cannot\n\
                be reached or does not answer."
    )]
    pub struct Members {
        /// the channel
        #[argh(positional)]
        pub ch: String,
    }
}

text_port_command! {
    /// print the hub's counters (--json: all of them)
    #[argh(
        subcommand,
        name = "stats",
        help_triggers("-h", "--help"),
        example = "{command_name}",
        example = "{command_name} --json",
        note = "Exit status: 0 when the hub answered; 1 when it answered an error; 2 for\n\
                bad arguments, and when the hub cannot be reached or does not answer."
    )]
    pub struct Stats {}
}

/// print an HS256 token for UID, signed with the hub's secret
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "token",
    help_triggers("-h", "--help"),
    usage = "<uid> [--ttl <duration>] [--channel <pattern>...] [--publish <pattern>...] \
             [--sub <channel>...] [--secret-file <path>]",
    example = "{command_name} uid1 --secret-file /etc/pushhub/secret",
    example = "PUSHHUB_SECRET=... {command_name} uid1 --ttl 10m",
    example = "{command_name} uid1 --channel 'room:*' --publish room:42 --sub news",
    note = "A PATTERN is a channel name (printable ASCII, no spaces, 1 to 255 bytes)\n\
            or a prefix ending in * (room:*; * alone is every channel). The grants\n\
            are the token's channels, publish and subs claims, left out when empty.",
    note = "\nThe secret is read as the hub reads it: the file's bytes, or the value of\n\
            PUSHHUB_SECRET, with surrounding whitespace trimmed; the file wins if both\n\
            are given. It is never a flag's value: command lines are visible in ps.",
    note = "\nExit status: 0 with the token on stdout; 2 for bad arguments (a uid the\n\
            hub would refuse, a bad pattern or channel name), and when there is no\n\
            secret or it cannot be read."
)]
pub struct Token {
    /// the uid the token proves (its sub claim)
    #[argh(positional)]
    pub uid: String,
    /// how long the token is valid, e.g. 10m [default: 1h]
    #[argh(
        option,
        arg_name = "duration",
        default = "DEFAULT_TTL",
        from_str_fn(parse_ttl)
    )]
    pub ttl: Duration,
    /// a channel pattern the client may subscribe to (repeatable)
    #[argh(option, arg_name = "pattern", from_str_fn(parse_pattern))]
    pub channel: Vec<Pattern>,
    /// a channel pattern the client may publish to (repeatable)
    #[argh(option, arg_name = "pattern", from_str_fn(parse_pattern))]
    pub publish: Vec<Pattern>,
    /// a channel the connection is subscribed to as it connects (repeatable)
    #[argh(option, arg_name = "channel", from_str_fn(parse_channel))]
    pub sub: Vec<String>,
    /// file holding the HS256 token secret (PUSHHUB_SECRET works too)
    /// [default: none]
    #[argh(option, arg_name = "path")]
    pub secret_file: Option<PathBuf>,
}

/// A pattern by the rules the hub applies to a token's claims, so that a
/// token minted here is never refused for its grants.
fn parse_pattern(s: &str) -> Result<Pattern, String> {
    Pattern::parse(s).map_err(|e| e.to_string())
}

fn parse_channel(s: &str) -> Result<String, String> {
    check_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// write a new Web Push (VAPID) key to PATH and print its public key
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "vapid-keygen",
    help_triggers("-h", "--help"),
    example = "{command_name} /etc/pushhub/vapid.pem",
    note = "Writes a new P-256 private key to PATH as PKCS#8 PEM, readable by its\n\
            owner only (mode 0600), and prints the public key, base64url: the\n\
            applicationServerKey a page gives pushManager.subscribe. An existing\n\
            file is never overwritten. Sending Web Push is not there yet.",
    note = "\nExit status: 0 with the public key on stdout; 2 when PATH exists or\n\
            cannot be written."
)]
pub struct VapidKeygen {
    /// where to write the private key; must not exist yet
    #[argh(positional)]
    pub path: PathBuf,
}
