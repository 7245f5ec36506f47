//! Running a gateway until SIGTERM or Ctrl-C: bind, serve, watch, drain.

use anyhow::Context;

use crate::gateway::{ConfigSource, Gateway};

/// Starts everything and blocks until shutdown has drained.
pub async fn run(source: ConfigSource) -> anyhow::Result<()> {
    let gateway = match Gateway::new(source).await {
        Ok(g) => g,
        Err(error) => {
            for line in error.lines() {
                eprintln!("{line}");
            }
            anyhow::bail!("the configuration is invalid");
        }
    };
    // Reload triggers go in before anything listens: a change or a SIGHUP
    // that arrives once the gateway looks ready must not be missed (and an
    // early SIGHUP must not kill the process).
    let _watcher = crate::watch::watch_file(gateway.clone()).context("watching the config file")?;
    crate::watch::reload_on_sighup(gateway.clone()).context("installing the SIGHUP handler")?;
    let stop = stop_signals()?;
    gateway.start().await.context("starting the listeners")?;
    if let Some(address) = gateway.snapshot().admin {
        let listener = crate::admin::bind(address)
            .await
            .with_context(|| format!("binding the admin API on {address}"))?;
        tracing::info!(%address, "admin API listening");
        tokio::spawn(crate::admin::serve(gateway.clone(), listener));
    }
    stop.await;
    tracing::info!("shutting down: no longer accepting, draining in-flight requests");
    gateway.drain().await;
    Ok(())
}

/// SIGTERM or SIGINT, installed now so that none is lost, awaited later.
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
