//! The open-files limit: every connection is a file descriptor, so the hub (and
//! the load generator) raise their soft limit to the hard one at start.

use log::warn;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft open-files limit to the hard limit and returns the limit
/// now in force.
pub fn raise() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(1024);
    let Some(hard) = limit.maximum else {
        // An unlimited hard limit: the soft one is finite, keep it.
        return soft;
    };
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => hard,
        Err(e) => {
            warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
            soft
        }
    }
}
