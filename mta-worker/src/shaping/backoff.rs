//! Adaptive backoff: replies that mean "slow down" (matched by code and text) suspend or
//! slow a (source, site) pair, which then ramps back up gradually instead of slamming the
//! ISP at full speed the moment the penalty ends.

use super::config::{BackoffAction, BackoffRule};
use super::units::Threshold;
use super::Shaping;
use regex::Regex;
use std::collections::VecDeque;
use std::time::Duration;

/// A rule ready to match.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub code: String,
    pub re: Option<Regex>,
    pub threshold: Threshold,
    pub action: BackoffAction,
    pub duration: Duration,
    pub factor: f64,
}

impl CompiledRule {
    pub fn compile(r: &BackoffRule) -> Result<Self, String> {
        if r.code.is_empty() || !r.code.bytes().all(|b| b.is_ascii_digit()) || r.code.len() > 3 {
            return Err(format!(
                "code {:?} must be 1 to 3 digits (a reply code prefix)",
                r.code
            ));
        }
        let re = match &r.text {
            Some(t) => Some(Regex::new(t).map_err(|e| format!("text regex {t:?}: {e}"))?),
            None => None,
        };
        let duration = match (r.action, r.duration) {
            (BackoffAction::Suspend, None) => {
                return Err("action \"suspend\" needs a duration".into())
            }
            (_, d) => d.map(|d| d.0).unwrap_or_default(),
        };
        let factor = r.factor.unwrap_or(0.5);
        if !(0.0..1.0).contains(&factor) || factor == 0.0 {
            return Err(format!("factor {factor} must be between 0 and 1"));
        }
        Ok(Self {
            code: r.code.clone(),
            re,
            threshold: r.threshold.unwrap_or(Threshold {
                count: 1,
                window: Duration::from_secs(60),
            }),
            action: r.action,
            duration,
            factor,
        })
    }

    pub fn matches(&self, code: u16, enhanced: &str, text: &str) -> bool {
        if !code.to_string().starts_with(&self.code) {
            return false;
        }
        match &self.re {
            Some(re) => re.is_match(&format!("{code} {enhanced} {text}")),
            None => true,
        }
    }
}

/// Rules appended unless `builtin_backoff_rules = false`: the replies big ISPs use to
/// say "you are sending too fast".
pub fn builtin_rules() -> Vec<CompiledRule> {
    let slow = r"(?i)(try again later|too many|rate|throttl|temporarily (deferred|rejected)|4\.7\.0|4\.7\.28|4\.2\.1)";
    let three_in_5m = Threshold {
        count: 3,
        window: Duration::from_secs(300),
    };
    vec![
        CompiledRule {
            code: "421".into(),
            re: Regex::new(slow).ok(),
            threshold: three_in_5m,
            action: BackoffAction::Suspend,
            duration: Duration::from_secs(600),
            factor: 0.5,
        },
        CompiledRule {
            code: "45".into(),
            re: Regex::new(slow).ok(),
            threshold: three_in_5m,
            action: BackoffAction::Reduce,
            duration: Duration::ZERO,
            factor: 0.5,
        },
    ]
}

/// What a reply did to the pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fired {
    Suspended { until_ms: u64 },
    Reduced { scale: f64 },
}

/// Backoff state of one (source, site).
#[derive(Debug, Default, Clone)]
pub struct Adaptive {
    hits: Vec<VecDeque<u64>>,
    suspended_until: u64,
    manual: bool,
    ramp_t0: u64,
    ramp_s0: f64,
}

impl Adaptive {
    /// Feeds one reply; returns the action if a rule fired.
    pub fn on_reply(
        &mut self,
        rules: &[CompiledRule],
        code: u16,
        enhanced: &str,
        text: &str,
        now: u64,
        s: &Shaping,
    ) -> Option<Fired> {
        if self.hits.len() != rules.len() {
            self.hits = vec![VecDeque::new(); rules.len()];
        }
        let (i, rule) = rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(code, enhanced, text))?;
        let q = &mut self.hits[i];
        q.push_back(now);
        let window = rule.threshold.window.as_millis() as u64;
        while q.front().is_some_and(|&t| t + window < now) {
            q.pop_front();
        }
        if (q.len() as u32) < rule.threshold.count {
            return None;
        }
        q.clear();
        match rule.action {
            BackoffAction::Suspend => {
                let until = now + rule.duration.as_millis() as u64;
                self.suspended_until = self.suspended_until.max(until);
                self.ramp_t0 = self.suspended_until;
                self.ramp_s0 = s.ramp_start;
                Some(Fired::Suspended {
                    until_ms: self.suspended_until,
                })
            }
            BackoffAction::Reduce => {
                let scale = (self.scale(now, s) * rule.factor).max(0.01);
                self.ramp_t0 = now;
                self.ramp_s0 = scale;
                Some(Fired::Reduced { scale })
            }
        }
    }

    pub fn suspended(&self, now: u64) -> bool {
        self.manual || now < self.suspended_until
    }

    pub fn suspended_until(&self) -> Option<u64> {
        (self.suspended_until > 0).then_some(self.suspended_until)
    }

    /// Share of the normal rate/connections usable now: 0 while suspended, then doubling
    /// every `ramp_step` from the start share until 1.
    pub fn scale(&self, now: u64, s: &Shaping) -> f64 {
        if self.suspended(now) {
            return 0.0;
        }
        if self.ramp_s0 == 0.0 || now < self.ramp_t0 {
            return 1.0;
        }
        let steps = (now - self.ramp_t0) / (s.ramp_step.as_millis() as u64).max(1);
        (self.ramp_s0 * 2f64.powi(steps.min(30) as i32)).min(1.0)
    }

    /// Operator suspension, lifted only by `resume`.
    pub fn set_manual(&mut self, on: bool) {
        self.manual = on;
        if !on {
            self.suspended_until = 0;
            self.ramp_s0 = 0.0;
        }
    }

    pub fn is_manual(&self) -> bool {
        self.manual
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::config::ShapingFields;

    #[test]
    fn three_421_in_window_suspend_then_ramp() {
        let fields = ShapingFields {
            ramp_start: Some(0.25),
            ramp_step: Some(crate::shaping::units::Dur(Duration::from_secs(10))),
            ..Default::default()
        };
        let s = Shaping::resolve(&fields, &ShapingFields::default());
        let rules = builtin_rules();
        let mut a = Adaptive::default();
        let t = 1_000_000;
        assert_eq!(
            a.on_reply(&rules, 421, "4.7.0", "Try again later", t, &s),
            None
        );
        assert_eq!(a.on_reply(&rules, 250, "", "ok", t, &s), None);
        assert_eq!(
            a.on_reply(&rules, 421, "4.7.0", "Try again later", t + 1, &s),
            None
        );
        let f = a.on_reply(&rules, 421, "4.7.0", "Try again later", t + 2, &s);
        assert_eq!(
            f,
            Some(Fired::Suspended {
                until_ms: t + 2 + 600_000
            })
        );
        assert_eq!(a.scale(t + 10, &s), 0.0);
        let end = t + 2 + 600_000;
        assert_eq!(a.scale(end, &s), 0.25);
        assert_eq!(a.scale(end + 10_000, &s), 0.5);
        assert_eq!(a.scale(end + 25_000, &s), 1.0);
        // an unrelated 4xx never fires
        assert_eq!(
            a.on_reply(&rules, 452, "4.2.2", "mailbox full", end, &s),
            None
        );
    }
}
