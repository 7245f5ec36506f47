//! The accept loop of one listening address and the serving of each
//! connection. A connection is bound to the frontend that owned its address
//! when it was accepted; every request on it reads the current snapshot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::proxy::{self, ClientInfo};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts on `listener` until `stop` fires.
pub async fn accept_loop(gateway: Arc<Gateway>, listener: TcpListener, stop: CancellationToken) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let Some(local) = local else { continue };
        gateway
            .connections
            .spawn(async move { serve_connection(gw, stream, local, peer).await });
    }
    tracing::info!(address = ?local, "listener closed");
}

async fn serve_connection(
    gateway: Arc<Gateway>,
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
) {
    let snapshot = gateway.snapshot();
    let Some(frontend) = snapshot.frontend_at(local).cloned() else {
        return;
    };
    drop(snapshot);
    match &frontend.tls {
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(gateway, tls, frontend, peer, true).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => serve_http(gateway, stream, frontend, peer, false).await,
    }
}

async fn serve_http<IO>(
    gateway: Arc<Gateway>,
    io: IO,
    frontend: Arc<crate::snapshot::FrontendRt>,
    peer: SocketAddr,
    https: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = ClientInfo {
        peer,
        peer_header: crate::headers::ip_header_value(crate::auth::ip::canonical(peer.ip())),
        https,
        token_memo: Default::default(),
    };
    let name = frontend.name.clone();
    let header_limit = usize::try_from(frontend.limits.max_header_bytes).unwrap_or(usize::MAX);
    let gw = gateway.clone();
    let service = service_fn(move |request| {
        let snapshot = gw.snapshot();
        let name = name.clone();
        let client = client.clone();
        let tunnels = gw.connections.clone();
        async move { Ok::<_, Infallible>(proxy::handle(snapshot, name, client, tunnels, request).await) }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper requires at least 8 KiB of read buffer.
        .max_buf_size(header_limit.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_limit).unwrap_or(u32::MAX))
        .adaptive_window(true);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let shutdown = gateway.shutdown.clone();
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
