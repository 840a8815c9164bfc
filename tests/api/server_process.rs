//! Servers the tests start themselves (Redis, Prometheus): a free loopback port, a
//! start that skips where the program is not installed, and a wait for the server's
//! own "ready" line.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Spawns `command`, or returns `None` (after saying so) where its program is not
/// installed. With `{require}=1` (as in CI) a missing program fails the test instead.
pub fn spawn_or_skip(command: &mut Command, package: &str, require: &str) -> Option<Child> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    match command.spawn() {
        Ok(child) => Some(child),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var(require).as_deref() == Ok("1") {
                panic!("{require}=1 but {program} is not installed (apt-get install {package})");
            }
            eprintln!(
                "skipped: {program} not found; install the {package} package to run this test"
            );
            None
        }
        Err(error) => panic!("cannot start {program}: {error}"),
    }
}

/// Reads `output` until a line contains `ready`, then keeps draining it in the
/// background so the server never blocks on a full pipe. Returns the lines before
/// it when the output ends first.
pub async fn wait_for_line<R>(output: R, ready: &str) -> Result<(), Vec<String>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let mut lines = BufReader::new(output).lines();
    let mut before = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains(ready) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(());
        }
        before.push(line);
    }
    Err(before)
}
