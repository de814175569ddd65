//! Health checks against real SMTP servers on loopback, through the real daemon (health
//! tasks, controller, API) over the in-memory data plane: a backend that hangs, answers
//! 421/554 or refuses connections leaves the ring within interval × fall + timeout with
//! the default settings; it comes back after `rise` good checks.
//!
//! `setup` returns right after every backend passed a check, so the first death below
//! happens at the worst moment (just after a good check): the measured time is close to
//! the worst case, not a lucky one.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use balancer::config::HealthCfg;
use balancer::control::daemon::DaemonHandle;
use balancer::control::MemoryDataPlane;
use support::{config_text, tempdir, wait_for, Mode, SmtpServer};

struct Setup {
    _dir: tempfile::TempDir,
    mem: MemoryDataPlane,
    handle: DaemonHandle,
    servers: Vec<SmtpServer>,
}

async fn setup(extra: &str) -> Setup {
    let servers = vec![
        SmtpServer::start("127.0.0.1").await,
        SmtpServer::start("127.0.0.2").await,
        SmtpServer::start("127.0.0.3").await,
    ];
    let dir = tempdir();
    let path: PathBuf = dir.path().join("balancer.toml");
    let text = config_text(
        &[
            ("mta-1", "127.0.0.1", servers[0].addr.port()),
            ("mta-2", "127.0.0.2", servers[1].addr.port()),
            ("mta-3", "127.0.0.3", servers[2].addr.port()),
        ],
        None,
        extra,
    );
    std::fs::write(&path, &text).unwrap();
    let (handle, mem) = support::start_daemon(&path, None).await;
    let s = Setup {
        _dir: dir,
        mem,
        handle,
        servers,
    };
    // Wait until every backend has passed its first check.
    let ok = wait_for(Duration::from_secs(3), || {
        let ctl = s.handle.daemon.ctl.try_lock();
        ctl.is_ok_and(|c| c.backends().all(|b| b.tracker.state().as_str() == "up"))
    })
    .await;
    assert!(ok.is_some(), "backends never came up");
    s
}

async fn id_of(s: &Setup, name: &str) -> u32 {
    s.handle.daemon.ctl.lock().await.backend(name).unwrap().id
}

fn in_ring(mem: &MemoryDataPlane, id: u32) -> bool {
    mem.ring(0).is_some_and(|r| r.contains(&id))
}

/// Kills backend `idx` with `mode`, returns the time from death to the table swap that
/// removed it (the swap's own timestamp in the data plane).
async fn death_to_removal(s: &Setup, idx: usize, mode: Mode) -> Duration {
    let name = format!("mta-{}", idx + 1);
    let id = id_of(s, &name).await;
    assert!(in_ring(&s.mem, id));
    let swaps_before = s.mem.state().swaps.len();
    let died = Instant::now();
    s.servers[idx].set(mode);
    let gone = wait_for(Duration::from_secs(3), || !in_ring(&s.mem, id)).await;
    assert!(gone.is_some(), "{name} ({mode:?}) never left the ring");
    let st = s.mem.state();
    assert_eq!(
        st.swaps.len(),
        swaps_before + 1,
        "exactly one swap for one death"
    );
    st.swaps.last().unwrap().0.duration_since(died)
}

