//! The HTTP API over a real socket: tokens, drain / weight through to the ring, metrics
//! text, status rates from counter deltas, and reloads that fail validation.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use balancer::api::client::{request, Response};
use balancer::control::daemon::DaemonHandle;
use balancer::control::{MemoryDataPlane, Status};
use balancer_ebpf::{stats_backend_slot, GlobalCounter, ObjectCounter};
use support::{config_text, tempdir, SmtpServer};

const TOKEN: &str = "s3cret-token-for-tests";
const T: Duration = Duration::from_secs(5);

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    mem: MemoryDataPlane,
    handle: DaemonHandle,
    servers: Vec<SmtpServer>,
}

/// Config text for backends given as (name, index of server).
fn text(dir: &Path, servers: &[SmtpServer], backends: &[(&str, usize)]) -> String {
    let list: Vec<(&str, String, u16)> = backends
        .iter()
        .map(|&(n, i)| (n, servers[i].addr.ip().to_string(), servers[i].addr.port()))
        .collect();
    let list: Vec<(&str, &str, u16)> = list
        .iter()
        .map(|(n, ip, p)| (*n, ip.as_str(), *p))
        .collect();
    let token_file = dir.join("token");
    config_text(&list, Some(token_file.to_str().unwrap()), "")
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.api_addr)
    }
    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Response {
        request("POST", &self.url(path), token, Some(body), T)
            .await
            .unwrap()
    }
    async fn status(&self) -> Status {
        let r = request("GET", &self.url("/status"), None, None, T)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }
    async fn id(&self, name: &str) -> u32 {
        self.handle
            .daemon
            .ctl
            .lock()
            .await
            .backend(name)
            .unwrap()
            .id
    }
}

async fn setup() -> Setup {
    let servers = vec![
        SmtpServer::start("127.0.0.1").await,
        SmtpServer::start("127.0.0.2").await,
    ];
    let dir = tempdir();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let path = dir.path().join("balancer.toml");
    std::fs::write(
        &path,
        text(dir.path(), &servers, &[("mta-1", 0), ("mta-2", 1)]),
    )
    .unwrap();
    let (handle, mem) = support::start_daemon(&path, None).await;
    Setup {
        _dir: dir,
        path,
        mem,
        handle,
        servers,
    }
}

