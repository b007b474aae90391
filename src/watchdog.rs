//! A deadline for one-shot programs on the login path.
//!
//! sshd gives all the keys a client offers one `LoginGraceTime` together, so the key
//! command must never sit on a stuck store. A busy timeout bounds waits for a lock, but not
//! everything SQLite may wait for: a read-only reader that finds a damaged WAL index retries
//! inside SQLite for about ten seconds before it reports `SQLITE_PROTOCOL`. The watchdog
//! bounds the whole answer instead: if it is not known in time, the program logs why and
//! exits, having printed nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Ends the process unless [`Watchdog::disarm`] is called in time.
pub struct Watchdog {
    /// `true` once the answer is known (or the watchdog fired).
    settled: Arc<Mutex<bool>>,
}

impl Watchdog {
    /// After `after`, runs `expire` (which logs and returns the exit status) and exits the
    /// process with its status, unless disarmed first.
    pub fn start(after: Duration, expire: impl FnOnce() -> u8 + Send + 'static) -> Watchdog {
        let settled = Arc::new(Mutex::new(false));
        let flag = Arc::clone(&settled);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            // Held until the process is gone, so the main thread cannot start its answer
            // while the watchdog is ending things.
            let mut done = flag.lock().unwrap_or_else(|e| e.into_inner());
            if *done {
                return;
            }
            *done = true;
            let status = expire();
            std::process::exit(i32::from(status));
        });
        Watchdog { settled }
    }

    /// The answer is known: the watchdog stands down. Call this before writing any output,
    /// so an answer is either written whole or not at all.
    pub fn disarm(&self) {
        *self.settled.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disarmed_watchdog_never_fires() {
        // Firing would end the test process with status 99, failing the run.
        let dog = Watchdog::start(Duration::from_millis(20), || 99);
        dog.disarm();
        std::thread::sleep(Duration::from_millis(60));
    }
}
