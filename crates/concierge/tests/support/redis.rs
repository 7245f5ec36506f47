//! A `redis-server` child process on a loopback port of its own, for the
//! cluster rate-limit tests: each test starts its own so it can stop, pause
//! and restart it (`scripts/test.sh` installs the package when missing;
//! without it these tests fail, they never skip).
//!
//! Reached as `support::redis` through `mod support;`, or on its own with
//! `#[path = "support/redis.rs"] mod redis_server;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process on a loopback port of its own.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        let mut server = Self {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.launch();
        server
    }

    /// Starts (or restarts) the server on its port, empty.
    pub fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need it; \
                     `apt-get install redis-server` (scripts/test.sh does this)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited with {status} on port {}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING`.
    pub fn answers(&self) -> bool {
        self.command("PING").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// One inline command (without its `\r\n`); the whole reply (a bulk
    /// string read to its end).
    pub fn command(&self, line: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&reply);
            let Some((head, body)) = text.split_once("\r\n") else {
                continue;
            };
            let complete = match head.strip_prefix('$') {
                Some(len) => len
                    .parse::<usize>()
                    .map_or(true, |len| body.len() >= len + 2),
                None => true,
            };
            if complete {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Script calls Redis has served (`EVALSHA` and `EVAL`).
    pub fn script_calls(&self) -> u64 {
        let info = self.command("INFO commandstats").expect("INFO");
        ["cmdstat_evalsha:calls=", "cmdstat_eval:calls="]
            .iter()
            .filter_map(|prefix| {
                info.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    }

    /// Client connections open now, the one asking included.
    pub fn connected_clients(&self) -> u64 {
        let info = self.command("INFO clients").expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
    }

    /// Redis's clock (`TIME`), which every decision uses.
    pub fn clock(&self) -> Duration {
        let reply = self.command("TIME").expect("TIME");
        let numbers: Vec<u64> = reply
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .collect();
        let [secs, micros] = numbers[..] else {
            panic!("unexpected TIME reply {reply:?}");
        };
        Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    /// Kills the server: connections drop, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server: connections stay open but nothing answers.
    pub fn pause(&self) {
        signal(&self.pid(), "-STOP");
    }

    pub fn resume(&self) {
        signal(&self.pid(), "-CONT");
    }
}

fn signal(pid: &str, sig: &str) {
    let status = Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Resume a paused server first, so a failed test never leaves one
        // stopped.
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}
