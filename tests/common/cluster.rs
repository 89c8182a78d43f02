//! Dovecot 2.3 instances as backends of one cluster: each has its own
//! dovecot.conf, base_dir, log, ports on 127.0.0.1 and LISTINDEX root, and
//! all of them share one mail store, as NFS backends do.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::conf::{self, path_str};
use super::imap::ImapClient;
use super::system::{self, ScratchDir, TEST_USER};
use super::PASSWORD;

/// How long a backend may take to accept connections after its start.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a backend may take to exit after `dovecot stop`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to start a backend when its ports were taken meanwhile.
const START_ATTEMPTS: u32 = 3;
/// Polling interval while waiting for Dovecot.
const POLL: Duration = Duration::from_millis(50);

/// Names a wrapper binary that replaces the one every `Postlogin::Wrapper`
/// gives (scripts/package-test sets it to the installed
/// `/usr/bin/nfs-hostchange`).
pub const WRAPPER_ENV: &str = "NFSHC_WRAPPER";

/// What `script-login -d` runs after a login.
#[derive(Clone, Debug)]
pub enum Postlogin {
    /// The binary under test: `WRAPPER postlogin --config FILE`. The
    /// `NFSHC_WRAPPER` environment variable, when set and not empty,
    /// replaces the path.
    Wrapper(PathBuf),
    /// Control run: `/usr/bin/env` only execs its arguments, which finishes
    /// the login unchanged, so Dovecot behaves as without the wrapper.
    Control,
}

impl Postlogin {
    fn command(&self, wrapper_conf: &Path) -> Result<String, String> {
        match self {
            Postlogin::Control => Ok("/usr/bin/env".to_string()),
            Postlogin::Wrapper(bin) => Ok(format!(
                "{} postlogin --config {}",
                path_str(&wrapper_binary(bin))?,
                path_str(wrapper_conf)?
            )),
        }
    }
}

/// The wrapper a `Postlogin::Wrapper(bin)` runs: `NFSHC_WRAPPER` when set
/// and not empty, else `bin`.
pub fn wrapper_binary(bin: &Path) -> PathBuf {
    match std::env::var_os(WRAPPER_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => bin.to_path_buf(),
    }
}

/// How one backend of a cluster is set up.
#[derive(Clone, Debug)]
pub enum BackendKind {
    /// The shipped configuration: the list index in this backend's own
    /// LISTINDEX root, `postlogin` after every login, and
    /// `nfs_hostchange_migration = yes` in its wrapper configuration when
    /// `migration`.
    Current {
        postlogin: Postlogin,
        migration: bool,
    },
    /// A backend from before nfs-hostchange: plain Dovecot with the list
    /// index on the shared store (the shipped mail_location without
    /// LISTINDEX) and no post-login service. It still gets a LISTINDEX root
    /// directory, which stays empty, and no wrapper configuration.
    Old,
}

impl BackendKind {
    /// The shipped configuration with `postlogin`, migration off.
    pub fn current(postlogin: &Postlogin) -> BackendKind {
        BackendKind::Current {
            postlogin: postlogin.clone(),
            migration: false,
        }
    }
}

/// Backends sharing one mail store. Dropping it stops every backend, then
/// removes the scratch directory.
pub struct Cluster {
    // Field order matters: backends stop before the directory goes.
    backends: Vec<Backend>,
    store: PathBuf,
    scratch: ScratchDir,
}

impl Cluster {
    /// Starts one backend per name (`backend-a`, ...), all with `postlogin`.
    pub fn start(label: &str, names: &[&str], postlogin: &Postlogin) -> Result<Cluster, String> {
        let kind = BackendKind::current(postlogin);
        let specs: Vec<(&str, BackendKind)> =
            names.iter().map(|name| (*name, kind.clone())).collect();
        Cluster::start_mixed(label, &specs)
    }

