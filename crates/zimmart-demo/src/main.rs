//! Runs the five ZimMart demo services until Ctrl-C.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use zimmart_demo::DemoAddrs;

/// The five ZimMart demo microservices, each on its own port.
#[derive(Debug, Parser)]
#[command(name = "zimmart-demo", version)]
struct Args {
    /// Auth service address.
    #[arg(long, env = "ZIMMART_AUTH_ADDR", default_value_t = DemoAddrs::default().auth)]
    auth: SocketAddr,
    /// Product service address.
    #[arg(long, env = "ZIMMART_PRODUCT_ADDR", default_value_t = DemoAddrs::default().product)]
    product: SocketAddr,
    /// Order service address.
    #[arg(long, env = "ZIMMART_ORDER_ADDR", default_value_t = DemoAddrs::default().order)]
    order: SocketAddr,
    /// Payment service address.
    #[arg(long, env = "ZIMMART_PAYMENT_ADDR", default_value_t = DemoAddrs::default().payment)]
    payment: SocketAddr,
    /// Notification service address.
    #[arg(
        long,
        env = "ZIMMART_NOTIFICATION_ADDR",
        default_value_t = DemoAddrs::default().notification
    )]
    notification: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let demo = zimmart_demo::start(DemoAddrs {
        auth: args.auth,
        product: args.product,
        order: args.order,
        payment: args.payment,
        notification: args.notification,
    })
    .await?;
    let a = demo.addrs;
    tracing::info!(
        "zimmart demo up: auth={} product={} order={} payment={} notification={}",
        a.auth,
        a.product,
        a.order,
        a.payment,
        a.notification
    );

    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    demo.shutdown().await;
    Ok(())
}
