//! The queue-aware weight controller, as a pure function.
//!
//! Each backend's MTA reports its backlog; a backend whose backlog is far above the
//! median of its peers (the other backends of the same VIP) gets a smaller share of new
//! connections, a step at a time, and gets it back once its backlog is close to its
//! peers' again. Two thresholds (hysteresis) and a bounded step keep the fleet from
//! oscillating: shedding load takes effect only after the backlog drains, so a controller
//! that reacts fully to every sample would swing traffic back and forth.

use serde::{Deserialize, Serialize};

use crate::config::FeedbackCfg;

/// What a backend's `GET /status` told us. Fields it did not send stay `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub queue_depth: Option<u64>,
    pub active_deliveries: Option<u64>,
}

impl Load {
    /// The backlog compared between peers: the total queue depth, or the number of
    /// deliveries in flight when the MTA reports only that.
    pub fn backlog(&self) -> Option<u64> {
        self.queue_depth.or(self.active_deliveries)
    }
}

/// One backend's input to the controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// `None`: no fresh report (poll failed). The factor then stays where it is: health
    /// checks, not feedback, decide whether a silent backend is dead.
    pub backlog: Option<u64>,
    /// Current factor in `[min_factor, 1]`.
    pub factor: f64,
}

fn median(mut v: Vec<u64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    })
}

/// New factors (effective weight = configured weight × factor) for the backends of one
/// VIP, in the order given.
pub fn next_factors(samples: &[Sample], cfg: &FeedbackCfg) -> Vec<f64> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let Some(backlog) = s.backlog else {
                return s.factor;
            };
            let peers: Vec<u64> = samples
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .filter_map(|(_, p)| p.backlog)
                .collect();
            let Some(med) = median(peers) else {
                return s.factor;
            };
            let b = backlog as f64;
            let overloaded = backlog >= cfg.min_backlog && b > cfg.high_ratio * med;
            let recovered = backlog < cfg.min_backlog || b <= cfg.low_ratio * med;
            let f = if overloaded {
                s.factor - cfg.max_step
            } else if recovered {
                s.factor + cfg.max_step
            } else {
                s.factor
            };
            f.clamp(cfg.min_factor, 1.0)
        })
        .collect()
}

/// Configured weight scaled by the factor; a backend with weight keeps at least 1 so
/// that feedback sheds load without ever draining.
pub fn effective_weight(weight: u32, factor: f64) -> u32 {
    if weight == 0 {
        return 0;
    }
    ((f64::from(weight) * factor).round() as u32).clamp(1, weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FeedbackCfg {
        FeedbackCfg {
            enabled: true,
            ..FeedbackCfg::default()
        }
    }

    fn s(backlog: Option<u64>, factor: f64) -> Sample {
        Sample { backlog, factor }
    }

    fn approx(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn overloaded_backend_steps_down_others_hold() {
        let out = next_factors(
            &[s(Some(5000), 1.0), s(Some(300), 1.0), s(Some(250), 1.0)],
            &cfg(),
        );
        assert!(approx(&out, &[0.9, 1.0, 1.0]), "{out:?}");
    }

    #[test]
    fn step_is_bounded_and_floor_holds() {
        let mut f = 1.0;
        for _ in 0..30 {
            let out = next_factors(&[s(Some(10_000), f), s(Some(200), 1.0)], &cfg());
            assert!(f - out[0] <= 0.1 + 1e-9);
            f = out[0];
        }
        assert!((f - 0.1).abs() < 1e-9, "floor is min_factor, got {f}");
    }

    #[test]
    fn hysteresis_band_holds_the_factor() {
        // Median of peers 1000: high 2000, low 1500. 1800 is in the band: no change,
        // whether the factor is currently reduced or not.
        let peers = [s(Some(1000), 1.0), s(Some(1000), 1.0)];
        for f in [0.5, 1.0] {
            let out = next_factors(&[s(Some(1800), f), peers[0], peers[1]], &cfg());
            assert!((out[0] - f).abs() < 1e-9, "{out:?}");
        }
        // Below the low mark it recovers by one step.
        let out = next_factors(&[s(Some(1400), 0.5), peers[0], peers[1]], &cfg());
        assert!((out[0] - 0.6).abs() < 1e-9);
        // Above the high mark it sheds.
        let out = next_factors(&[s(Some(2100), 0.5), peers[0], peers[1]], &cfg());
        assert!((out[0] - 0.4).abs() < 1e-9);
    }

    #[test]
    fn small_backlogs_never_count_and_missing_data_holds() {
        // 90 is 90 × the median, but below min_backlog (100): idle noise.
        let out = next_factors(
            &[s(Some(90), 0.7), s(Some(1), 1.0), s(Some(0), 1.0)],
            &cfg(),
        );
        assert!(approx(&out, &[0.8, 1.0, 1.0]), "{out:?}");
        let out = next_factors(&[s(None, 0.7), s(Some(0), 1.0)], &cfg());
        assert!(approx(&out, &[0.7, 1.0]));
        // No peer with data: nothing to compare with.
        let out = next_factors(&[s(Some(5000), 1.0), s(None, 1.0)], &cfg());
        assert!(approx(&out, &[1.0, 1.0]));
    }

    #[test]
    fn effective_weights() {
        assert_eq!(effective_weight(100, 1.0), 100);
        assert_eq!(effective_weight(100, 0.25), 25);
        assert_eq!(effective_weight(3, 0.1), 1);
        assert_eq!(effective_weight(0, 1.0), 0);
    }

    #[test]
    fn load_parsing_tolerates_missing_fields() {
        let l: Load = serde_json::from_str(r#"{"queue_depth": 12, "other": true}"#).unwrap();
        assert_eq!(l.backlog(), Some(12));
        let l: Load = serde_json::from_str(r#"{"active_deliveries": 3}"#).unwrap();
        assert_eq!(l.backlog(), Some(3));
        let l: Load = serde_json::from_str("{}").unwrap();
        assert_eq!(l.backlog(), None);
    }
}
