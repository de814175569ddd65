//! Egress pools: which local address (and EHLO name) a message leaves from. Pools are
//! chosen per message (sender, sender domain or tenant header), sources within a pool by
//! weight, subject to each source's warmup cap and to it actually existing on this host.

pub mod socket;

use crate::shaping::config::{PoolRule, SourceConfig};
use crate::shaping::Compiled;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Mutex;

/// "YYYY-MM-DD" → days since 1970-01-01 (UTC).
pub fn parse_day(s: &str) -> Result<i64, String> {
    let bad = || format!("date {s:?} must be YYYY-MM-DD");
    let mut it = s.trim().split('-');
    let mut num = || {
        it.next()
            .and_then(|x| x.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (y, m, d) = (num()?, num()?, num()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days-from-civil (proleptic Gregorian), so no date crate is needed for one field.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

/// "host:port" of a transport map entry.
pub fn parse_transport(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("transport {s:?} must be \"host:port\""))?;
    let port: u16 = p
        .parse()
        .map_err(|_| format!("transport {s:?}: bad port {p:?}"))?;
    let host = h.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("transport {s:?} has no host"));
    }
    Ok((host.to_string(), port))
}

fn rule_matches(r: &PoolRule, sender: &str, tenant: Option<&str>) -> bool {
    let dom = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    r.sender
        .as_ref()
        .is_none_or(|s| s.eq_ignore_ascii_case(sender))
        && r.sender_domain
            .as_ref()
            .is_none_or(|d| d.eq_ignore_ascii_case(dom))
        && r.tenant.as_ref().is_none_or(|t| Some(t.as_str()) == tenant)
        && (r.sender.is_some() || r.sender_domain.is_some() || r.tenant.is_some())
}

/// The pool for a message.
pub fn select_pool<'a>(cfg: &'a Compiled, sender: &str, tenant: Option<&str>) -> &'a str {
    cfg.raw
        .pool_rules
        .iter()
        .find(|r| rule_matches(r, sender, tenant))
        .map(|r| r.pool.as_str())
        .unwrap_or(&cfg.raw.default_pool)
}

/// Whether any rule looks at the tenant header (only then is the message read at enqueue).
pub fn needs_tenant(cfg: &Compiled) -> bool {
    cfg.raw.pool_rules.iter().any(|r| r.tenant.is_some())
}

