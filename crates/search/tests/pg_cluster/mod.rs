//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl
//! start` on a free port of 127.0.0.1 with the unix socket inside that directory, and a
//! database per test.
//!
//! - The server programs come from PATH or /usr/lib/postgresql/VERSION/bin. Without them the
//!   tests FAIL (never skip) and say how to install them: `apt-get install postgresql`.
//! - `initdb` and `postgres` refuse to run as root. As root (CI, containers), they run as the
//!   user `postgres` (which the Debian package creates), with the directory chowned to it; as
//!   anyone else, as that user.
//! - One cluster per test binary ([`shared`], a `OnceLock`), each test its own database: a
//!   cluster starts in about a second, a database in tens of milliseconds.
//! - Statics are never dropped, so a watchdog process, started with the cluster, stops it
//!   (SIGQUIT to the postmaster: an immediate shutdown) and removes the directory once the
//!   test process has exited, however it exited. A [`Cluster`] that is dropped stops at once.
//! - Durability is off (`fsync`, `synchronous_commit`, `full_page_writes`): nothing here
//!   outlives the test run.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use postgres::{Client, NoTls};

/// A running cluster, stopped and removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as, when this process is root.
    run_as: Option<(u32, u32)>,
    /// Serialises CREATE DATABASE (each copies template1).
    create: Mutex<()>,
}

/// The cluster of this test binary, started on first use.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

const INSTALL: &str = "the PostgreSQL tests need PostgreSQL's server programs (initdb, pg_ctl); fix: install them \
                       with `apt-get install postgresql` (Debian/Ubuntu; they land in /usr/lib/postgresql/VERSION/bin), \
                       or put a directory holding initdb and pg_ctl on PATH";

/// The directory holding `initdb` and `pg_ctl`: PATH first, then the newest Debian version.
fn server_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file());
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!("initdb was not found on PATH nor in /usr/lib/postgresql/*/bin: {INSTALL}"),
    }
}

/// The uid and gid of the user `postgres`, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 3 && f[0] == "postgres");
    match entry.and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?))) {
        Some(ids) => ids,
        None => panic!(
            "these tests run as root, and initdb refuses root, so the server runs as the user 'postgres', \
             which does not exist; fix: `apt-get install postgresql` creates it (or `useradd postgres`), \
             or run the tests as a user other than root"
        ),
    }
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free local port")
}

impl Cluster {
    /// Creates and starts a cluster; panics (the test fails) with the fix when PostgreSQL is
    /// missing or does not start.
    pub fn start() -> Cluster {
        let bin = server_bin();
        let run_as = is_root().then(postgres_user);
        let dir = tempfile::Builder::new().prefix("attune-pg-").tempdir().expect("a temporary directory");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster directory");
        }
        let mut cluster = Cluster { dir, bin, port: 0, run_as, create: Mutex::new(()) };
        let out = cluster
            .command("initdb")
            .args(["-U", "postgres", "-A", "trust", "--no-locale", "-E", "UTF8", "--no-sync", "-D"])
            .arg(cluster.data())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}; {INSTALL}", cluster.bin.join("initdb").display()));
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // Another process may take the free port between the probe and the start: try again.
        for attempt in 0..3 {
            cluster.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=200",
                cluster.port,
                cluster.dir.path().display()
            );
            let status = cluster
                .command("pg_ctl")
                .args(["-w", "-t", "30", "-o", &options, "-l"])
                .arg(cluster.dir.path().join("server.log"))
                .arg("-D")
                .arg(cluster.data())
                .arg("start")
                .stdout(Stdio::null())
                .status()
                .expect("running pg_ctl");
            if status.success() {
                cluster.watch();
                return cluster;
            }
            eprintln!("pg_ctl start on port {} failed (attempt {attempt})", cluster.port);
        }
        let log = std::fs::read_to_string(cluster.dir.path().join("server.log")).unwrap_or_default();
        panic!("the test PostgreSQL server did not start; its log:\n{log}");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the server programs, as the user the server runs as.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Starts the process that stops the server and removes its directory after this
    /// process exits (see the module's notes).
    // Never waited for on purpose: it outlives this process.
    #[allow(clippy::zombie_processes)]
    fn watch(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             pm=$(head -1 '{data}/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pm\" ]; then kill -QUIT \"$pm\" 2>/dev/null; \
                 for i in $(seq 50); do kill -0 \"$pm\" 2>/dev/null || break; sleep 0.1; done; fi; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            data = self.data().display(),
            dir = self.dir.path().display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C to the test run must not take it down too.
            .process_group(0)
            .spawn()
            .expect("start the cluster's watchdog");
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A superuser connection to `database`.
    pub fn client(&self, database: &str) -> Client {
        Client::connect(&self.url(database), NoTls).unwrap_or_else(|e| panic!("connect to {database}: {e:?}"))
    }

    /// Creates the empty database `name` (dropping one of that name first) and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let _one_at_a_time = self.create.lock().unwrap_or_else(|p| p.into_inner());
        let mut admin = self.client("postgres");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
        self.url(name)
    }

    /// The cluster's directory (its log is `server.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-w", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The TempDir removes the directory next.
    }
}
