//! The lab's network plumbing on its own: every host reaches every other through the
//! router, and tearing down leaves no namespace behind. Needs root.
#![cfg(feature = "privileged")]

use e2e::topo::{self, Lab, Shape};

fn prefix(tag: &str) -> String {
    format!("slbt{}{tag}", std::process::id() % 100_000)
}

#[test]
fn hosts_reach_each_other_and_down_removes_everything() {
    let p = prefix("t");
    {
        let lab = Lab::up(&p, Shape::default()).expect("lab up");
        assert_eq!(lab.namespaces().len(), 4 + 2 + 3 + 3);
        let targets: Vec<String> = lab
            .mtas
            .iter()
            .chain(lab.isps.iter())
            .chain(lab.lbs.iter())
            .map(|h| h.addr4().to_string())
            .chain(lab.mtas.iter().map(|h| h.addr6().to_string()))
            .collect();
        for t in &targets {
            let out = lab
                .client
                .ns
                .exec_output("ping", &["-c1", "-W2", t])
                .expect("ping runs");
            assert!(
                out.status.success(),
                "client cannot reach {t}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    assert_eq!(
        topo::down(&p),
        0,
        "the guards removed every namespace on drop"
    );
}

#[test]
fn down_removes_a_kept_lab() {
    let p = prefix("k");
    let mut lab = Lab::up(
        &p,
        Shape {
            balancers: 1,
            backends: 1,
            isps: 1,
        },
    )
    .expect("lab up");
    lab.keep();
    drop(lab);
    assert_eq!(topo::down(&p), 4 + 3);
    assert_eq!(topo::down(&p), 0);
}
