//! Config loading: the example parses, and bad files give exact errors with file, line,
//! column and field.

use super::*;

const EXAMPLE: &str = include_str!("../../examples/balancer.toml");

/// A small valid file; tests break one line of it at a time.
const BASE: &str = r#"[dataplane]
interfaces = ["eth0"]
own_mac = "02:00:00:00:00:01"
encap_src4 = "198.18.0.2"

[health]
interval = "250ms"
timeout = "200ms"

[[vip]]
name = "smtp"
addr = "198.18.100.1"
ring_size = 251

[[vip.backend]]
name = "a"
addr = "198.18.1.1"

[[vip.backend]]
name = "b"
addr = "198.18.1.2"
weight = 50
"#;

fn err(text: &str) -> String {
    parse(text, "bad.toml").unwrap_err().to_string()
}

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn example_and_base_parse() {
    let cfg = parse(EXAMPLE, "balancer.toml").expect("example is valid");
    assert_eq!(cfg.vips.len(), 1);
    assert_eq!(cfg.vips[0].backends.len(), 3);
    assert_eq!(cfg.vips[0].hash, HashMode::Maglev);
    assert_eq!(cfg.vips[0].ports, vec![25, 587, 465]);
    assert_eq!(cfg.health.interval, HealthCfg::default().interval);
    let base = parse(BASE, "base.toml").expect("base is valid");
    assert_eq!(base.vips[0].backends[0].weight, 100);
    assert_eq!(base.dataplane.nexthop_mac, MacSetting::Auto);
    assert_eq!(
        base.dataplane.own_mac,
        MacSetting::Fixed([2, 0, 0, 0, 0, 1])
    );
}

#[test]
fn wrong_type_names_line_and_field() {
    assert_eq!(
        err(&with("weight = 50", "weight = \"half\"")),
        "bad.toml:22:10: vip[0].backend[1].weight: invalid type: string \"half\", expected u32"
    );
}

#[test]
fn unknown_field_is_an_error() {
    assert_eq!(
        err(&with("encap_src4", "mtux = 3\nencap_src4")),
        "bad.toml:4:1: dataplane.mtux: unknown field `mtux`, expected one of `interfaces`, `xdp_mode`, `own_mac`, `nexthop_mac`, `encap_src4`, `encap_src6`, `src_vary_bits`, `mtu`, `pin_dir`, `id_file`"
    );
}

#[test]
fn ring_size_must_be_prime() {
    assert_eq!(
        err(&with("ring_size = 251", "ring_size = 256")),
        "bad.toml:13:13: vip[0].ring_size: 256 is not a prime between 2 and 65537 (e.g. 65537, 32771, 16381, 4093)"
    );
    assert_eq!(
        err(&with("ring_size = 251", "ring_size = 13")),
        "bad.toml:13:13: vip[0].ring_size: 13 is too small for 2 backends (at least 20: 10 slots per backend)"
    );
}

#[test]
fn durations_need_units_and_timeout_below_interval() {
    assert_eq!(
        err(&with("interval = \"250ms\"", "interval = \"250\"")),
        "bad.toml:7:12: health.interval: invalid duration \"250\": missing unit after 250 (use ms, s, m or h)"
    );
    assert_eq!(
        err(&with("timeout = \"200ms\"", "timeout = \"1s\"")),
        "bad.toml:8:11: health.timeout: 1s must be shorter than interval (250ms)"
    );
}

#[test]
fn syntax_error_has_line() {
    assert_eq!(
        err(&with("[health]", "[health")),
        "bad.toml:6:8: invalid table header; expected `.`, `]`"
    );
}

#[test]
fn bad_addresses_and_macs() {
    assert_eq!(
        err(&with("addr = \"198.18.1.2\"", "addr = \"198.18.1.300\"")),
        "bad.toml:21:8: vip[0].backend[1].addr: invalid IP address syntax"
    );
    assert_eq!(
        err(&with("02:00:00:00:00:01", "02:00:00:00:01")),
        "bad.toml:3:11: dataplane.own_mac: invalid MAC address \"02:00:00:00:01\": expected \"auto\" or six hex bytes like \"02:00:00:00:00:01\""
    );
    assert_eq!(
        err(&with("addr = \"198.18.1.2\"", "addr = \"fd00:198:18::7\"")),
        "bad.toml:21:8: vip[0].backend[1].addr: IPv6 backend fd00:198:18::7 needs dataplane.encap_src6"
    );
}

#[test]
fn duplicate_names_and_missing_fields() {
    assert_eq!(
        err(&with("name = \"b\"", "name = \"a\"")),
        "bad.toml:20:8: vip[0].backend[1].name: duplicate backend name \"a\" (names are unique over all VIPs)"
    );
    assert_eq!(
        err(&with("name = \"b\"\n", "")),
        "bad.toml:19:1: vip[0].backend[1]: missing field `name`"
    );
}

#[test]
fn every_problem_is_reported() {
    let text = with("weight = 50", "weight = 20000\nhealth_port = 0");
    assert_eq!(
        err(&text),
        "bad.toml:22:10: vip[0].backend[1].weight: 20000 is out of range (0..=10000)\n\
         bad.toml:23:15: vip[0].backend[1].health_port: must not be 0"
    );
}

#[test]
fn acl_family_and_enum_values() {
    assert_eq!(
        err(&with("ring_size = 251", "ring_size = 251\nacl = [\"fd00::/8\"]")),
        "bad.toml:14:8: vip[0].acl[0]: prefix fd00::/8 is not of the VIP's address family (198.18.100.1)"
    );
    assert_eq!(
        err(&with("ring_size = 251", "ring_size = 251\nhash = \"random\"")),
        "bad.toml:14:8: vip[0].hash: unknown variant `random`, expected `maglev` or `sticky-source`"
    );
}

#[test]
fn missing_file_is_named() {
    let e = load(std::path::Path::new("/nonexistent/balancer.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/balancer.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn warnings_for_generic_mode_and_public_api() {
    let text =
        with("own_mac", "xdp_mode = \"generic\"\nown_mac") + "\n[api]\nlisten = \"0.0.0.0:9110\"\n";
    // `[api]` after `[[vip.backend]]` is a new top-level table: still valid.
    let cfg = parse(&text, "w.toml").unwrap();
    let w = validate::warnings(&cfg);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].starts_with("dataplane.xdp_mode = \"generic\""));
}

#[test]
fn errors_inside_inline_tables_and_arrays_name_the_element() {
    assert_eq!(
        err(&with(
            "ring_size = 251",
            "ring_size = 251\nsyn_guard = { rate = 10, burst = \"many\" }"
        )),
        "bad.toml:14:34: vip[0].syn_guard.burst: invalid type: string \"many\", expected u32"
    );
    assert_eq!(
        err(&with(
            "ring_size = 251",
            "ring_size = 251\nacl = [\"198.18.0.0/15\", \"198.18.0.0/99\"]"
        )),
        "bad.toml:14:25: vip[0].acl[1]: invalid prefix \"198.18.0.0/99\": length must be 0..=32"
    );
    assert_eq!(
        err(&with(
            "ring_size = 251",
            "ring_size = 251\nsyn_guard = { rate = 0, burst = 5 }"
        )),
        "bad.toml:14:22: vip[0].syn_guard.rate: must be at least 1"
    );
}
