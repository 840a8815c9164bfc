//! A `redis-server` of the test's own on a free loopback port, or three of them as one
//! Redis Cluster.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::server_process::{free_port, spawn_or_skip, wait_for_line};

/// A running Redis, stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts one, or returns `None` (after saying so) where `redis-server` is not
    /// installed. With `REQUIRE_REDIS=1` (as in CI) a missing server fails the test.
    pub async fn start() -> Option<RedisServer> {
        Self::start_on(free_port()).await
    }

    /// Starts one on `port` (to bring a stopped server back at the same address).
    pub async fn start_on(port: u16) -> Option<RedisServer> {
        Self::spawn(port, &[]).await
    }

    /// Starts one on `port` with more command-line options.
    async fn spawn(port: u16, options: &[String]) -> Option<RedisServer> {
        let mut child = spawn_or_skip(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
                .args(options)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true),
            "redis-server",
            "REQUIRE_REDIS",
        )?;
        // Wait for the server to say it is ready, rather than for a while.
        let stdout = child.stdout.take().expect("piped stdout");
        match wait_for_line(stdout, "Ready to accept connections").await {
            Ok(()) => Some(RedisServer { port, child }),
            Err(_) => panic!("redis-server exited before it was ready (port {port} taken?)"),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits until it is gone.
    pub async fn stop(mut self) -> u16 {
        self.child.kill().await.expect("kill redis-server");
        self.port
    }

    /// Freezes the server (SIGSTOP): connections are still accepted, nothing answers, as
    /// with a Redis that hangs.
    pub async fn freeze(&self) {
        let pid = self.child.id().expect("redis-server runs").to_string();
        let status = Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "cannot freeze redis-server");
    }

    /// A command on this server.
    pub async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server");
        command
            .query_async(&mut connection)
            .await
            .expect("redis command")
    }
}

/// Three `redis-server` nodes forming one Redis Cluster, each serving a third of the
/// slots (no replicas). Stopped when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts one, or returns `None` where `redis-server` is not installed (see
    /// [`RedisServer::start`]). Needs Redis 7 (CLUSTER ADDSLOTSRANGE, --cluster-port).
    pub async fn start() -> Option<RedisCluster> {
        let dir = std::env::temp_dir().join(format!(
            "otp-relay-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster's files");
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        let mut buses = Vec::new();
        for _ in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let config = cluster.dir.join(format!("nodes-{port}.conf"));
            let options = [
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                config.display().to_string(),
                "--cluster-port".to_owned(),
                bus.to_string(),
            ];
            cluster
                .nodes
                .push(RedisServer::spawn(port, &options).await?);
            buses.push(bus);
        }

        const SLOTS: u16 = 16384;
        let share = SLOTS / 3;
        for (i, node) in cluster.nodes.iter().enumerate() {
            let first = share * i as u16;
            let last = if i == 2 { SLOTS - 1 } else { first + share - 1 };
            let mut add = redis::cmd("CLUSTER");
            add.arg("ADDSLOTSRANGE").arg(first).arg(last);
            node.query::<()>(&add).await;
        }
        for (node, bus) in cluster.nodes.iter().zip(&buses).skip(1) {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg("127.0.0.1").arg(node.port).arg(*bus);
            cluster.nodes[0].query::<()>(&meet).await;
        }
        cluster.wait_until_up().await;
        Some(cluster)
    }

    /// Waits until every node sees all slots served (the nodes agree within a second or
    /// two; the poll gives up after 20 s).
    async fn wait_until_up(&self) {
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        for _ in 0..400 {
            let mut up = true;
            for node in &self.nodes {
                let text: String = node.query(&info).await;
                up &= text.contains("cluster_state:ok");
            }
            if up {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the Redis Cluster did not come up");
    }

    /// Every node's URL, as `REDIS_URL` takes them with `REDIS_CLUSTER=true`.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(RedisServer::url).collect();
        urls.join(",")
    }

    /// How many keys each node holds.
    pub async fn keys_per_node(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            counts.push(node.query(&redis::cmd("DBSIZE")).await);
        }
        counts
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
