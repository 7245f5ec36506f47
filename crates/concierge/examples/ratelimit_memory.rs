//! Measures the in-process rate limiter's memory for one million distinct
//! client addresses, through the same `Limiter::check` the request path uses.
//!
//! ```text
//! cargo run --release -p concierge --example ratelimit_memory
//! ```
//!
//! Each phase runs in a fresh process (so one phase's freed memory cannot
//! flatter the next) and prints the bytes of the store's tables (from
//! their capacity) and the resident set size before and after, from
//! `/proc/self/status`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, ExitCode};
use std::time::Instant;

use concierge::ratelimit::{Limiter, RateLimitPolicy, RateLimitSettings, RequestKeys, Stores};
use http::HeaderMap;

// The gateway's allocator, so the numbers are the gateway's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: u32 = 1_000_000;

fn main() -> ExitCode {
    let phase = std::env::args().nth(1);
    match phase.as_deref() {
        None => run_all(),
        Some(phase @ ("ipv4" | "ipv6" | "flood")) => {
            measure(phase);
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown phase `{other}`: use ipv4, ipv6 or flood");
            ExitCode::FAILURE
        }
    }
}

fn run_all() -> ExitCode {
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot find this program's path");
        return ExitCode::FAILURE;
    };
    for phase in ["ipv4", "ipv6", "flood"] {
        match Command::new(&me).arg(phase).status() {
            Ok(status) if status.success() => {}
            other => {
                eprintln!("phase {phase} failed: {other:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn address(phase: &str, n: u32) -> IpAddr {
    match phase {
        "ipv4" => IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
        // Distinct /128s spread over the address (not one /64), like real clients.
        _ => IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | (u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) << 16),
        )),
    }
}

fn measure(phase: &str) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("no runtime: {error}");
            return;
        }
    };
    runtime.block_on(async {
        let settings = RateLimitSettings::default();
        let Ok(stores) = Stores::build(&settings, false, None) else {
            eprintln!("cannot build the stores");
            return;
        };
        // One request per hour per address: every key stays live throughout.
        let yaml = "{name: per-ip, rate: 1/h, burst: 1, key: ip}";
        let policy: RateLimitPolicy = match serde_saphyr::from_str(yaml) {
            Ok(policy) => policy,
            Err(error) => {
                eprintln!("{error}");
                return;
            }
        };
        let limiter = match Limiter::build(&policy, &stores) {
            Ok(limiter) => limiter,
            Err(error) => {
                eprintln!("{error}");
                return;
            }
        };
        let headers = HeaderMap::new();
        let keys = if phase == "flood" { 3 * KEYS } else { KEYS };
        let before = rss_kib();
        let started = Instant::now();
        let mut refused = 0u32;
        for n in 0..keys {
            let request = RequestKeys {
                user: None,
                consumer: None,
                ip: address(if phase == "flood" { "ipv6" } else { phase }, n),
                headers: &headers,
                route: "r",
                service: "s",
            };
            if limiter.check(&request).await.is_limited() {
                refused += 1;
            }
        }
        let elapsed = started.elapsed();
        let after = rss_kib();
        let held = stores.local.len();
        let grown = after.saturating_sub(before);
        println!(
            "{phase:>5}: {keys} distinct addresses in {:.2}s ({:.0} ns/check), {refused} refused",
            elapsed.as_secs_f64(),
            elapsed.as_nanos() as f64 / f64::from(keys)
        );
        println!(
            "       keys held {held} (bound {}), live keys evicted {}",
            stores.local.capacity_bound(),
            stores.local.evicted_live()
        );
        let tables = stores.local.table_bytes();
        println!(
            "       tables {:.1} MiB, {:.1} bytes per held key",
            tables as f64 / (1024.0 * 1024.0),
            tables as f64 / held.max(1) as f64
        );
        println!(
            "       RSS {} KiB -> {} KiB: +{:.1} MiB, {:.1} bytes per held key",
            before,
            after,
            grown as f64 / 1024.0,
            grown as f64 * 1024.0 / held.max(1) as f64
        );
    });
}

/// `VmRSS` from `/proc/self/status`, in KiB (0 where unavailable).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
