//! Prometheus counters per site and source, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Counter names (each becomes `mta_outbound_<name>_total`).
pub const DELIVERED: &str = "delivered";
pub const DEFERRED: &str = "deferred";
pub const BOUNCED: &str = "bounced";
pub const CONNECTIONS: &str = "connections";
pub const TLS_SUCCESS: &str = "tls_success";

/// (name, site, source) → count.
#[derive(Debug, Default)]
pub struct Counters {
    map: Mutex<BTreeMap<(&'static str, String, String), u64>>,
}

impl Counters {
    pub fn add(&self, name: &'static str, site: &str, source: &str, n: u64) {
        *self
            .map
            .lock()
            .expect("counters lock")
            .entry((name, site.to_string(), source.to_string()))
            .or_default() += n;
    }

    pub fn get(&self, name: &str, site: &str, source: &str) -> u64 {
        self.map
            .lock()
            .expect("counters lock")
            .iter()
            .find(|((n, si, so), _)| *n == name && si == site && so == source)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    /// Sum over sources for one site.
    pub fn site_total(&self, name: &str, site: &str) -> u64 {
        self.map
            .lock()
            .expect("counters lock")
            .iter()
            .filter(|((n, si, _), _)| *n == name && si == site)
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn render(&self) -> String {
        let map = self.map.lock().expect("counters lock");
        let mut out = String::new();
        let mut last = "";
        for ((name, site, source), v) in map.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE mta_outbound_{name}_total counter");
                last = name;
            }
            let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "mta_outbound_{name}_total{{site=\"{}\",source=\"{}\"}} {v}",
                esc(site),
                esc(source)
            );
        }
        out
    }
}
