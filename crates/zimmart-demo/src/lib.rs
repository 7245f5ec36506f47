//! The five ZimMart demo microservices (auth, product, order, payment,
//! notification): small real HTTP services with believable JSON, run by
//! `concierge demo` and by the gateway's integration tests.
//!
//! Each service speaks HTTP/1.1 and h2c on one port, tags every response
//! with `X-Served-By: <service>`, and answers `GET /health` and
//! `/echo/...` (any method) besides its own routes.
//!
//! The auth service is also the demo identity provider: `POST /login`
//! issues ES256 access tokens (issuer [`ISSUER`], audience [`AUDIENCE`],
//! claims [`Claims`]), signed with a key made fresh at every start and
//! published at `/.well-known/jwks.json`. The gateway verifies those tokens
//! and injects identity as the `X-User-ID` / `X-Role` headers; the other
//! services never see or check a token.

#![forbid(unsafe_code)]

mod auth;
pub mod data;
mod notification;
mod order;
mod payment;
mod product;
mod serve;
mod tokens;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use tokens::{Claims, TOKEN_TTL_SECS};

/// The `iss` of every token the auth service issues.
pub const ISSUER: &str = "https://auth.zimmart.demo";

/// The `aud` of every token the auth service issues: the API behind the gateway.
pub const AUDIENCE: &str = "zimmart-api";

/// Where each service listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoAddrs {
    pub auth: SocketAddr,
    pub product: SocketAddr,
    pub order: SocketAddr,
    pub payment: SocketAddr,
    pub notification: SocketAddr,
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl Default for DemoAddrs {
    /// 127.0.0.1:9101 to :9105, in the order auth, product, order, payment,
    /// notification.
    fn default() -> Self {
        DemoAddrs {
            auth: localhost(9101),
            product: localhost(9102),
            order: localhost(9103),
            payment: localhost(9104),
            notification: localhost(9105),
        }
    }
}

impl DemoAddrs {
    /// Every service on 127.0.0.1 with an OS-chosen port, for tests.
    pub fn ephemeral() -> Self {
        DemoAddrs {
            auth: localhost(0),
            product: localhost(0),
            order: localhost(0),
            payment: localhost(0),
            notification: localhost(0),
        }
    }
}

/// The five services, running. Dropping it aborts them at once;
/// [`RunningDemo::shutdown`] lets in-flight requests finish first.
#[derive(Debug)]
pub struct RunningDemo {
    /// The addresses actually bound (real ports, even if 0 was asked for).
    pub addrs: DemoAddrs,
    stop: watch::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningDemo {
    /// Stops accepting, waits (briefly) for open requests, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(());
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds all five services, then starts serving them on the current Tokio
/// runtime. Fails without starting anything if any address cannot be bound
/// (or, in practice never, if the auth service's signing key cannot be made).
pub async fn start(addrs: DemoAddrs) -> std::io::Result<RunningDemo> {
    let auth = TcpListener::bind(addrs.auth).await?;
    let product = TcpListener::bind(addrs.product).await?;
    let order = TcpListener::bind(addrs.order).await?;
    let payment = TcpListener::bind(addrs.payment).await?;
    let notification = TcpListener::bind(addrs.notification).await?;
    let bound = DemoAddrs {
        auth: auth.local_addr()?,
        product: product.local_addr()?,
        order: order.local_addr()?,
        payment: payment.local_addr()?,
        notification: notification.local_addr()?,
    };

    // The auth service needs its real address for its discovery document.
    let auth_svc = Arc::new(auth::Auth::new(bound.auth)?);

    let (stop, rx) = watch::channel(());
    let tasks = vec![
        serve::spawn(auth, auth_svc, rx.clone()),
        serve::spawn(product, Arc::new(product::Catalogue::seeded()), rx.clone()),
        serve::spawn(order, Arc::new(order::OrderBook::seeded()), rx.clone()),
        serve::spawn(payment, Arc::new(payment::Payment), rx.clone()),
        serve::spawn(notification, Arc::new(notification::Notifications), rx),
    ];
    tracing::debug!(?bound, "zimmart demo services started");
    Ok(RunningDemo {
        addrs: bound,
        stop,
        tasks,
    })
}
