//! Controller behaviour against the in-memory data plane.

use std::collections::BTreeMap;

use super::feedback::Load;
use super::*;
use crate::config::{self, Config};
use crate::health::{CheckError, Health};

const CFG: &str = r#"
[dataplane]
interfaces = ["eth0"]
own_mac = "02:00:00:00:00:01"
nexthop_mac = "02:00:00:00:00:02"
encap_src4 = "198.18.0.2"

[[vip]]
name = "a"
addr = "198.18.100.1"
ring_size = 4093
[[vip.backend]]
name = "a1"
addr = "198.18.1.1"
[[vip.backend]]
name = "a2"
addr = "198.18.1.2"
[[vip.backend]]
name = "a3"
addr = "198.18.1.3"

[[vip]]
name = "b"
addr = "198.18.100.2"
ports = [25]
ring_size = 251
[[vip.backend]]
name = "b1"
addr = "198.18.2.1"
"#;

fn cfg(text: &str) -> Config {
    config::parse(text, "t.toml").unwrap()
}

fn setup() -> (Controller, MemoryDataPlane) {
    let mem = MemoryDataPlane::new();
    let mut c = Controller::new(Box::new(mem.clone()));
    c.apply_config(cfg(CFG), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .unwrap();
    (c, mem)
}

fn down() -> Result<(), CheckError> {
    Err(CheckError::Closed { stage: "banner" })
}

fn members(mem: &MemoryDataPlane, vip_id: u32) -> Vec<u32> {
    let mut ids = mem.ring(vip_id).unwrap();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[test]
fn first_config_writes_everything() {
    let (c, mem) = setup();
    let s = mem.state();
    assert!(s.config.is_some());
    assert_eq!(s.vips.len(), 4, "3 ports of a + 1 of b");
    assert_eq!(s.backends.len(), 4);
    assert_eq!(s.rings[&0].len(), 4093);
    assert_eq!(s.rings[&1].len(), 251);
    drop(s);
    let a1 = c.backend("a1").unwrap().id;
    assert_eq!(members(&mem, 0).len(), 3);
    assert!(members(&mem, 0).contains(&a1));
}

#[test]
fn health_flip_rebuilds_only_that_vip() {
    let (mut c, mem) = setup();
    let swaps = mem.state().swaps.len();
    let a2 = c.backend("a2").unwrap().id;
    // Unknown -> Up: same table, no swap.
    assert_eq!(c.health_report("a2", &Ok(())).unwrap(), Some(Health::Up));
    assert_eq!(mem.state().swaps.len(), swaps);
    for _ in 0..2 {
        assert_eq!(c.health_report("a2", &down()).unwrap(), None);
    }
    assert_eq!(c.health_report("a2", &down()).unwrap(), Some(Health::Down));
    let s = mem.state();
    assert_eq!(s.swaps.len(), swaps + 1);
    assert_eq!(s.swaps.last().unwrap().1, 0, "only VIP a swapped");
    drop(s);
    assert!(!members(&mem, 0).contains(&a2));
    // rise = 2
    c.health_report("a2", &Ok(())).unwrap();
    assert!(!members(&mem, 0).contains(&a2));
    c.health_report("a2", &Ok(())).unwrap();
    assert!(members(&mem, 0).contains(&a2));
}

#[test]
fn all_down_keeps_the_last_table() {
    let (mut c, mem) = setup();
    let before = mem.ring(1).unwrap();
    c.health_report("b1", &down()).unwrap();
    assert_eq!(mem.ring(1).unwrap(), before);
    assert!(c.vip("b").unwrap().stale);
    assert!(c.status().unwrap().vips[1].table_stale);
    c.health_report("b1", &Ok(())).unwrap();
    c.health_report("b1", &Ok(())).unwrap();
    assert!(!c.vip("b").unwrap().stale);
}

#[test]
fn drain_weight_and_unknown_names() {
    let (mut c, mem) = setup();
    let a1 = c.backend("a1").unwrap().id;
    c.drain("a1").unwrap();
    assert!(!members(&mem, 0).contains(&a1));
    c.undrain("a1").unwrap();
    assert!(members(&mem, 0).contains(&a1));
    c.set_weight("a1", 300).unwrap();
    let ring = mem.ring(0).unwrap();
    let share = ring.iter().filter(|&&id| id == a1).count() as f64 / ring.len() as f64;
    assert!((share - 0.6).abs() < 0.01, "300 of 500: {share}");
    c.set_weight("a1", 0).unwrap();
    assert!(!members(&mem, 0).contains(&a1));
    assert!(matches!(
        c.drain("nope"),
        Err(ControlError::UnknownBackend { .. })
    ));
    assert!(matches!(
        c.set_weight("a1", 10_001),
        Err(ControlError::BadWeight { .. })
    ));
}

#[test]
fn reload_keeps_ids_and_touches_only_changed_vips() {
    let (mut c, mem) = setup();
    let ids: Vec<u32> = ["a1", "a2", "a3", "b1"]
        .iter()
        .map(|n| c.backend(n).unwrap().id)
        .collect();
    let swaps = mem.state().swaps.len();
    // Remove a2, add a4 to VIP a; VIP b untouched.
    let text = CFG.replace(
        "name = \"a2\"\naddr = \"198.18.1.2\"",
        "name = \"a4\"\naddr = \"198.18.1.4\"",
    );
    let sum = c
        .apply_config(cfg(&text), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .unwrap();
    assert_eq!(sum.backends_added, vec!["a4"]);
    assert_eq!(sum.backends_removed, vec!["a2"]);
    assert_eq!(sum.vips_rebuilt, vec!["a"]);
    let s = mem.state();
    assert_eq!(s.swaps.len(), swaps + 1);
    assert_eq!(s.backends[&ids[1]].flags, 0, "a2 invalidated");
    drop(s);
    assert_eq!(c.backend("a1").unwrap().id, ids[0]);
    assert_eq!(c.backend("b1").unwrap().id, ids[3]);
    let a4 = c.backend("a4").unwrap().id;
    assert!(!ids.contains(&a4), "a fresh id, never a reused one");
    assert!(!members(&mem, 0).contains(&ids[1]));
    // Same file again: nothing to do.
    let sum = c
        .apply_config(cfg(&text), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .unwrap();
    assert!(sum.vips_rebuilt.is_empty());
    assert_eq!(mem.state().swaps.len(), swaps + 1);
}

#[test]
fn api_weight_survives_reload_unless_the_file_changes_it() {
    let (mut c, _mem) = setup();
    c.set_weight("a1", 5).unwrap();
    c.drain("a3").unwrap();
    c.apply_config(cfg(CFG), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .unwrap();
    assert_eq!(c.backend("a1").unwrap().weight(), 5);
    assert!(c.backend("a3").unwrap().drained);
    let text = CFG.replace(
        "name = \"a1\"\naddr = \"198.18.1.1\"",
        "name = \"a1\"\naddr = \"198.18.1.1\"\nweight = 70",
    );
    c.apply_config(cfg(&text), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .unwrap();
    assert_eq!(c.backend("a1").unwrap().weight(), 70);
}

#[test]
fn feedback_sheds_the_backlogged_backend() {
    let text = CFG.replace(
        "[[vip]]\nname = \"a\"",
        "[feedback]\nenabled = true\n\n[[vip]]\nname = \"a\"",
    );
    let mem = MemoryDataPlane::new();
    let mut c = Controller::new(Box::new(mem.clone()));
    c.apply_config(cfg(&text), [0; 6], [0; 6]).unwrap();
    let load = |q| {
        Some(Load {
            queue_depth: Some(q),
            active_deliveries: None,
        })
    };
    let loads: BTreeMap<String, Option<Load>> = [
        ("a1".to_string(), load(9000)),
        ("a2".to_string(), load(100)),
        ("a3".to_string(), None),
    ]
    .into_iter()
    .collect();
    c.apply_loads(&loads).unwrap();
    assert_eq!(c.backend("a1").unwrap().effective(), 90);
    assert_eq!(c.backend("a2").unwrap().effective(), 100);
    let st = c.status().unwrap();
    let a1 = &st.vips[0].backends[0];
    assert_eq!((a1.configured_weight, a1.effective_weight), (100, 90));
    assert_eq!(a1.queue_depth, Some(9000));
    // Switching feedback off gives the weight back at once.
    c.apply_config(cfg(CFG), [0; 6], [0; 6]).unwrap();
    assert_eq!(c.backend("a1").unwrap().effective(), 100);
}
