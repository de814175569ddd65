//! Text rendering of a [`QueueReport`] for `mta-worker queues`: aligned SITES, SOURCES
//! and DOMAINS tables with human ages (`3m12s`) and one state word per row
//! (`active`, `suspended 4m left`, `ramping 40%`, ...). Kept apart from the HTTP client
//! so the formatting is unit-tested without a worker.

use super::admin::{DomainReport, QueueReport, SiteReport, SourceReport};

/// `0s`, `59s`, `3m12s`, `2h05m`, `3d04h`: two units at most, enough to compare rows.
pub fn human_age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Whole minutes (rounded up) for "time left" figures under an hour, else [`human_age`].
fn human_left(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3_600 {
        format!("{}m", secs.div_ceil(60))
    } else {
        human_age(secs)
    }
}

/// A source's state: adaptive suspension first, then the ramp-back share.
pub fn source_state(s: &SourceReport) -> String {
    if s.suspended {
        return match s.suspended_left_s {
            Some(left) => format!("suspended {} left", human_left(left)),
            None => "suspended".into(),
        };
    }
    if s.scale < 0.995 {
        return format!("ramping {:.0}%", (s.scale * 100.0).max(0.0));
    }
    "active".into()
}

/// A site's state: an operator suspension wins; otherwise the most restricted source
/// (all suspended → the soonest end; some → "partly suspended"), then ramping.
pub fn site_state(s: &SiteReport) -> String {
    if s.suspended {
        return "suspended (operator)".into();
    }
    let held: Vec<&SourceReport> = s.sources.iter().filter(|x| x.suspended).collect();
    if !held.is_empty() && held.len() == s.sources.len() {
        let soonest = held.iter().filter_map(|x| x.suspended_left_s).min();
        return match soonest {
            Some(left) => format!("suspended {} left", human_left(left)),
            None => "suspended".into(),
        };
    }
    if !held.is_empty() {
        return format!("partly suspended ({}/{})", held.len(), s.sources.len());
    }
    let scale = s
        .sources
        .iter()
        .map(|x| x.scale)
        .fold(f64::INFINITY, f64::min);
    if scale.is_finite() && scale < 0.995 {
        return format!("ramping {:.0}%", (scale * 100.0).max(0.0));
    }
    "active".into()
}

/// A domain's state: operator suspension, DNS failure, waiting for DNS, held by its
/// site's operator suspension, or active.
pub fn domain_state(d: &DomainReport, site_suspended: bool) -> String {
    if d.suspended {
        return "suspended (operator)".into();
    }
    if let Some(e) = &d.route_error {
        return format!("dns error: {e}");
    }
    if d.site.is_none() && d.depth > 0 {
        return "resolving".into();
    }
    if site_suspended {
        return "held (site suspended)".into();
    }
    "active".into()
}

