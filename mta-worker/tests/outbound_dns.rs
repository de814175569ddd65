//! MX resolution against a real DNS server (dnsmasq on a loopback high port).

mod outbound_common;

use mta_worker::dns::site::site_for;
use mta_worker::dns::{Dns, DnsError};
use mta_worker::shaping::config::DnsConfig;
use mta_worker::shaping::units::Dur;
use mta_worker::shaping::{ManualClock, SharedClock};
use outbound_common::*;
use std::sync::Arc;
use std::time::Duration;

fn dns_for(addr: std::net::SocketAddr, clock: SharedClock) -> Dns {
    Dns::new(
        &DnsConfig {
            servers: vec![addr],
            timeout: Dur(Duration::from_secs(1)),
        },
        clock,
    )
    .unwrap()
}

#[tokio::test]
async fn mx_order_null_mx_fallback_nxdomain_and_sites() {
    let d = Dnsmasq::start(&[
        "--mx-host=a.test,mx2.a.test,20".into(),
        "--mx-host=a.test,mx1.a.test,10".into(),
        "--mx-host=null.test,.,0".into(),
        "--host-record=mx1.a.test,127.0.0.2".into(),
        "--host-record=mx2.a.test,127.0.0.3".into(),
        "--host-record=bare.test,127.0.0.4".into(),
        "--mx-host=one.test,in1.bigmail.test,10".into(),
        "--mx-host=two.test,in2.bigmail.test,10".into(),
        "--host-record=in1.bigmail.test,127.0.0.7".into(),
        "--host-record=in2.bigmail.test,127.0.0.8".into(),
    ]);
    let clock = Arc::new(ManualClock::new(1_000_000));
    let dns = dns_for(d.addr, clock.clone());
    let a = dns.mx("a.test").await.unwrap();
    let names: Vec<_> = a
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.preference, h.addrs[0].to_string()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("mx1.a.test", 10, "127.0.0.2".to_string()),
            ("mx2.a.test", 20, "127.0.0.3".to_string())
        ]
    );
    assert!(!a.implicit);
    let e = dns.mx("null.test").await.unwrap_err();
    assert!(e.is_permanent() && e.to_string().contains("null MX"), "{e}");
    let bare = dns.mx("bare.test").await.unwrap();
    assert!(bare.implicit);
    assert_eq!(bare.hosts[0].name, "bare.test");
    assert_eq!(bare.hosts[0].addrs[0].to_string(), "127.0.0.4");
    let nx = dns.mx("nothing-here.test").await.unwrap_err();
    assert!(nx.is_permanent(), "{nx}");
    // Sites: both domains' MX hosts are under bigmail.test, so they share a site.
    let path = std::path::Path::new("x.toml");
    let cfg = mta_worker::shaping::parse(path, "[dns]\nservers=[\"127.0.0.1:53\"]\n[[pool]]\nname=\"default\"\n[[pool.source]]\nname=\"s\"\nip=\"127.0.0.1\"\nehlo=\"e\"\n").unwrap();
    let one = site_for(&cfg, "one.test", &dns.mx("one.test").await.unwrap());
    let two = site_for(&cfg, "two.test", &dns.mx("two.test").await.unwrap());
    assert_eq!(one, "bigmail.test");
    assert_eq!(one, two);
    // TTL cache: with the server gone, the cached answer still serves until the TTL
    // (dnsmasq --local-ttl=60) runs out on our clock, then the failure is temporary.
    drop(d);
    assert_eq!(dns.mx("a.test").await.unwrap(), a);
    clock.advance(Duration::from_secs(61));
    let t = dns.mx("a.test").await;
    assert!(matches!(t, Err(DnsError::Temporary { .. })), "{t:?}");
}