    /// Starts one backend per `(name, kind)`, in order, sharing one store:
    /// for instance an OLD backend next to wrapped ones with migration on.
    pub fn start_mixed(label: &str, backends: &[(&str, BackendKind)]) -> Result<Cluster, String> {
        for (_, kind) in backends {
            if let BackendKind::Current {
                postlogin: Postlogin::Wrapper(bin),
                ..
            } = kind
            {
                let bin = wrapper_binary(bin);
                check_wrapper(&bin)?;
                if std::env::var_os(WRAPPER_ENV).is_some_and(|v| !v.is_empty()) {
                    eprintln!("harness: wrapper from {WRAPPER_ENV}: {}", bin.display());
                }
            }
        }
        let snippet = conf::snippet_source();
        if std::env::var_os(conf::SNIPPET_ENV).is_some_and(|v| !v.is_empty()) {
            eprintln!("harness: Dovecot snippet from {}", snippet.label);
        }
        let scratch = ScratchDir::new(label)?;
        let store = scratch.path().join("store");
        system::mkdir_for_test_user(&store, 0o755)?;
        let mut cluster = Cluster {
            backends: Vec::new(),
            store,
            scratch,
        };
        for (name, kind) in backends {
            let dir = cluster.scratch.path().join(name);
            let backend = Backend::start(name, &dir, &cluster.store, kind)?;
            cluster.backends.push(backend);
        }
        Ok(cluster)
    }

    /// The backend called `name`; panics on a name not given to `start`.
    pub fn backend(&self, name: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend {name} in this cluster"))
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The shared mail store (homes are `<store>/<user>`).
    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    /// The user's mail root `<store>/<user>/Maildir`, which is also the
    /// INDEX directory of the shipped mail_location.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.store.join(user).join("Maildir")
    }

    /// Creates the user's home and an empty Maildir, as for a user who
    /// already received mail. Without it, Dovecot creates the Maildir only
    /// on the first write, so a first login finds no INDEX directory.
    pub fn provision_user(&self, user: &str) -> Result<(), String> {
        let home = self.store.join(user);
        system::mkdir_for_test_user(&home, 0o700)?;
        let maildir = self.maildir(user);
        system::mkdir_for_test_user(&maildir, 0o700)?;
        for sub in ["cur", "new", "tmp"] {
            system::mkdir_for_test_user(&maildir.join(sub), 0o700)?;
        }
        Ok(())
    }

    /// Files and directories below the store and the LISTINDEX roots that do
    /// not belong to the test user (none should).
    pub fn foreign_owned_files(&self) -> Result<Vec<PathBuf>, String> {
        let (uid, _) = system::user_ids(TEST_USER)?;
        let mut found = Vec::new();
        let mut roots = vec![self.store.clone()];
        roots.extend(self.backends.iter().map(|b| b.listindex_root.clone()));
        for root in roots {
            walk(&root, &mut |path, meta| {
                if meta.uid() != uid {
                    found.push(path.to_path_buf());
                }
            })?;
        }
        Ok(found)
    }
}

/// The binary under test must be reachable by the test user, since
/// `script-login -d` runs it after dropping to the user's uid.
fn check_wrapper(bin: &Path) -> Result<(), String> {
    if !bin.is_absolute() {
        return Err(format!("wrapper path must be absolute: {}", bin.display()));
    }
    let meta = fs::metadata(bin).map_err(|e| format!("wrapper {}: {e}", bin.display()))?;
    if meta.permissions().mode() & 0o001 == 0 {
        return Err(format!(
            "wrapper {} is not executable by others",
            bin.display()
        ));
    }
    for dir in bin.ancestors().skip(1) {
        let mode = fs::metadata(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) cannot be searched by {TEST_USER}, so it cannot run the \
                 wrapper {}",
                dir.display(),
                mode & 0o7777,
                bin.display()
            ));
        }
    }
    Ok(())
}

fn walk(path: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata)) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("lstat {}: {e}", path.display()))?;
    visit(path, &meta);
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| format!("readdir {}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("readdir {}: {e}", path.display()))?;
            walk(&entry.path(), visit)?;
        }
    }
    Ok(())
}

