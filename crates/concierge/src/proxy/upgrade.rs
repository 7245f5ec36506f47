//! Protocol upgrades (WebSocket): once both sides switched protocols, the
//! two connections are spliced together as raw byte streams.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

/// Splices the client and upstream connections in a task tracked for drain.
pub fn splice(tunnels: &TaskTracker, client: OnUpgrade, upstream: OnUpgrade, route: String) {
    tunnels.spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%route, %error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%route, %error, "upgraded connection closed with an error");
        }
    });
}
