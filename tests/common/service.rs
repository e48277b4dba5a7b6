//! The real `authlog` binary as a child process: started with chosen environment variables,
//! its address read from its start-up log line, its log kept for inspection, stopped with
//! SIGKILL or SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub struct Service {
    child: Child,
    pub address: String,
    pub startup_line: String,
    /// Every line the process wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

/// Environment for the embedded store in `data_dir`, with nothing inherited that could change
/// the store or the key.
pub fn embedded_env(data_dir: &Path) -> Vec<(String, String)> {
    vec![(
        "AUTHLOG_DATA_DIR".to_owned(),
        data_dir.display().to_string(),
    )]
}

/// The binary with the tests' usual environment (cost 4, loopback, no inherited store or key)
/// plus `env`, not started yet.
pub fn command(env: &[(String, String)]) -> Command {
    wrapped(Command::new(env!("CARGO_BIN_EXE_authlog")), env)
}

/// The binary run by `program` with `args` before it (such as `prlimit --nofile=…`), with the
/// same environment as [`command`].
pub fn command_under(program: &str, args: &[&str], env: &[(String, String)]) -> Command {
    let mut command = Command::new(program);
    command.args(args).arg(env!("CARGO_BIN_EXE_authlog"));
    wrapped(command, env)
}

fn wrapped(mut command: Command, env: &[(String, String)]) -> Command {
    command
        .env_remove("DATABASE_URL")
        .env_remove("AUTHLOG_JWT_SECRET")
        .env_remove("AUTHLOG_MASTER_KEY")
        .env_remove("AUTHLOG_TOKEN_ALGORITHM")
        .env_remove("AUTHLOG_LOG_FORMAT")
        .env("AUTHLOG_BIND", "127.0.0.1:0")
        .env("AUTHLOG_BCRYPT_COST", "4")
        .env("AUTHLOG_WORKERS", "2")
        // These tests sign up and log in hundreds of users from 127.0.0.1: the per-address
        // sign-up and login rates are off for them (and only those limits).
        .env("AUTHLOG_SIGNUP_RATE_PER_MINUTE", "0")
        .env("AUTHLOG_LOGIN_RATE_PER_MINUTE", "0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs the binary with `args` until it exits (at most 60 s); its status, stdout and stderr.
pub fn run(env: &[(String, String)], args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = command(env)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the authlog binary");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll the child").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("authlog {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("collect the output");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl Service {
    /// Starts the binary on 127.0.0.1:0 with bcrypt cost 4 and `env`, and waits for its address.
    pub fn start(env: &[(String, String)]) -> Self {
        Self::spawn(command(env))
    }

    /// Starts `command` (from [`command`], perhaps wrapped) and waits for its address.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the authlog binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = mpsc::channel();
        let kept = Arc::clone(&log);
        // Keeps reading, so the process never blocks on a full pipe; echoes with TEST_LOG.
        std::thread::spawn(move || {
            let show = std::env::var_os("TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if show {
                    eprintln!("authlog: {line}");
                }
                if line.contains("listening on http://") {
                    let _ = found.send(line.clone());
                }
                kept.lock().expect("not poisoned").push(line);
            }
        });
        let startup_line = match address.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "authlog did not log its address within 60 s; its log:\n{}",
                    log.lock().expect("not poisoned").join("\n")
                );
            }
        };
        let address = startup_line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .expect("the start-up line names the URL")
            .to_owned();
        Self {
            child,
            address,
            startup_line,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `host:port`, for raw TCP.
    pub fn socket_address(&self) -> String {
        self.address.trim_start_matches("http://").to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One sample of a series on the service's `/metrics`, 0 when absent. Scraped from
    /// 127.0.0.3, an address of its own, so the per-address limits a test's load runs into never
    /// refuse the scrape.
    pub async fn metric(&self, series: &str) -> f64 {
        let scraper = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
            .build()
            .expect("client");
        let response = scraper
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answered");
        assert_eq!(response.status(), 200, "the metrics scrape");
        let text = response.text().await.expect("text");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Every line logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("not poisoned").clone()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits for the process to exit (at most `within`). Returns its status and
    /// its whole log.
    pub fn terminate(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = std::time::Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("authlog did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().expect("not poisoned").clone();
        (status, log)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /signup` with `email` and `password` to the service at `address` (its base URL); the
/// status.
pub async fn signup_at(http: &reqwest::Client, address: &str, email: &str, password: &str) -> u16 {
    http.post(format!("{address}/signup"))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("signup answered")
        .status()
        .as_u16()
}

/// `POST /login` with `email` and `password` to the service at `address` (its base URL).
pub async fn login_at(
    http: &reqwest::Client,
    address: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    http.post(format!("{address}/login"))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("login answered")
}
