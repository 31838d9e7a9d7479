//! The configuration the tests (and benchmarks) run with is built from the defaults alone:
//! an `MQTT_TOKEND_*` variable in a developer's shell must not change it, while the real
//! command line still honours it. One test in its own process, because it sets variables.

mod common;

use clap::Parser;
use mqtt_tokend::config::{Cli, Command, ServeConfig};

/// What `mqtt-tokend serve <args>` would run with, in this process's environment.
fn parsed(args: &[&str]) -> ServeConfig {
    let argv = ["mqtt-tokend", "serve"].iter().chain(args);
    match Cli::try_parse_from(argv).expect("serve parses").command {
        Command::Serve(config) => *config,
        other => panic!("parsed {other:?}"),
    }
}

#[test]
fn test_configs_do_not_read_the_environment() {
    // A clean slate, so clap's answer below is its defaults and nothing else.
    for (name, _) in std::env::vars() {
        if name.starts_with("MQTT_TOKEND_") {
            std::env::remove_var(name);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let before = common::test_config(&dir);
    assert_eq!(
        parsed(&[]),
        ServeConfig::default(),
        "the command line's defaults are the constants"
    );

    for (name, value) in [
        ("MQTT_TOKEND_GRPC_ADDR", "127.0.0.1:1"),
        ("MQTT_TOKEND_HTTP_ADDR", "off"),
        ("MQTT_TOKEND_DATA_DIR", "/nonexistent"),
        ("MQTT_TOKEND_MAX_DEVICES_PER_INSTANCE", "3"),
        ("MQTT_TOKEND_WATCH_PROGRESS_INTERVAL", "1ms"),
        ("MQTT_TOKEND_SHUTDOWN_GRACE", "0s"),
    ] {
        std::env::set_var(name, value);
    }
    // The variables are live: the command line picks them up...
    let from_env = parsed(&[]);
    assert_eq!(from_env.grpc_addr.host_port(), ("127.0.0.1", 1));
    assert_eq!(from_env.max_devices_per_instance, 3);
    // ...and the test configuration does not.
    assert_eq!(common::test_config(&dir), before);
    assert_eq!(
        ServeConfig::with_dirs(dir.path().join("d"), dir.path().join("k")).max_devices_per_instance,
        ServeConfig::default().max_devices_per_instance
    );
}
