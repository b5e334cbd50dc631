//! Time: deadlines on futures, and the wall clock in the unit tokens and
//! certificates use.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Runs `future` for at most `limit`: `None` if the time ran out first.
pub async fn timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

/// Seconds since the Unix epoch, the unit of a token's `exp` and `nbf`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