async fn recovery(s: &Setup, idx: usize) -> Duration {
    let name = format!("mta-{}", idx + 1);
    let id = id_of(s, &name).await;
    let t = Instant::now();
    s.servers[idx].set(Mode::Healthy);
    let back = wait_for(Duration::from_secs(3), || in_ring(&s.mem, id)).await;
    assert!(back.is_some(), "{name} never came back");
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backends_leave_the_ring_in_time_and_come_back() {
    let s = setup("").await;
    let d = HealthCfg::default();
    let bound = d.interval.0 * d.fall + d.timeout.0;
    for (idx, mode) in [
        (0, Mode::Silent),
        (1, Mode::Banner421),
        (2, Mode::Banner554),
        (0, Mode::EhloRejected),
    ] {
        let took = death_to_removal(&s, idx, mode).await;
        println!(
            "death to removal, mta-{} {mode:?}: {took:?} (bound interval {:?} x fall {} + timeout {:?} = {bound:?})",
            idx + 1,
            d.interval.0,
            d.fall,
            d.timeout.0
        );
        assert!(took < bound, "{mode:?}: {took:?} >= {bound:?}");
        let status = s.handle.daemon.ctl.lock().await.status().unwrap();
        let b = &status.vips[0].backends[idx];
        assert_eq!(b.health, "down");
        assert!(!b.health_detail.is_empty());
        println!("  reason logged: {}", b.health_detail);
        let back = recovery(&s, idx).await;
        println!("  recovery after rise = {}: {back:?}", d.rise);
        // rise checks, each up to one interval apart, plus the current wait.
        assert!(back < d.interval.0 * (d.rise + 1) + d.timeout.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_count_as_down() {
    let mut s = setup("").await;
    let id = id_of(&s, "mta-3").await;
    let died = Instant::now();
    // Stop the server: the port refuses connections.
    drop(s.servers.pop());
    let gone = wait_for(Duration::from_secs(3), || !in_ring(&s.mem, id)).await;
    let took = died.elapsed();
    assert!(gone.is_some());
    println!("death to removal, refused port: {took:?}");
    let d = HealthCfg::default();
    assert!(took < d.interval.0 * d.fall + d.timeout.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_keeps_the_last_table() {
    let s = setup("").await;
    s.servers[0].set(Mode::Banner421);
    s.servers[1].set(Mode::Banner421);
    let id3 = id_of(&s, "mta-3").await;
    let only3 = wait_for(Duration::from_secs(3), || {
        s.mem.ring(0).is_some_and(|r| r.iter().all(|&x| x == id3))
    })
    .await;
    assert!(only3.is_some(), "ring never shrank to mta-3");
    let last = s.mem.ring(0).unwrap();
    let swaps = s.mem.state().swaps.len();
    s.servers[2].set(Mode::Banner421);
    let stale = wait_for(Duration::from_secs(3), || {
        s.handle
            .daemon
            .ctl
            .try_lock()
            .is_ok_and(|c| c.vip("smtp").unwrap().stale)
    })
    .await;
    assert!(stale.is_some(), "VIP never reported stale");
    assert_eq!(s.mem.ring(0).unwrap(), last, "last table kept");
    assert_eq!(
        s.mem.state().swaps.len(),
        swaps,
        "no swap to an empty table"
    );
    // One coming back gets a fresh table with only itself.
    s.servers[0].set(Mode::Healthy);
    let id1 = id_of(&s, "mta-1").await;
    let back = wait_for(Duration::from_secs(3), || {
        s.mem.ring(0).is_some_and(|r| r.iter().all(|&x| x == id1))
    })
    .await;
    assert!(back.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_mode_ignores_the_banner() {
    let s = setup("\n[health]\nmode = \"tcp\"\n").await;
    let id = id_of(&s, "mta-1").await;
    s.servers[0].set(Mode::Banner554);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(in_ring(&s.mem, id), "TCP mode only checks the connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_backends_are_checked_on_their_own_address() {
    let v4 = SmtpServer::start("127.0.0.1").await;
    let v6 = SmtpServer::start("::1").await;
    let dir = tempdir();
    let path = dir.path().join("balancer.toml");
    let text = config_text(
        &[
            ("mta-v4", "127.0.0.1", v4.addr.port()),
            ("mta-v6", "::1", v6.addr.port()),
        ],
        None,
        "",
    )
    .replace(
        "encap_src4 = \"127.0.0.1\"\n",
        "encap_src4 = \"127.0.0.1\"\nencap_src6 = \"::1\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let (h, mem) = support::start_daemon(&path, None).await;
    let id6 = h.daemon.ctl.lock().await.backend("mta-v6").unwrap().id;
    let up = wait_for(Duration::from_secs(3), || {
        h.daemon
            .ctl
            .try_lock()
            .is_ok_and(|c| c.backend("mta-v6").unwrap().tracker.state().as_str() == "up")
    })
    .await;
    assert!(up.is_some(), "IPv6 backend never passed a check");
    assert_eq!(mem.state().backends[&id6].family, balancer_ebpf::AF_INET6);
    v6.set(Mode::Banner554);
    let gone = wait_for(Duration::from_secs(3), || !in_ring(&mem, id6)).await;
    assert!(gone.is_some(), "IPv6 backend never left the ring");
}
