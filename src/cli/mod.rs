//! `pushhub COMMAND ...`: the binary as a command-line client of its own text
//! port (`push`, `broadcast`, `publish`, `subscribe`, `unsubscribe`,
//! `channels`, `members`, `online`, `kick`, `stats`), as a token minter
//! (`token`) and as the maker of Web Push keys (`vapid-keygen`), so that
//! trying the hub needs nothing but the binary.
//!
//! The command line is sorted here, once, by its first argument: a command
//! (or `help`) runs here; anything else is the hub's flags, parsed as they
//! always were. Nothing here runs the hub or touches its state: the client
//! reaches the hub over a socket, as any backend does.
//!
//! - `args`: each command's flags and help (argh).
//! - `client`: one request line out and its reply line back, under a deadline.
//! - `commands`: the text-port commands, their requests and replies.
//! - `push_test`: `--apns-test`, `--fcm-test`, `--webpush-test` (flags of
//!   the hub's, run instead of it).
//! - `token`: `pushhub token`.
//! - `vapid_keygen`: `pushhub vapid-keygen`.

mod args;
mod client;
mod commands;
pub mod push_test;
mod token;
mod vapid_keygen;

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

use argh::{FromArgs, SubCommands};

use crate::config::{Flags, SECRET_ENV};
use crate::time::unix_now;
use args::Command;

/// Sorts the command line (`args`, the program's name first). A command or
/// `help` runs here, and so do `--help` and bad flags of the hub: each ends
/// with the process's exit status, as `Err`. `Ok` holds the hub's flags.
pub fn dispatch(args: &[String]) -> Result<Flags, ExitCode> {
    let program = args.first().map_or("pushhub", String::as_str);
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match rest.split_first() {
        Some((&"help", topic)) => Err(help(program, topic)),
        Some((name, rest)) if is_command(name) => Err(run(program, name, rest)),
        // The hub takes nothing but flags, so a word is a mistyped command.
        Some((word, _)) if !word.starts_with('-') => Err(finish(
            None,
            Outcome::failed(Failure::Usage(unknown_command(word))),
        )),
        _ => hub_flags(program, &rest),
    }
}

/// What a command ends with: the lines for stdout, and why it failed, if it did.
#[derive(Debug)]
struct Outcome {
    out: Vec<String>,
    failure: Option<Failure>,
}

impl Outcome {
    fn with(out: Vec<String>, failure: Option<Failure>) -> Outcome {
        Outcome { out, failure }
    }

    fn failed(failure: Failure) -> Outcome {
        Outcome::with(Vec::new(), Some(failure))
    }
}

/// Why a command failed, which sets its exit status: 1 when the hub said no,
/// 2 when the question could not be asked or answered.
#[derive(Debug)]
enum Failure {
    /// The hub answered no: the uid is offline, nobody took the message, or
    /// an error reply.
    Answer(String),
    /// The command line is wrong.
    Usage(String),
    /// No reply to read: the hub cannot be reached, it did not answer in
    /// time, it closed the connection, or what came is not a reply.
    Connection(String),
    /// No secret, or one that cannot be read; a key file that cannot be
    /// written.
    Config(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Answer(_) => 1,
            Failure::Usage(_) | Failure::Connection(_) | Failure::Config(_) => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Answer(m)
            | Failure::Usage(m)
            | Failure::Connection(m)
            | Failure::Config(m) => f.write_str(m),
        }
    }
}

fn is_command(word: &str) -> bool {
    Command::COMMANDS.iter().any(|c| c.name == word)
}

fn run(program: &str, name: &str, rest: &[&str]) -> ExitCode {
    let command = match Command::from_args(&[program, name], rest) {
        Ok(command) => command,
        Err(exit) => {
            return match exit.status {
                Ok(()) => print_help(&exit.output),
                Err(()) => finish(
                    Some(name),
                    Outcome::failed(Failure::Usage(format!(
                        "{} (pushhub help {name} says more)",
                        one_line(&exit.output)
                    ))),
                ),
            };
        }
    };
    let outcome = match &command {
        Command::Push(c) => commands::push(c),
        Command::Broadcast(c) => commands::broadcast(c),
        Command::Online(c) => commands::online(c),
        Command::Kick(c) => commands::kick(c),
        Command::Publish(c) => commands::publish(c),
        Command::Subscribe(c) => commands::subscribe(c.text_port(), &c.args, true),
        Command::Unsubscribe(c) => commands::subscribe(c.text_port(), &c.args, false),
        Command::Channels(c) => commands::channels(c),
        Command::Members(c) => commands::members(c),
        Command::Stats(c) => commands::stats(c),
        Command::Token(c) => token::run(c, std::env::var(SECRET_ENV).ok(), unix_now()),
        Command::VapidKeygen(c) => vapid_keygen::run(c),
    };
    finish(Some(name), outcome)
}

