//! `concierge demo`: the five ZimMart services on loopback and the gateway
//! in front of them, configured by `examples/zimmart.yaml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::gateway::ConfigSource;

/// The demo configuration, built in so the demo runs from any directory.
pub const ZIMMART_YAML: &str = include_str!("../../../examples/zimmart.yaml");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Mobile frontend port.
    #[arg(long, default_value_t = 8080)]
    pub mobile_port: u16,
    /// Web frontend port.
    #[arg(long, default_value_t = 8081)]
    pub web_port: u16,
    /// Public API frontend port.
    #[arg(long, default_value_t = 8082)]
    pub public_port: u16,
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// First of five consecutive loopback ports for the demo services.
    #[arg(long, default_value_t = 9101)]
    pub services_port: u16,
    /// Use this config file instead of the built-in one (it is then watched for changes).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let port = |offset: u16| SocketAddr::from(([127, 0, 0, 1], args.services_port + offset));
    let addrs = zimmart_demo::DemoAddrs {
        auth: port(0),
        product: port(1),
        order: port(2),
        payment: port(3),
        notification: port(4),
    };
    let services = zimmart_demo::start(addrs)
        .await
        .context("starting the ZimMart demo services")?;
    let a = &services.addrs;
    // The example config reads its addresses from the environment, with the
    // defaults used here; set them so that overridden ports are honoured.
    let vars = [
        ("ZIMMART_AUTH", a.auth.to_string()),
        ("ZIMMART_PRODUCT", a.product.to_string()),
        ("ZIMMART_ORDER", a.order.to_string()),
        ("ZIMMART_PAYMENT", a.payment.to_string()),
        ("ZIMMART_NOTIFICATION", a.notification.to_string()),
        (
            "ZIMMART_MOBILE_LISTEN",
            format!("0.0.0.0:{}", args.mobile_port),
        ),
        ("ZIMMART_WEB_LISTEN", format!("0.0.0.0:{}", args.web_port)),
        (
            "ZIMMART_PUBLIC_LISTEN",
            format!("0.0.0.0:{}", args.public_port),
        ),
        ("ZIMMART_ADMIN_LISTEN", args.admin.to_string()),
    ];
    let source = ConfigSource {
        path: args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("examples/zimmart.yaml")),
        embedded: args.config.is_none().then_some(ZIMMART_YAML),
        overrides: vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    print_walkthrough(&args, &services.addrs);
    crate::run::run(source).await
}

fn print_walkthrough(args: &DemoArgs, addrs: &zimmart_demo::DemoAddrs) {
    let m = args.mobile_port;
    let w = args.web_port;
    let p = args.public_port;
    println!(
        "\nConcierge demo: the ZimMart services behind one front door\n\
         \n  mobile frontend   http://127.0.0.1:{m}\
         \n  web frontend      http://127.0.0.1:{w}\
         \n  public API        http://127.0.0.1:{p}\
         \n  admin API         http://{admin}\
         \n  services          auth {auth}, product {product}, order {order}, payment {payment}, notification {notification}\
         \n\nTry:\
         \n  curl -s http://127.0.0.1:{m}/products\
         \n  curl -s http://127.0.0.1:{m}/products/1\
         \n  curl -si -X DELETE http://127.0.0.1:{m}/products/1       # 401: a token is required\
         \n  curl -s -X POST http://127.0.0.1:{m}/login -d '{{\"username\":\"admin\",\"password\":\"zimmart\"}}'\
         \n  curl -s -H 'X-API-Key: demo-public-api-key' http://127.0.0.1:{p}/v1/products\
         \n  curl -si --path-as-is http://127.0.0.1:{m}/public/../admin   # normalised, then 404\
         \n  curl -si -X PUT http://127.0.0.1:{m}/products/1        # 405 with Allow\
         \n  curl -s http://{admin}/config\
         \n  curl -s -X POST http://{admin}/reload\n",
        admin = args.admin,
        auth = addrs.auth,
        product = addrs.product,
        order = addrs.order,
        payment = addrs.payment,
        notification = addrs.notification,
    );
}
