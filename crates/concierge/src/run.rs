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
    gateway.start().await.context("starting the listeners")?;
    if let Some(address) = gateway.snapshot().admin {
        let listener = crate::admin::bind(address)
            .await
            .with_context(|| format!("binding the admin API on {address}"))?;
        tracing::info!(%address, "admin API listening");
        tokio::spawn(crate::admin::serve(gateway.clone(), listener));
    }
    let _watcher = crate::watch::watch_file(gateway.clone()).context("watching the config file")?;
    crate::watch::reload_on_sighup(gateway.clone()).context("installing the SIGHUP handler")?;
    wait_for_stop().await?;
    tracing::info!("shutting down: no longer accepting, draining in-flight requests");
    gateway.drain().await;
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
