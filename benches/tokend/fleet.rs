//! The service under test as the cells see it: one `mqtt-tokend serve` on sled, or N replicas
//! on the etcd the script started, sharing one fresh key prefix (so each replica set starts on
//! an empty store) and one keyring file, each with its own data directory for the root key
//! file. The replicas start one after another: the first creates the keyring and the root key,
//! the others open them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mqtt_tokend::{app::RootKeyFile, config::StoreKind};
use mqtt_tokend_client::AccessKey;

use crate::{
    args::Opts,
    etcd::delete_prefix,
    measure::Target,
    server::{dir_size, Tokend},
};

/// One replica set: the processes, and where they keep their data.
pub struct Fleet {
    /// The replicas, in start order; the first is where the set-up calls go.
    pub replicas: Vec<Tokend>,
    /// The etcd prefix the replicas share (none on sled).
    prefix: Option<String>,
    /// etcd's client address and pid, when the replicas store in it.
    etcd: Option<(String, Option<u32>)>,
    /// Tells apart two sets of the same size in one run (`--replicas 1,1`): "" or " #2".
    tag: String,
    /// Keyring and data directories; removed when the set is stopped.
    _dir: tempfile::TempDir,
}

/// A prefix no earlier run or replica set used: the bench's pid, the time and the set's size.
fn unique_prefix(replicas: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "/mqtt-tokend-bench-{}-{nanos:x}-r{replicas}/",
        std::process::id()
    )
}

/// "etcd, N replica(s)" and the tag: a replica set on etcd, in headings and row names.
pub fn describe_etcd(n: usize, tag: &str) -> String {
    match n {
        1 => format!("etcd, 1 replica{tag}"),
        n => format!("etcd, {n} replicas{tag}"),
    }
}

impl Fleet {
    /// Starts `n` replicas of the store `opts` asks for (`n` is 1 on sled: `Opts::parse`
    /// refuses more) and returns once every one answers SERVING, with the first one's time.
    /// `tag` goes after the set's description.
    pub async fn start(opts: &Opts, n: usize, tag: String) -> (Self, Duration) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store_args, prefix, etcd) = match (opts.store, &opts.etcd) {
            (StoreKind::Etcd, Some(endpoint)) => {
                let prefix = unique_prefix(n);
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("http://{endpoint}")
                };
                let args = vec![
                    "--store".to_owned(),
                    "etcd".to_owned(),
                    "--etcd-endpoints".to_owned(),
                    url,
                    "--etcd-prefix".to_owned(),
                    prefix.clone(),
                ];
                (args, Some(prefix), Some((endpoint.clone(), opts.etcd_pid)))
            }
            // Opts::parse refuses --store etcd without an endpoint.
            _ => (Vec::new(), None, None),
        };
        let mut replicas: Vec<Tokend> = Vec::with_capacity(n);
        let mut first_ready = Duration::ZERO;
        for i in 0..n {
            let data_dir = if n == 1 {
                dir.path().join("data")
            } else {
                dir.path().join(format!("data-{i}"))
            };
            let (server, ready) = Tokend::start_with(dir.path(), &data_dir, &store_args).await;
            if i == 0 {
                first_ready = ready;
            } else {
                assert_eq!(
                    server.root.access_key_id, replicas[0].root.access_key_id,
                    "replicas on one prefix share the root key"
                );
            }
            replicas.push(server);
        }
        let fleet = Self {
            replicas,
            prefix,
            etcd,
            tag,
            _dir: dir,
        };
        (fleet, first_ready)
    }

    /// The replica that takes the set-up calls.
    pub fn first(&self) -> &Tokend {
        &self.replicas[0]
    }

    /// The root key file, the same on every replica.
    pub fn root(&self) -> &RootKeyFile {
        &self.first().root
    }

    /// The root key, which every gRPC cell authenticates as.
    pub fn key(&self) -> AccessKey {
        self.first().key()
    }

    /// Every replica's gRPC address.
    pub fn endpoints(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.endpoint.clone()).collect()
    }

    /// Every replica's REST address.
    pub fn http_endpoints(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| r.http_endpoint.clone())
            .collect()
    }

    /// Every replica's process id.
    pub fn pids(&self) -> Vec<u32> {
        self.replicas.iter().map(Tokend::pid).collect()
    }

    /// etcd's pid, when the replicas store in it.
    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.as_ref().and_then(|(_, pid)| *pid)
    }

    /// A target for the load cells: every replica, as the root key, with etcd's CPU time when
    /// the replicas store in it.
    pub fn target(&self) -> Target {
        Target {
            endpoints: self.endpoints(),
            pids: self.pids(),
            key: Some(self.key()),
            backend_pid: self.etcd_pid(),
        }
    }

    /// "sled" or "etcd, N replica(s)": what the headings and row names say.
    pub fn describe(&self) -> String {
        match self.prefix {
            None => "sled".into(),
            Some(_) => describe_etcd(self.replicas.len(), &self.tag),
        }
    }

    /// The heading of this set's unary table. On sled it is the one the docs have always shown.
    pub fn section(&self) -> String {
        match self.prefix {
            None => "Unary calls, empty store".into(),
            Some(_) => format!("Unary calls on {}, empty store", self.describe()),
        }
    }

    /// One line on memory and the store's size after the cells.
    pub fn memory_line(&self) -> String {
        let rss: Vec<String> = self
            .replicas
            .iter()
            .map(|r| {
                let (rss, hwm) = r.rss_mib();
                format!("{rss:.0} MiB (peak {hwm:.0} MiB)")
            })
            .collect();
        match self.prefix {
            None => format!(
                "mqtt-tokend after the unary cells: RSS {}, store {:.1} MiB on disk.",
                rss.join(""),
                dir_size(&self.first().data_dir) as f64 / 1048576.0
            ),
            Some(_) => format!(
                "mqtt-tokend after the unary cells ({}): RSS {} (each replica holds a local mirror of the prefix).",
                self.describe(),
                rss.join(", ")
            ),
        }
    }

    /// Stops every replica (graceful shutdown) and removes the set's etcd prefix, so a run
    /// against a long-lived etcd leaves nothing behind.
    pub async fn stop(self) {
        for r in self.replicas {
            r.stop();
        }
        if let (Some(prefix), Some((endpoint, _))) = (&self.prefix, &self.etcd) {
            delete_prefix(endpoint, prefix).await;
        }
    }
}
