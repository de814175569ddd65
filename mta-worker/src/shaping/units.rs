//! Human strings of the shaping file: rates ("100/h"), thresholds ("3 in 5m") and
//! durations (shared with the main config: "10m").

use crate::config::parse_duration;
use serde::{de, Deserialize, Deserializer};
use std::time::Duration;

/// Events per period, written `<count>/<unit>` with unit `s`, `m`, `h` or `d`, or
/// `<count>/<duration>` ("100/h", "5/s", "30/10m").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Smallest spacing between two events that keeps within the rate.
    pub fn interval_ms(&self, scale: f64) -> u64 {
        let scaled = (self.count as f64 * scale.clamp(0.0001, 1.0)).max(0.0001);
        (self.per.as_millis() as f64 / scaled).ceil() as u64
    }
}

pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let (n, p) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("rate {s:?} must look like \"100/h\""))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("rate {s:?}: {n:?} is not a whole number"))?;
    if count == 0 {
        return Err(format!(
            "rate {s:?} must be above zero (omit the field for no limit)"
        ));
    }
    let p = p.trim();
    let per = match p {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86400),
        other => parse_duration(other).map_err(|e| format!("rate {s:?}: {e}"))?,
    };
    if per.is_zero() {
        return Err(format!("rate {s:?} has a zero period"));
    }
    Ok(Rate { count, per })
}

/// "3 in 5m": at least `count` events within `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub count: u32,
    pub window: Duration,
}

pub fn parse_threshold(s: &str) -> Result<Threshold, String> {
    let (n, w) = s
        .trim()
        .split_once(" in ")
        .ok_or_else(|| format!("threshold {s:?} must look like \"3 in 5m\""))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("threshold {s:?}: {n:?} is not a whole number"))?;
    let window = parse_duration(w).map_err(|e| format!("threshold {s:?}: {e}"))?;
    Ok(Threshold {
        count: count.max(1),
        window,
    })
}

/// A duration field ("10m"); integers are refused because the unit would be a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rate(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_threshold(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_thresholds() {
        let r = parse_rate("100/h").unwrap();
        assert_eq!(r.count, 100);
        assert_eq!(r.per, Duration::from_secs(3600));
        assert_eq!(r.interval_ms(1.0), 36_000);
        assert_eq!(r.interval_ms(0.5), 72_000);
        assert_eq!(parse_rate("30/10m").unwrap().per, Duration::from_secs(600));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
        let t = parse_threshold("3 in 5m").unwrap();
        assert_eq!((t.count, t.window), (3, Duration::from_secs(300)));
        assert!(parse_threshold("3 per 5m").is_err());
    }
}
