//! Fixed-window rate limits per key (an address for sign-in, a user for key changes).

use gatehouse::time::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct RateLimit {
    per_minute: u32,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one event for `key` at `now`; false once the minute's allowance is spent.
    pub fn allow(&self, key: &str, now: Timestamp) -> bool {
        let minute = now.as_secs().div_euclid(60);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 100_000 {
            // Old windows are useless; drop them rather than grow without bound.
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(key.to_string()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_per_minute_then_refuses() {
        let at = Timestamp::from_secs;
        let limit = RateLimit::new(3);
        assert!((0..3).all(|_| limit.allow("a", at(60))));
        assert!(!limit.allow("a", at(61)));
        assert!(limit.allow("b", at(61)), "keys are separate");
        assert!(limit.allow("a", at(120)), "a new minute");
    }
}
