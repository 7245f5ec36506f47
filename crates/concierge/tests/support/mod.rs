//! Shared test harness: the real `concierge` binary on loopback ports, real
//! upstream servers built in-process, and an HTTP client.
#![allow(dead_code)]

pub mod upstream;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago. The kernel does not reuse a port it
/// just handed out straight away, so races with other tests are rare.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A running gateway process with its config file and log.
pub struct GatewayProcess {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Writes `yaml` to a fresh directory and runs `concierge run` on it,
    /// waiting until every address in `wait_for` accepts connections.
    pub fn start(yaml: &str, wait_for: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("concierge.yaml");
        std::fs::write(&config, yaml).expect("write config");
        Self::start_in(dir, config, wait_for)
    }

    /// Like [`Self::start`], with extra environment variables for the
    /// process (for `${NAME}` substitution in the config).
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)], wait_for: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("concierge.yaml");
        std::fs::write(&config, yaml).expect("write config");
        Self::start_in_with_env(dir, config, env, wait_for)
    }

    pub fn start_in(dir: tempfile::TempDir, config: PathBuf, wait_for: &[SocketAddr]) -> Self {
        Self::start_in_with_env(dir, config, &[], wait_for)
    }

    pub fn start_in_with_env(
        dir: tempfile::TempDir,
        config: PathBuf,
        env: &[(&str, &str)],
        wait_for: &[SocketAddr],
    ) -> Self {
        let log = dir.path().join("gateway.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_concierge"))
            .args(["run", "--config"])
            .arg(&config)
            .env("CONCIERGE_LOG", "info,concierge=debug")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn concierge");
        let mut gateway = Self {
            child,
            dir,
            config,
            log,
        };
        for addr in wait_for {
            gateway.wait_listening(*addr);
        }
        gateway
    }

    fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited early with {status}:\n{}", self.log_text());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("gateway never listened on {addr}:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replaces the config file atomically (write then rename, like editors do).
    pub fn rewrite_config(&self, yaml: &str) {
        let tmp = self.dir.path().join("concierge.yaml.tmp");
        let mut f = std::fs::File::create(&tmp).expect("tmp config");
        f.write_all(yaml.as_bytes()).expect("write tmp config");
        f.sync_all().ok();
        std::fs::rename(&tmp, &self.config).expect("rename config");
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.log_text());
        }
    }
}

/// A client that never reuses state across tests and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Polls `check` until it returns true or the timeout passes.
pub async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub mod redis;

/// Asserts a gateway-generated error: `status`, `application/problem+json`,
/// and a body whose `status` and `request_id` match the response. Returns
/// the body for further checks.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status);
    assert_eq!(problem["request_id"], id.as_str());
    problem
}