/// Value of `name:` in the header block of `msg`.
pub fn header_value(msg: &[u8], name: &str) -> Option<String> {
    let end =
        memchr::memmem::find(msg, b"\r\n\r\n").or_else(|| memchr::memmem::find(msg, b"\n\n"))?;
    let head = String::from_utf8_lossy(&msg[..end]);
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[derive(Debug, Default, Clone)]
struct SourceState {
    unusable: Option<String>,
    day: i64,
    sent_today: u64,
}

/// Per-source runtime state: warmup counters and the "not on this host" mark.
#[derive(Debug, Default)]
pub struct Egress {
    state: Mutex<HashMap<String, SourceState>>,
}

/// A source usable right now, and its share of today's cap that is left.
#[derive(Debug, Clone)]
pub struct Picked {
    pub source: SourceConfig,
    pub pool: String,
}

impl Egress {
    fn cap_today(src: &SourceConfig, day: i64) -> Option<u64> {
        let w = src.warmup.as_ref()?;
        let start = parse_day(&w.start).ok()?;
        let n = day - start;
        if n < 0 {
            return w.daily_caps.first().copied();
        }
        w.daily_caps.get(n as usize).copied()
    }

    /// Weighted random choice among the pool's usable sources that still have warmup
    /// budget, reserving one message of it. `skip` excludes sources (e.g. suspended for
    /// the site). None when nothing is usable now.
    pub fn pick(
        &self,
        cfg: &Compiled,
        pool: &str,
        now_ms: u64,
        skip: impl Fn(&str) -> bool,
    ) -> Option<Picked> {
        let p = cfg.raw.pools.iter().find(|p| p.name == pool)?;
        let day = (now_ms / 86_400_000) as i64;
        let mut st = self.state.lock().expect("egress lock");
        let usable: Vec<&SourceConfig> = p
            .sources
            .iter()
            .filter(|s| s.weight > 0 && !skip(&s.name))
            .filter(|s| {
                let e = st.entry(s.name.clone()).or_default();
                if e.day != day {
                    e.day = day;
                    e.sent_today = 0;
                }
                e.unusable.is_none() && Self::cap_today(s, day).is_none_or(|cap| e.sent_today < cap)
            })
            .collect();
        let total: u64 = usable.iter().map(|s| s.weight as u64).sum();
        if total == 0 {
            return None;
        }
        let mut r = rand::thread_rng().gen_range(0..total);
        let chosen = usable
            .into_iter()
            .find(|s| {
                if r < s.weight as u64 {
                    true
                } else {
                    r -= s.weight as u64;
                    false
                }
            })?
            .clone();
        st.entry(chosen.name.clone()).or_default().sent_today += 1;
        Some(Picked {
            source: chosen,
            pool: pool.to_string(),
        })
    }

    /// Gives back a reservation that was not used (the message went back to the schedule).
    pub fn unreserve(&self, source: &str) {
        if let Some(e) = self.state.lock().expect("egress lock").get_mut(source) {
            e.sent_today = e.sent_today.saturating_sub(1);
        }
    }

    /// The source's address is not on this host: report once and stop using it.
    pub fn mark_unusable(&self, source: &str, why: String) {
        let mut st = self.state.lock().expect("egress lock");
        let e = st.entry(source.to_string()).or_default();
        if e.unusable.is_none() {
            tracing::error!(source, reason = %why, "egress source unusable, skipped until restart or reload");
            e.unusable = Some(why);
        }
    }

    /// Marks every source whose address this host does not have, before any mail is
    /// sent: the operator hears about it at start, and the first messages of the pool
    /// are not the ones that find out.
    pub fn probe_local(&self, pools: &[crate::shaping::config::PoolConfig]) {
        for src in pools.iter().flat_map(|p| &p.sources) {
            if let Err(e) = std::net::UdpSocket::bind((src.ip, 0)) {
                if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                    self.mark_unusable(&src.name, format!("{}: {e}", src.ip));
                }
            }
        }
    }

    /// Sources marked unusable, with the reason.
    pub fn unusable(&self) -> Vec<(String, String)> {
        let st = self.state.lock().expect("egress lock");
        st.iter()
            .filter_map(|(k, v)| v.unusable.clone().map(|u| (k.clone(), u)))
            .collect()
    }

    /// Clears unusable marks (after a config reload the operator may have fixed the host).
    pub fn clear_unusable(&self) {
        for v in self.state.lock().expect("egress lock").values_mut() {
            v.unusable = None;
        }
    }

    /// Messages reserved today per source.
    pub fn sent_today(&self, source: &str) -> u64 {
        self.state
            .lock()
            .expect("egress lock")
            .get(source)
            .map(|s| s.sent_today)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_transports() {
        assert_eq!(parse_day("1970-01-01").unwrap(), 0);
        assert_eq!(parse_day("2000-03-01").unwrap(), 11_017);
        assert_eq!(parse_day("2026-12-04").unwrap(), 20_791);
        assert!(parse_day("2026-13-01").is_err());
        assert_eq!(
            parse_transport("127.0.0.9:2525").unwrap(),
            ("127.0.0.9".into(), 2525)
        );
        assert_eq!(parse_transport("[::1]:25").unwrap(), ("::1".into(), 25));
        assert!(parse_transport("relay.test").is_err());
        let m = b"Subject: x\r\nX-Tenant:  acme \r\n\r\nbody X-Tenant: no\r\n";
        assert_eq!(header_value(m, "x-tenant").as_deref(), Some("acme"));
    }
}
