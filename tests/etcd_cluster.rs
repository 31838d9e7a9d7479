//! The etcd test kit (`tests/etcd_kit/`) against real etcd processes: a three-member cluster
//! replicates a write, keeps taking writes with its leader killed by SIGKILL, and takes the
//! killed member back on its data directory; a single member restarts on its data. Everything
//! goes through etcd's HTTP/JSON gateway, so these tests check the kit, not the store backend.
//! Skip when `etcd` is missing and `CI` is unset (`scripts/install-tools.sh etcd` installs it).

mod etcd_kit;

use std::{os::unix::fs::PermissionsExt, time::Instant};

use etcd_kit::{unique_prefix, EtcdCluster, WAIT};

/// Retries `op` until it succeeds or [`WAIT`] passes: a write right after the leader died
/// waits for the election, and etcd gives no signal for its end other than a write going
/// through.
fn until_ok<T>(what: &str, mut op: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match op() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what} failed for {WAIT:?}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

#[test]
fn three_members_replicate_and_keep_writing_with_the_leader_killed() {
    let Some(mut etcd) = EtcdCluster::start(3) else {
        return;
    };
    let endpoints = etcd.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(etcd.endpoints_csv(), endpoints.join(","));
    for (i, e) in endpoints.iter().enumerate() {
        assert_eq!(*e, etcd.member_endpoint(i));
        assert!(e.starts_with("http://127.0.0.1:"), "{e}");
    }
    let prefix = unique_prefix();
    assert!(prefix.starts_with("/mqtt-tokend-test-") && prefix.ends_with('/'));
    assert_ne!(prefix, unique_prefix());
    let key = |name: &str| format!("{prefix}{name}").into_bytes();

    // Written through member 0, read (linearizably) through member 2.
    let first = etcd.put(0, &key("a"), b"one").expect("put on member 0");
    assert_eq!(etcd.get(2, &key("a")).unwrap(), Some(b"one".to_vec()));
    assert_eq!(etcd.get(2, &key("absent")).unwrap(), None);

    // The leader, killed: its endpoint refuses, the other two elect a leader and take writes.
    let dead = etcd.leader();
    etcd.kill(dead);
    assert!(!etcd.is_running(dead));
    assert!(!etcd.is_healthy(dead));
    assert!(etcd.put(dead, &key("b"), b"lost").is_err());
    let live: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let second = until_ok("a put with the leader dead", || {
        etcd.put(live[0], &key("b"), b"two")
    });
    assert!(second > first, "revision {second} after {first}");
    assert_eq!(etcd.get(live[1], &key("b")).unwrap(), Some(b"two".to_vec()));
    let leader = etcd.leader();
    assert!(
        live.contains(&leader),
        "leader {leader} is not one of {live:?}"
    );

    // Back on its data dir and ports: it has caught up (a linearizable read of what was
    // written while it was dead) and takes writes that the others see.
    let endpoint = etcd.member_endpoint(dead);
    etcd.restart(dead);
    assert_eq!(etcd.member_endpoint(dead), endpoint);
    assert!(etcd.is_healthy(dead));
    assert_eq!(etcd.get(dead, &key("b")).unwrap(), Some(b"two".to_vec()));
    etcd.put(dead, &key("c"), b"three")
        .expect("put on the restarted member");
    assert_eq!(
        etcd.get(live[0], &key("c")).unwrap(),
        Some(b"three".to_vec())
    );
}

#[test]
fn a_single_member_restarts_on_its_data() {
    let Some(mut etcd) = EtcdCluster::start(1) else {
        return;
    };
    assert_eq!(etcd.endpoints(), vec![etcd.member_endpoint(0)]);
    assert_eq!(etcd.endpoints_csv(), etcd.member_endpoint(0));
    let key = format!("{}k", unique_prefix()).into_bytes();
    let revision = etcd.put(0, &key, b"kept").expect("put");
    // An empty value reads back as empty, not as absent.
    etcd.put(0, b"/empty", b"").expect("put an empty value");

    etcd.kill(0);
    assert!(etcd.get(0, &key).is_err(), "a killed member answered");
    etcd.restart(0);
    assert_eq!(etcd.leader(), 0);
    assert_eq!(etcd.get(0, &key).unwrap(), Some(b"kept".to_vec()));
    assert_eq!(etcd.get(0, b"/empty").unwrap(), Some(Vec::new()));
    let after = etcd.put(0, &key, b"again").expect("put after the restart");
    assert!(after > revision, "revision {after} after {revision}");
}

#[test]
fn a_start_that_loses_a_port_to_another_process_retries_on_new_ports() {
    let Some(etcd) = etcd_kit::etcd_binary() else {
        return;
    };
    // An etcd whose first run fails as a bind to a port taken meanwhile does; later runs are
    // the real etcd, each logging the client URL it was given.
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let wrapper = dir.path().join("etcd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             echo \"$*\" >> '{runs}'\n\
             if [ \"$(wc -l < '{runs}')\" -eq 1 ]; then\n\
             echo 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2; exit 1\n\
             fi\n\
             exec '{etcd}' \"$@\"\n",
            runs = runs.display(),
            etcd = etcd.display(),
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the wrapper");

    let cluster = EtcdCluster::start_with(&wrapper, 1);
    assert!(cluster.is_healthy(0));
    let runs = std::fs::read_to_string(&runs).expect("the wrapper's runs");
    let runs: Vec<&str> = runs.lines().collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let client_url = |run: &str| {
        let args: Vec<&str> = run.split(' ').collect();
        let at = args.iter().position(|a| *a == "--listen-client-urls");
        at.map(|at| args[at + 1].to_owned())
    };
    assert_ne!(
        client_url(runs[0]),
        client_url(runs[1]),
        "the same ports again"
    );
    assert_eq!(client_url(runs[1]), Some(cluster.member_endpoint(0)));
}
