//! Reload triggers: changes to the config file on disk, and SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::gateway::Gateway;

/// Editors save in bursts (truncate, write, rename); wait for quiet first.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the config file's directory and reloads on changes to the file.
/// The watcher lives as long as the returned value.
pub fn watch_file(gateway: Arc<Gateway>) -> notify::Result<Option<notify::RecommendedWatcher>> {
    if gateway.source.embedded.is_some() {
        return Ok(None);
    }
    let path = &gateway.source.path;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
    let Some(dir) = path.parent().map(ToOwned::to_owned) else {
        return Ok(None);
    };
    let file_name = path.file_name().map(ToOwned::to_owned);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name() == file_name.as_deref());
            if ours && !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Coalesce the burst of events one save produces.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if gateway.snapshot().watch_config {
                gateway.reload_and_log("file change").await;
            }
        }
    });
    Ok(Some(watcher))
}

/// Reloads on every SIGHUP.
pub fn reload_on_sighup(gateway: Arc<Gateway>) -> std::io::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            gateway.reload_and_log("SIGHUP").await;
        }
    });
    Ok(())
}
