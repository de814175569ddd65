//! The per-backend health state machine: rise/fall hysteresis over check results.
//!
//! Pure and synchronous so that every transition is unit-tested without sockets.

use serde::Serialize;

/// What the balancer believes about a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet. Counted as usable, so that a (re)started daemon never empties a
    /// ring while the first checks run; the first result decides immediately.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn usable(self) -> bool {
        self != Health::Down
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Counts consecutive results and flips state after `rise` successes or `fall` failures.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    state: Health,
    ok_run: u32,
    fail_run: u32,
    rise: u32,
    fall: u32,
}

impl HealthTracker {
    pub fn new(rise: u32, fall: u32) -> Self {
        HealthTracker {
            state: Health::Unknown,
            ok_run: 0,
            fail_run: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Changes the thresholds (config reload) without forgetting the current state.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// Feeds one check result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.ok_run = self.ok_run.saturating_add(1);
            self.fail_run = 0;
        } else {
            self.fail_run = self.fail_run.saturating_add(1);
            self.ok_run = 0;
        }
        let next = match self.state {
            Health::Unknown if ok => Health::Up,
            Health::Unknown => Health::Down,
            Health::Up if self.fail_run >= self.fall => Health::Down,
            Health::Down if self.ok_run >= self.rise => Health::Up,
            s => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_result_decides() {
        let mut t = HealthTracker::new(2, 3);
        assert_eq!(t.state(), Health::Unknown);
        assert!(t.state().usable());
        assert_eq!(t.observe(true), Some(Health::Up));
        let mut t = HealthTracker::new(2, 3);
        assert_eq!(t.observe(false), Some(Health::Down));
        assert!(!t.state().usable());
    }

    #[test]
    fn falls_after_fall_consecutive_failures() {
        let mut t = HealthTracker::new(2, 3);
        t.observe(true);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(Health::Down));
        assert_eq!(t.observe(false), None);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut t = HealthTracker::new(2, 3);
        t.observe(true);
        for _ in 0..10 {
            assert_eq!(t.observe(false), None);
            assert_eq!(t.observe(false), None);
            assert_eq!(t.observe(true), None);
        }
        assert_eq!(t.state(), Health::Up);
    }

    #[test]
    fn rises_after_rise_consecutive_successes() {
        let mut t = HealthTracker::new(2, 3);
        t.observe(false);
        assert_eq!(t.state(), Health::Down);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None, "flapping does not bring it back");
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(Health::Up));
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut t = HealthTracker::new(1, 1);
        t.observe(true);
        assert_eq!(t.observe(false), Some(Health::Down));
        assert_eq!(t.observe(true), Some(Health::Up));
    }

    #[test]
    fn thresholds_change_without_losing_state() {
        let mut t = HealthTracker::new(2, 3);
        t.observe(true);
        t.set_thresholds(5, 1);
        assert_eq!(t.state(), Health::Up);
        assert_eq!(t.observe(false), Some(Health::Down));
    }
}
