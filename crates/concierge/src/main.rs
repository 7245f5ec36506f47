//! The `concierge` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use concierge::gateway::ConfigSource;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concierge: an API gateway. One front door for a fleet of services.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info` or `concierge=debug` (RUST_LOG also works).
    #[arg(long, global = true, env = "CONCIERGE_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Worker threads serving requests; default one per CPU this process may
    /// use. With 1, a single-threaded scheduler is used, which is cheaper per
    /// request when the gateway is pinned to one core.
    #[arg(long, global = true, env = "CONCIERGE_WORKERS")]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration. Reloads on file change, SIGHUP or POST /reload
    /// on the admin API; SIGTERM drains in-flight requests and exits 0.
    Run {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file; prints `file:line:column: message` for
    /// every problem and exits 1 if there is any.
    Validate {
        /// The YAML configuration file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the configuration file, for editors.
    Schema,
    /// Start the five ZimMart demo services and the gateway in front of them.
    Demo(concierge::demo::DemoArgs),
    /// Print the SHA-256 digest of an API key, for `api_keys` in the config.
    HashKey {
        /// The API key.
        key: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&concierge::config::json_schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            block_on(cli.workers, concierge::run::run(ConfigSource::file(config)))
        }
        Command::Demo(args) => block_on(cli.workers, concierge::demo::run(args)),
        Command::HashKey { key } => {
            let digest = concierge::auth::apikey::digest(key.as_bytes());
            println!("{}", concierge::auth::apikey::to_hex(&digest));
            ExitCode::SUCCESS
        }
    }
}

fn validate(file: &std::path::Path) -> ExitCode {
    // Compiling creates stores (a Redis client, sweepers) that need a
    // runtime; nothing is bound and nothing is served.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        concierge::config::load_file(file)
            .and_then(|config| concierge::snapshot::compile(file, &config, None).map(|_| config))
    });
    match result {
        Ok(config) => {
            let routes: usize = config.frontends.iter().map(|f| f.value.routes.len()).sum();
            println!(
                "{}: ok ({} frontends, {} routes, {} services)",
                file.display(),
                config.frontends.len(),
                routes,
                config.services.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{error}");
            }
            eprintln!("{} error(s)", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn block_on(
    workers: Option<usize>,
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