/// One running Dovecot instance. Dropping it stops the instance.
pub struct Backend {
    pub name: String,
    dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    listindex_root: PathBuf,
    wrapper_conf: PathBuf,
    imap_port: u16,
    pop3_port: u16,
    master: Option<Child>,
}

impl Backend {
    fn start(name: &str, dir: &Path, store: &Path, kind: &BackendKind) -> Result<Backend, String> {
        fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        system::set_mode(dir, 0o755)?;
        for sub in ["run", "state"] {
            let path = dir.join(sub);
            fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        }
        let listindex_root = dir.join("listindex");
        system::mkdir_for_test_user(&listindex_root, 0o755)?;

        let wrapper_conf = dir.join(conf::WRAPPER_CONF);
        let snippet = dir.join(conf::SNIPPET);
        let text = match kind {
            BackendKind::Current {
                postlogin,
                migration,
            } => {
                let text = conf::render_wrapper_conf_with(&listindex_root, name, *migration)?;
                system::write_public_file(&wrapper_conf, &text)?;
                conf::render_snippet(&listindex_root, &postlogin.command(&wrapper_conf)?)?
            }
            BackendKind::Old => conf::render_old_snippet()?,
        };
        system::write_public_file(&snippet, &text)?;

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let (imap_port, pop3_port) = (free_port()?, free_port()?);
            let mut backend = Backend {
                name: name.to_string(),
                dir: dir.to_path_buf(),
                conf: dir.join("dovecot.conf"),
                log: dir.join("dovecot.log"),
                listindex_root: listindex_root.clone(),
                wrapper_conf: wrapper_conf.clone(),
                imap_port,
                pop3_port,
                master: None,
            };
            let text = backend.dovecot_conf(store, &snippet)?;
            system::write_public_file(&backend.conf, &text)?;
            match backend.spawn_and_wait() {
                Ok(()) => return Ok(backend),
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_error)
    }

    fn dovecot_conf(&self, store: &Path, snippet: &Path) -> Result<String, String> {
        let dir = path_str(&self.dir)?;
        Ok(format!(
            "# Test backend {name}, written by tests/common/cluster.rs.
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = nfshc-{name}
log_path = {dir}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_uid = {user}
mail_gid = {user}
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={user} gid={user} home={store}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
!include {snippet}
",
            name = self.name,
            user = TEST_USER,
            password = PASSWORD,
            store = path_str(store)?,
            imap = self.imap_port,
            pop3 = self.pop3_port,
            snippet = path_str(snippet)?,
        ))
    }

