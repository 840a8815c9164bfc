//! The connection to one Redis server or to a cluster, behind one type.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// How the Redis deployment is laid out (`REDIS_CLUSTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (possibly a primary with replicas behind one address).
    Single,
    /// A Redis Cluster, reached through one or more of its nodes.
    Cluster,
}

/// Where a store's commands go: a single server through the calling thread's own
/// connection, or a cluster through one shared connection.
pub(super) enum Connections {
    /// Boxed: the client and its configuration are some 300 bytes, the cluster's handle 16.
    Single(Box<PerThread>),
    Cluster(ClusterConnection),
}

impl Connections {
    /// The connection for a command sent from this thread.
    pub(super) fn here(&self) -> RedisResult<Connection> {
        Ok(match self {
            Connections::Single(connections) => Connection::Single(connections.here()?),
            Connections::Cluster(connection) => Connection::Cluster(connection.clone()),
        })
    }
}

/// Connections to one server, one per thread that sends it commands, each made on first
/// use there (and remade after a failure). A connection's task runs on the runtime of the
/// thread that made it, so an HTTP worker's commands are written and read on that worker:
/// with one shared connection, whose task ran on the process's own thread, every round
/// trip was handed to that thread and back (two wake-ups, on two shared cores). And a
/// runtime that stops (the workers', with the server) takes only its own connections
/// with it: the background tasks on the process's runtime keep theirs.
pub(super) struct PerThread {
    /// Tells this store's connections from another's in a thread's list.
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
}

/// Connections a thread keeps, for this many stores at most (a process opens one; tests
/// open many, each on threads of its own).
const STORES_PER_THREAD: usize = 4;

thread_local! {
    static THREAD_CONNECTIONS: RefCell<Vec<(u64, ConnectionManager)>> =
        const { RefCell::new(Vec::new()) };
}

impl PerThread {
    pub(super) fn new(client: redis::Client, config: ConnectionManagerConfig) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        PerThread {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            config,
        }
    }

    /// This thread's connection, made now if it has none. Must be called on a Tokio
    /// runtime (the connection's task is spawned there).
    fn here(&self) -> RedisResult<ConnectionManager> {
        THREAD_CONNECTIONS.with_borrow_mut(|connections| {
            if let Some((_, connection)) = connections.iter().find(|(id, _)| *id == self.id) {
                return Ok(connection.clone());
            }
            let connection =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
            if connections.len() == STORES_PER_THREAD {
                connections.remove(0);
            }
            connections.push((self.id, connection.clone()));
            Ok(connection)
        })
    }
}

/// A connection to either layout; both reconnect on their own after a failure.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}