/// `pushhub help [COMMAND]`: what `pushhub --help` and `pushhub COMMAND
/// --help` print.
fn help(program: &str, topic: &[&str]) -> ExitCode {
    match topic {
        // `--help` never yields flags: it prints the help and exits 0.
        [] => hub_flags(program, &["--help"])
            .err()
            .unwrap_or(ExitCode::SUCCESS),
        [name] if is_command(name) => run(program, name, &["--help"]),
        [word] => finish(None, Outcome::failed(Failure::Usage(unknown_command(word)))),
        _ => finish(
            None,
            Outcome::failed(Failure::Usage(
                "help takes one command at most: pushhub help COMMAND".to_string(),
            )),
        ),
    }
}

/// The hub's flags, as `config::from_command_line` parses them, with the
/// commands added to `--help`.
fn hub_flags(program: &str, rest: &[&str]) -> Result<Flags, ExitCode> {
    Flags::from_args(&[program], rest).map_err(|exit| match exit.status {
        Ok(()) => print_help(&hub_help(&exit.output)),
        Err(()) => {
            eprintln!("{}", exit.output);
            ExitCode::from(2)
        }
    })
}

/// The hub's `--help`, then the commands, one line each.
fn hub_help(flags: &str) -> String {
    let mut help = flags.trim_end().to_string();
    help.push_str("\n\nCommands (first on the line; without one, pushhub runs the hub):\n");
    let commands = Command::COMMANDS.iter().map(|c| (c.name, c.description));
    let help_line = (
        "help",
        "print this help, or a command's: pushhub help COMMAND",
    );
    for (name, description) in commands.chain([help_line]) {
        help.push_str(&format!("  {name:<18}{description}\n"));
    }
    help
}

fn unknown_command(word: &str) -> String {
    let names: Vec<&str> = Command::COMMANDS.iter().map(|c| c.name).collect();
    format!(
        "unknown command `{word}`: the commands are {} and help; the hub itself takes \
         only flags (pushhub --help)",
        names.join(", ")
    )
}

/// argh's error text (a line, or a heading with indented names) as one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn print_help(text: &str) -> ExitCode {
    // A closed pipe (`| head`) is not a failure of the help.
    let _ = write!(std::io::stdout().lock(), "{text}");
    ExitCode::SUCCESS
}

/// Prints what `command` ended with: its lines on stdout, its failure, if
/// any, as one line on stderr. Returns the exit status.
fn finish(command: Option<&str>, outcome: Outcome) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    for line in &outcome.out {
        // A reader that went away (`| head -1`) took what it wanted.
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
    match outcome.failure {
        None => ExitCode::SUCCESS,
        Some(failure) => {
            match command {
                Some(name) => eprintln!("pushhub {name}: {failure}"),
                None => eprintln!("pushhub: {failure}"),
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_listed_in_the_hubs_help() {
        let help = hub_help("Usage: pushhub [--ws <ws>]\n\nOptions:\n  --ws  x\n");
        for name in [
            "push",
            "broadcast",
            "online",
            "kick",
            "stats",
            "token",
            "vapid-keygen",
            "help",
        ] {
            assert!(
                help.lines().any(|l| l.starts_with(&format!("  {name} "))),
                "{name} missing:\n{help}"
            );
        }
        assert!(is_command("push") && !is_command("help") && !is_command("--ws"));
    }

    #[test]
    fn argh_errors_become_one_line() {
        assert_eq!(
            one_line("Required positional arguments not provided:\n    uid\n"),
            "Required positional arguments not provided: uid"
        );
    }
}
