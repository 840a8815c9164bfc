//! A `redis-server` of the test's own, on a free loopback port.

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
        let mut child = spawn_or_skip(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
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
}