    /// Starts the master in the foreground (`-F`, so it is our child and
    /// early failures are seen) and waits until both ports greet.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let bin = system::dovecot_binary().ok_or("no dovecot binary")?;
        let out_path = self.dir.join("master.out");
        let out = File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", out_path.display()))?;
        let child = Command::new(&bin)
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        self.master = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.master_exited()? {
                self.master = None;
                return Err(format!(
                    "dovecot for {} exited during startup ({status}):\n{}{}",
                    self.name,
                    fs::read_to_string(&out_path).unwrap_or_default(),
                    self.log_text().unwrap_or_default()
                ));
            }
            if greets(self.imap_port, "* OK") && greets(self.pop3_port, "+OK") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dovecot for {} did not greet on ports {} and {} within {:?}:\n{}",
                    self.name,
                    self.imap_port,
                    self.pop3_port,
                    START_TIMEOUT,
                    self.log_text().unwrap_or_default()
                ));
            }
            sleep(POLL);
        }
    }

    fn master_exited(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        match self.master.as_mut() {
            None => Ok(None),
            Some(child) => child
                .try_wait()
                .map_err(|e| format!("waiting for dovecot: {e}")),
        }
    }

    /// Stops the instance with `dovecot -c FILE stop` and reaps the master,
    /// killing it if it does not exit in time. Idempotent.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut master) = self.master.take() else {
            return Ok(());
        };
        // `dovecot stop` waits for the master to vanish; as the master is our
        // child it would stay a zombie until reaped, so reap it meanwhile.
        let stopper = system::dovecot_binary().map(|bin| {
            Command::new(bin)
                .arg("-c")
                .arg(&self.conf)
                .arg("stop")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        });
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut result = Ok(());
        loop {
            match master.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => sleep(POLL),
                _ => {
                    result = Err(format!("dovecot for {} did not stop; killed", self.name));
                    let _ = master.kill();
                    let _ = master.wait();
                    break;
                }
            }
        }
        if let Some(Ok(mut stopper)) = stopper {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(stopper.try_wait(), Ok(None)) && Instant::now() < deadline {
                sleep(POLL);
            }
            let _ = stopper.kill();
            let _ = stopper.wait();
        }
        result
    }

    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// Connects over IMAP and logs in as `user`.
    pub fn imap_login(&self, user: &str) -> Result<ImapClient, String> {
        let mut client = ImapClient::connect(self.imap_port)
            .map_err(|e| format!("{}: IMAP connect: {e}", self.name))?;
        client
            .login(user, PASSWORD)
            .map_err(|e| format!("{}: IMAP login as {user}: {e}", self.name))?;
        Ok(client)
    }

    /// Logs in over POP3 as `user` and returns the STAT reply.
    pub fn pop3_login(&self, user: &str) -> Result<String, String> {
        super::pop3::pop3_login(self.pop3_port, user, PASSWORD)
            .map_err(|e| format!("{}: POP3 login as {user}: {e}", self.name))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole Dovecot log of this backend.
    pub fn log_text(&self) -> Result<String, String> {
        match fs::read(&self.log) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(format!("reading {}: {e}", self.log.display())),
        }
    }

    /// A position in the log, for `log_since`.
    pub fn log_mark(&self) -> u64 {
        fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Log lines written after `mark`.
    pub fn log_since(&self, mark: u64) -> Result<Vec<String>, String> {
        let mut file = match File::open(&self.log) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("opening {}: {e}", self.log.display())),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("reading {}: {e}", self.log.display()))?;
        let start = usize::try_from(mark).map_or(bytes.len(), |m| m.min(bytes.len()));
        Ok(String::from_utf8_lossy(&bytes[start..])
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Waits until a log line after `mark` satisfies `wanted` and returns it.
    /// Dovecot's log process writes asynchronously, so a line may arrive
    /// shortly after the session that caused it.
    pub fn wait_for_log(
        &self,
        mark: u64,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_since(mark)?;
            if let Some(line) = lines.iter().find(|l| wanted(l)) {
                return Ok(line.clone());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: no matching log line within {timeout:?}; new lines:\n{}",
                    self.name,
                    lines.join("\n")
                ));
            }
            sleep(POLL);
        }
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    pub fn wrapper_conf_path(&self) -> &Path {
        &self.wrapper_conf
    }

    /// This backend's LISTINDEX root (what `/dev/shm/dovecot-listindex` is
    /// in production).
    pub fn listindex_root(&self) -> &Path {
        &self.listindex_root
    }

    /// The user's list index directory `<root>/<hash>/<user>`, if present.
    pub fn user_listindex_dir(&self, user: &str) -> Option<PathBuf> {
        fs::read_dir(&self.listindex_root)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join(user))
            .find(|p| p.is_dir())
    }

    /// Names of the `dovecot.list.index*` files this backend keeps for `user`.
    pub fn list_index_files(&self, user: &str) -> Vec<String> {
        let Some(dir) = self.user_listindex_dir(user) else {
            return Vec::new();
        };
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("dovecot.list.index"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: {e}");
        }
    }
}

/// Whether something on 127.0.0.1:`port` sends a greeting starting with
/// `prefix`.
fn greets(port: u16, prefix: &str) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), POLL * 10) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with(prefix)
}

/// A free TCP port on 127.0.0.1, never the same twice in this process (the
/// tests start clusters in parallel threads).
fn free_port() -> Result<u16, String> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut guard = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let handed_out = guard.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?
            .port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err("no free port on 127.0.0.1".to_string())
}
