//! The running gateway: the published snapshot, the listeners, reload and
//! shutdown. Reload builds a complete snapshot and binds any new addresses
//! before publishing, so a failed reload changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, ConfigError, ConfigErrors};
use crate::snapshot::{self, Snapshot};

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file, re-read on every reload; also the name used in errors.
    pub path: PathBuf,
    /// Text built into the binary (the demo), used instead of reading `path`.
    pub embedded: Option<&'static str>,
    /// Values for `${VAR}` that take precedence over the environment.
    pub overrides: HashMap<String, String>,
}

impl ConfigSource {
    pub fn file(path: PathBuf) -> Self {
        Self {
            path,
            embedded: None,
            overrides: HashMap::new(),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn load(&self) -> Result<config::Config, ConfigErrors> {
        let lookup = |name: &str| {
            self.overrides
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok())
        };
        match self.embedded {
            Some(text) => config::load::load_text(&self.path, text, lookup),
            None => config::load::read_file(&self.path)
                .and_then(|text| config::load::load_text(&self.path, &text, lookup)),
        }
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

impl ReloadError {
    /// One line per problem, for logs and the admin API.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Config(errors) => errors.0.iter().map(ConfigError::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// How long start-up waits for Redis before serving with fallbacks.
const REDIS_START_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

struct ListenerHandle {
    stop: CancellationToken,
}

pub struct Gateway {
    pub source: ConfigSource,
    snapshot: ArcSwap<Snapshot>,
    listeners: Mutex<HashMap<SocketAddr, ListenerHandle>>,
    /// Fired once on shutdown: connections finish what they are doing and close.
    pub shutdown: CancellationToken,
    /// Every connection and upgraded tunnel, so shutdown can wait for them.
    pub connections: TaskTracker,
}

impl Gateway {
    /// Loads and compiles the configuration; nothing is bound yet.
    pub async fn new(source: ConfigSource) -> Result<Arc<Self>, ReloadError> {
        let config = source.load()?;
        let snapshot = snapshot::compile(source.path(), &config, None)?;
        // Keys are fetched before any listener accepts traffic, and Redis
        // gets a moment to connect so the first requests need no fallback.
        snapshot.verifier.load_keys().await;
        if let Some(redis) = &snapshot.stores.redis {
            if !redis.wait_connected(REDIS_START_WAIT).await {
                tracing::warn!(
                    "Redis is not reachable yet; cluster limits use their on_store_failure until it is"
                );
            }
        }
        Ok(Arc::new(Self {
            source,
            snapshot: ArcSwap::from_pointee(snapshot),
            listeners: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
        }))
    }

    /// The snapshot requests should use now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Binds every frontend of the current snapshot and starts accepting.
    pub async fn start(self: &Arc<Self>) -> Result<(), ReloadError> {
        let snapshot = self.snapshot();
        let mut listeners = self.listeners.lock().await;
        let bound = bind_new(&snapshot, &listeners).await?;
        for (address, listener) in bound {
            listeners.insert(address, self.spawn_listener(listener));
            tracing::info!(%address, frontend = %snapshot.by_listen[&address], "listening");
        }
        Ok(())
    }

    fn spawn_listener(self: &Arc<Self>, listener: TcpListener) -> ListenerHandle {
        let stop = self.shutdown.child_token();
        tokio::spawn(crate::server::listener::accept_loop(
            self.clone(),
            listener,
            stop.clone(),
        ));
        ListenerHandle { stop }
    }

    /// Re-reads the configuration and publishes it, or leaves everything as
    /// it was and says why.
    pub async fn reload(self: &Arc<Self>) -> Result<u64, ReloadError> {
        // The listeners lock also serialises reloads.
        let mut listeners = self.listeners.lock().await;
        let config = self.source.load()?;
        let current = self.snapshot();
        let next = snapshot::compile(self.source.path(), &config, Some(&current))?;
        next.verifier.load_keys().await;
        let bound = bind_new(&next, &listeners).await?;
        let generation = next.generation;
        if next.admin != current.admin {
            tracing::warn!("the admin address changed; it takes effect on restart");
        }
        let next = Arc::new(next);
        self.snapshot.store(next.clone());
        listeners.retain(|address, handle| {
            let keep = next.by_listen.contains_key(address);
            if !keep {
                handle.stop.cancel();
                tracing::info!(%address, "listener retired by reload");
            }
            keep
        });
        for (address, listener) in bound {
            listeners.insert(address, self.spawn_listener(listener));
            tracing::info!(%address, frontend = %next.by_listen[&address], "listening");
        }
        tracing::info!(generation, "configuration reloaded");
        Ok(generation)
    }

    /// Logs the outcome of a reload; used by the watcher and SIGHUP.
    pub async fn reload_and_log(self: &Arc<Self>, trigger: &str) {
        if let Err(error) = self.reload().await {
            log_rejection(trigger, &error);
        }
    }

    /// Stops accepting, lets in-flight requests finish within the grace
    /// period, then returns whether everything drained.
    pub async fn drain(&self) -> bool {
        let grace = self.snapshot().shutdown_grace;
        self.shutdown.cancel();
        self.listeners.lock().await.clear();
        self.connections.close();
        let drained = tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_ok();
        if drained {
            tracing::info!("drained all connections");
        } else {
            tracing::warn!(?grace, "grace period over, closing remaining connections");
        }
        drained
    }
}

/// Logs why a reload was refused. Every trigger logs, the admin API too:
/// the log must explain why the previous configuration is still serving.
pub fn log_rejection(trigger: &str, error: &ReloadError) {
    for line in error.lines() {
        tracing::error!(
            trigger,
            "reload rejected, still serving the previous configuration: {line}"
        );
    }
}

async fn bind_new(
    snapshot: &Snapshot,
    running: &HashMap<SocketAddr, ListenerHandle>,
) -> Result<Vec<(SocketAddr, TcpListener)>, ReloadError> {
    let mut bound = Vec::new();
    for address in snapshot.by_listen.keys() {
        if running.contains_key(address) {
            continue;
        }
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ReloadError::Bind {
                address: *address,
                source,
            })?;
        bound.push((*address, listener));
    }
    Ok(bound)
}
