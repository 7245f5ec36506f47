//! An upstream pool: its targets, balancer, client and timeouts. Pools live
//! across reloads when their configuration did not change, so connection
//! pools and balancing counters carry over.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderValue;
use http::uri::{Authority, Scheme};

use super::balance::{Balancer, TargetLoad};
use super::client::{self, ClientError, HttpClient};
use super::target::parse_authority;
use crate::config::model::{HashKey, LoadBalancing, Service, Target, UpstreamProtocol};

pub struct Pool {
    pub name: String,
    /// The configuration this pool was built from, to detect changes on reload.
    pub config: Service,
    pub targets: Vec<Authority>,
    /// `Host` values for the targets, built once.
    pub host_headers: Vec<HeaderValue>,
    pub load: Vec<TargetLoad>,
    pub balancer: Balancer,
    pub hash_key: Option<HashKey>,
    pub client: HttpClient,
    pub scheme: Scheme,
    pub request_timeout: Option<Duration>,
}

impl Pool {
    pub fn build(name: &str, config: &Service) -> Result<Self, ClientError> {
        let mut targets = Vec::new();
        let mut host_headers = Vec::new();
        let mut load = Vec::new();
        for target in &config.targets {
            let (address, weight) = match target {
                Target::Plain(a) => (a.as_str(), 1),
                Target::Weighted { address, weight } => (address.as_str(), *weight),
            };
            // Validation already rejected bad targets; skip rather than panic.
            let parsed = parse_authority(address)
                .ok()
                .and_then(|a| Some((HeaderValue::from_str(a.as_str()).ok()?, a)));
            if let Some((host, authority)) = parsed {
                host_headers.push(host);
                targets.push(authority);
                load.push(TargetLoad {
                    weight,
                    in_flight: Default::default(),
                });
            }
        }
        let weights: Vec<u32> = load.iter().map(|t| t.weight).collect();
        let (balancer, hash_key) = match &config.load_balancing {
            LoadBalancing::RoundRobin => (Balancer::round_robin(&weights), None),
            LoadBalancing::LeastRequest => (
                Balancer::LeastRequest {
                    next: Default::default(),
                },
                None,
            ),
            LoadBalancing::ConsistentHash(key) => (Balancer::ConsistentHash, Some(key.clone())),
        };
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            targets,
            host_headers,
            load,
            balancer,
            hash_key,
            client: client::build(config)?,
            scheme: match config.protocol {
                UpstreamProtocol::Https => Scheme::HTTPS,
                _ => Scheme::HTTP,
            },
            request_timeout: config.timeouts.request.map(|d| d.0),
        })
    }

    /// Picks a target and counts the request in flight until the guard drops.
    pub fn pick(self: &Arc<Self>, key: Option<&[u8]>) -> InFlight {
        let index = self.balancer.pick(&self.load, key);
        self.load[index].in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            pool: self.clone(),
            index,
        }
    }
}

/// One request in flight on one target.
pub struct InFlight {
    pool: Arc<Pool>,
    index: usize,
}

impl InFlight {
    pub fn authority(&self) -> &Authority {
        &self.pool.targets[self.index]
    }

    pub fn host_header(&self) -> &HeaderValue {
        &self.pool.host_headers[self.index]
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.load[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}
