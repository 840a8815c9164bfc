//! A `redis-server` of the test's own, on a free loopback port.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var("REQUIRE_REDIS").as_deref() == Ok("1") {
                    panic!("REQUIRE_REDIS=1 but redis-server is not installed (apt-get install redis-server)");
                }
                eprintln!("skipped: redis-server not found; install the redis-server package to run the Redis tests");
                return None;
            }
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        // Wait for the server to say it is ready, rather than for a while.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.expect("redis-server output") {
            if line.contains("Ready to accept connections") {
                // Keep draining so the server never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Some(RedisServer { port, child });
            }
        }
        panic!("redis-server exited before it was ready (port {port} taken?)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits until it is gone.
    pub async fn stop(mut self) -> u16 {
        self.child.kill().await.expect("kill redis-server");
        self.port
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