/// Column alignment.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Pads every column to its widest cell; the last column is never padded (it may be long).
fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            match headers[i].1 {
                Align::Right => {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                }
                Align::Left if i == last => s.push_str(c),
                Align::Left => {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.iter().map(|(h, _)| *h).collect());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The whole report as text: SITES, SOURCES (when any source has been used) and DOMAINS.
pub fn render(r: &QueueReport) -> String {
    use Align::{Left, Right};
    let mut out = format!("queued: {}\n\n", r.total);
    if r.sites.is_empty() {
        out.push_str("SITES: none\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .sites
            .iter()
            .map(|s| {
                vec![
                    s.site.clone(),
                    s.depth.to_string(),
                    human_age(s.oldest_age_s),
                    s.active_connections.to_string(),
                    site_state(s),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("SITE", Left),
                ("DEPTH", Right),
                ("OLDEST", Right),
                ("CONNS", Right),
                ("STATE", Left),
            ],
            &rows,
        ));
    }
    let sources: Vec<Vec<String>> = r
        .sites
        .iter()
        .flat_map(|s| {
            let mut v: Vec<&SourceReport> = s.sources.iter().collect();
            v.sort_by(|a, b| a.source.cmp(&b.source));
            v.into_iter().map(move |x| {
                vec![
                    s.site.clone(),
                    x.source.clone(),
                    x.pool.clone(),
                    x.ready.to_string(),
                    x.active_connections.to_string(),
                    source_state(x),
                ]
            })
        })
        .collect();
    if !sources.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                ("SITE", Left),
                ("SOURCE", Left),
                ("POOL", Left),
                ("READY", Right),
                ("CONNS", Right),
                ("STATE", Left),
            ],
            &sources,
        ));
    }
    out.push('\n');
    if r.domains.is_empty() {
        out.push_str("DOMAINS: none\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .domains
            .iter()
            .map(|d| {
                vec![
                    d.domain.clone(),
                    d.site.clone().unwrap_or_else(|| "-".into()),
                    d.depth.to_string(),
                    d.in_flight.to_string(),
                    human_age(d.oldest_age_s),
                    domain_state(
                        d,
                        r.sites
                            .iter()
                            .any(|s| s.suspended && Some(&s.site) == d.site.as_ref()),
                    ),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("DOMAIN", Left),
                ("SITE", Left),
                ("DEPTH", Right),
                ("IN FLIGHT", Right),
                ("OLDEST", Right),
                ("STATE", Left),
            ],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, suspended_left: Option<u64>, scale: f64) -> SourceReport {
        SourceReport {
            source: name.into(),
            pool: "default".into(),
            ready: 2,
            active_connections: 1,
            suspended: suspended_left.is_some(),
            suspended_until_ms: suspended_left.map(|s| 1_000_000 + s * 1000),
            suspended_left_s: suspended_left,
            scale,
        }
    }

    fn site(name: &str, suspended: bool, sources: Vec<SourceReport>) -> SiteReport {
        SiteReport {
            site: name.into(),
            depth: 12,
            oldest_age_s: 192,
            active_connections: 3,
            suspended,
            sources,
        }
    }

    #[test]
    fn ages_are_short_and_human() {
        assert_eq!(human_age(0), "0s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(192), "3m12s");
        assert_eq!(human_age(3_600 + 5 * 60 + 7), "1h05m");
        assert_eq!(human_age(3 * 86_400 + 4 * 3_600 + 9), "3d04h");
    }

    #[test]
    fn states_reflect_operator_adaptive_and_ramp() {
        assert_eq!(site_state(&site("a", false, vec![])), "active");
        assert_eq!(
            site_state(&site("a", true, vec![source("s", Some(10), 0.0)])),
            "suspended (operator)"
        );
        assert_eq!(
            site_state(&site("a", false, vec![source("s", Some(4 * 60 - 10), 0.0)])),
            "suspended 4m left"
        );
        assert_eq!(
            site_state(&site(
                "a",
                false,
                vec![source("s", Some(30), 0.0), source("t", None, 1.0)]
            )),
            "partly suspended (1/2)"
        );
        assert_eq!(
            site_state(&site(
                "a",
                false,
                vec![source("s", None, 0.4), source("t", None, 1.0)]
            )),
            "ramping 40%"
        );
        assert_eq!(
            source_state(&source("s", Some(45), 0.0)),
            "suspended 45s left"
        );
        let mut d = DomainReport {
            domain: "x.test".into(),
            site: None,
            depth: 1,
            in_flight: 0,
            oldest_age_s: 0,
            suspended: false,
            route_error: Some("SERVFAIL".into()),
        };
        assert_eq!(domain_state(&d, false), "dns error: SERVFAIL");
        d.route_error = None;
        assert_eq!(domain_state(&d, false), "resolving");
        d.site = Some("x".into());
        assert_eq!(domain_state(&d, false), "active");
        assert_eq!(domain_state(&d, true), "held (site suspended)");
        d.suspended = true;
        assert_eq!(domain_state(&d, true), "suspended (operator)");
    }

    #[test]
    fn tables_are_aligned() {
        let r = QueueReport {
            total: 13,
            domains: vec![
                DomainReport {
                    domain: "a.test".into(),
                    site: Some("bigmail.test".into()),
                    depth: 12,
                    in_flight: 2,
                    oldest_age_s: 192,
                    suspended: false,
                    route_error: None,
                },
                DomainReport {
                    domain: "longer-name.test".into(),
                    site: None,
                    depth: 1,
                    in_flight: 0,
                    oldest_age_s: 5,
                    suspended: true,
                    route_error: None,
                },
            ],
            sites: vec![site("bigmail.test", false, vec![source("s1", None, 0.4)])],
        };
        let text = render(&r);
        let expected = "\
queued: 13

SITE          DEPTH  OLDEST  CONNS  STATE
bigmail.test     12   3m12s      3  ramping 40%

SITE          SOURCE  POOL     READY  CONNS  STATE
bigmail.test  s1      default      2      1  ramping 40%

DOMAIN            SITE          DEPTH  IN FLIGHT  OLDEST  STATE
a.test            bigmail.test     12          2   3m12s  active
longer-name.test  -                 1          0      5s  suspended (operator)
";
        assert_eq!(text, expected, "\n{text}");
        let empty = render(&QueueReport {
            total: 0,
            domains: vec![],
            sites: vec![],
        });
        assert_eq!(empty, "queued: 0\n\nSITES: none\n\nDOMAINS: none\n");
    }
}