fn in_ring(mem: &MemoryDataPlane, id: u32) -> bool {
    mem.ring(0).is_some_and(|r| r.contains(&id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_without_the_token_get_401_and_change_nothing() {
    let s = setup().await;
    let ring = s.mem.ring(0).unwrap();
    let swaps = s.mem.state().swaps.len();
    for token in [None, Some("wrong"), Some("")] {
        for path in [
            "/backends/mta-1/drain",
            "/backends/mta-1/undrain",
            "/backends/mta-1/weight?weight=0",
            "/reload",
        ] {
            let r = s.post(path, token, "").await;
            assert_eq!(r.status, 401, "{path} with {token:?}: {}", r.body);
        }
    }
    assert_eq!(s.mem.ring(0).unwrap(), ring);
    assert_eq!(s.mem.state().swaps.len(), swaps);
    let st = s.status().await;
    assert!(st.vips[0]
        .backends
        .iter()
        .all(|b| !b.drained && b.override_weight.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_weight_undrain_reach_the_ring() {
    let s = setup().await;
    let id1 = s.id("mta-1").await;
    assert!(in_ring(&s.mem, id1));

    let r = s.post("/backends/mta-1/drain", Some(TOKEN), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!in_ring(&s.mem, id1), "drained backend left the ring");
    let st = s.status().await;
    let b = &st.vips[0].backends[0];
    assert!(b.drained);
    assert_eq!(
        (b.configured_weight, b.effective_weight, b.slots),
        (100, 0, 0)
    );

    let r = s.post("/backends/mta-1/undrain", Some(TOKEN), "").await;
    assert_eq!(r.status, 200);
    assert!(in_ring(&s.mem, id1));

    // Weight as a query, a bare body and JSON.
    for (path, body, want) in [
        ("/backends/mta-1/weight?weight=300", "", 300),
        ("/backends/mta-1/weight", "100", 100),
        ("/backends/mta-1/weight", "{\"weight\": 900}", 900),
    ] {
        let r = s.post(path, Some(TOKEN), body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let ring = s.mem.ring(0).unwrap();
        let share = ring.iter().filter(|&&x| x == id1).count() as f64 / ring.len() as f64;
        let expect = f64::from(want) / f64::from(want + 100);
        assert!(
            (share - expect).abs() < 0.01,
            "weight {want}: share {share}"
        );
    }
    let r = s.post("/backends/nope/drain", Some(TOKEN), "").await;
    assert_eq!(r.status, 404);
    let r = s.post("/backends/mta-1/weight", Some(TOKEN), "lots").await;
    assert_eq!(r.status, 400);
}

/// Parses Prometheus text: every line is a comment or `name{labels} value`.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
            for pair in series[name_end + 1..series.len() - 1].split(',') {
                let (k, v) = pair.split_once('=').expect("label k=v");
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{line:?}"
                );
            }
        }
        out.push((series.to_string(), value.parse().expect("numeric value")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_carry_the_counters() {
    let s = setup().await;
    let id2 = s.id("mta-2").await;
    s.mem.bump(GlobalCounter::DropAcl as u32, 7, 420);
    s.mem.bump(GlobalCounter::Forwarded as u32, 1000, 64_000);
    s.mem
        .bump(stats_backend_slot(id2, ObjectCounter::NewFlows), 42, 0);
    let r = request("GET", &s.url("/metrics"), None, None, T)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let m = parse_metrics(&r.body);
    let get = |k: &str| m.iter().find(|(s, _)| s == k).map(|(_, v)| *v);
    assert_eq!(
        get("balancer_packets_total{outcome=\"drop_acl\"}"),
        Some(7.0)
    );
    assert_eq!(
        get("balancer_packets_total{outcome=\"forwarded\"}"),
        Some(1000.0)
    );
    assert_eq!(
        get("balancer_backend_new_flows_total{vip=\"smtp\",backend=\"mta-2\"}"),
        Some(42.0)
    );
    assert_eq!(
        get("balancer_backend_configured_weight{vip=\"smtp\",backend=\"mta-1\"}"),
        Some(100.0)
    );
    let slots: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("balancer_backend_ring_slots"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(slots, 4093.0, "slots add up to the ring size");
    let st = s.status().await;
    assert_eq!(st.drops["acl"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_new_flows_per_second_from_counter_deltas() {
    let s = setup().await;
    let id1 = s.id("mta-1").await;
    // Let the 1 s sampler take a baseline, then add 200 new flows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.mem
        .bump(stats_backend_slot(id1, ObjectCounter::NewFlows), 200, 0);
    let mut rate = 0.0;
    for _ in 0..40 {
        rate = s.status().await.vips[0].backends[0].new_flows_per_s;
        if rate > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("mta-1 new flows/s after +200 in one sampling interval: {rate:.1}");
    // 200 flows over one ~1 s sampling interval (timer jitter allowed).
    assert!((100.0..=250.0).contains(&rate), "rate {rate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_good_files_and_rejects_bad_ones() {
    let s = setup().await;
    let id2 = s.id("mta-2").await;
    let ring = s.mem.ring(0).unwrap();
    let good = std::fs::read_to_string(&s.path).unwrap();

    std::fs::write(
        &s.path,
        good.replace("ring_size = 4093", "ring_size = 4096"),
    )
    .unwrap();
    let r = s.post("/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("vip[0].ring_size: 4096 is not a prime"),
        "{}",
        r.body
    );
    assert_eq!(s.mem.ring(0).unwrap(), ring, "nothing changed");

    std::fs::write(&s.path, text(s._dir.path(), &s.servers, &[("mta-1", 0)])).unwrap();
    let r = s.post("/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\"backends_removed\":[\"mta-2\"]"),
        "{}",
        r.body
    );
    assert!(!in_ring(&s.mem, id2));
    assert_eq!(
        s.mem.state().backends[&id2].flags,
        0,
        "removed backend invalidated"
    );
    let st = s.status().await;
    assert_eq!(st.vips[0].backends.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_keeps_every_backend_id() {
    let servers = vec![
        SmtpServer::start("127.0.0.1").await,
        SmtpServer::start("127.0.0.2").await,
    ];
    let dir = tempdir();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let path = dir.path().join("balancer.toml");
    let ids = dir.path().join("state/ids.json");
    let start = |text: String| {
        let (path, ids) = (path.clone(), ids.clone());
        async move {
            std::fs::write(&path, text).unwrap();
            let (h, mem) = support::start_daemon(&path, Some(ids)).await;
            (h, mem)
        }
    };
    let (h, _) = start(text(dir.path(), &servers, &[("a", 0), ("b", 1)])).await;
    // Reload: "a" leaves, "c" arrives and gets a fresh id (2), "b" keeps 1.
    std::fs::write(&path, text(dir.path(), &servers, &[("b", 1), ("c", 0)])).unwrap();
    h.daemon.reload().await.unwrap();
    let before: Vec<u32> = {
        let c = h.daemon.ctl.lock().await;
        vec![c.backend("b").unwrap().id, c.backend("c").unwrap().id]
    };
    assert_eq!(before, vec![1, 2]);
    drop(h);
    // A fresh process would number b, c as 0, 1 and send b's pinned flows to c.
    let (h, mem) = start(text(dir.path(), &servers, &[("b", 1), ("c", 0)])).await;
    let c = h.daemon.ctl.lock().await;
    assert_eq!(
        vec![c.backend("b").unwrap().id, c.backend("c").unwrap().id],
        before
    );
    let mut in_ring = mem.ring(0).unwrap();
    in_ring.sort_unstable();
    in_ring.dedup();
    assert_eq!(in_ring, before);
}
