//! Sites: the unit of shaping. Every domain whose mail goes to the same provider shares
//! one site, so limits hold per ISP however many customer domains it hosts.

use super::MxSet;
use crate::shaping::Compiled;

/// Registrable part of a host name. Without a public-suffix list this keeps the last two
/// labels, or three when the second-to-last looks like a second-level registry label
/// ("co.uk", "com.au"): good enough to group MX hosts, and operators pin the big
/// providers with `[[provider]] mx_suffixes` anyway.
pub fn registrable(host: &str) -> String {
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let n = labels.len();
    let take = if n >= 3
        && labels[n - 1].len() == 2
        && ["co", "com", "net", "org", "ac", "gov", "edu", "ne", "or"].contains(&labels[n - 2])
    {
        3
    } else {
        2
    };
    labels[n.saturating_sub(take)..]
        .join(".")
        .to_ascii_lowercase()
}

/// The site of `domain` given its MX set: a configured provider (by domain, then by MX
/// suffix), else the sorted, de-duplicated registrable suffixes of its MX hosts.
pub fn site_for(cfg: &Compiled, domain: &str, mx: &MxSet) -> String {
    if let Some(p) = cfg.provider_by_domain(domain) {
        return p.name.clone();
    }
    if let Some(p) = cfg.provider_by_mx(mx.hosts.iter().map(|h| h.name.as_str())) {
        return p.name.clone();
    }
    let mut parts: Vec<String> = mx.hosts.iter().map(|h| registrable(&h.name)).collect();
    parts.sort();
    parts.dedup();
    parts.join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_suffixes() {
        assert_eq!(registrable("alt1.gmail-smtp-in.l.google.com"), "google.com");
        assert_eq!(registrable("mx1.mail.example.co.uk."), "example.co.uk");
        assert_eq!(registrable("localhost"), "localhost");
    }
}
