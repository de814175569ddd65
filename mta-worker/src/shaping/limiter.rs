//! Rate pacing: strict spacing between events (no bursts), so a limit such as "10/s"
//! holds in every window an ISP might measure, not just on average.

/// Next moment an event may happen, in clock milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Pacer {
    next_ms: u64,
}

impl Pacer {
    /// Claims a slot if one is free now; otherwise returns how long to wait.
    pub fn try_take(&mut self, now_ms: u64, interval_ms: u64) -> Result<(), u64> {
        if now_ms >= self.next_ms {
            self.next_ms = now_ms + interval_ms;
            Ok(())
        } else {
            Err(self.next_ms - now_ms)
        }
    }

    /// Time until the next free slot (0 when free).
    pub fn wait_ms(&self, now_ms: u64) -> u64 {
        self.next_ms.saturating_sub(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_is_strict() {
        let mut p = Pacer::default();
        assert!(p.try_take(1000, 100).is_ok());
        assert_eq!(p.try_take(1050, 100), Err(50));
        assert!(p.try_take(1100, 100).is_ok());
        assert_eq!(p.wait_ms(1100), 100);
    }
}
