//! The service's shared state: configuration, connection pools, rate limits, the log; and
//! [`App::blocking`], the one way to the databases. SQLite calls and argon2 block a thread
//! for milliseconds (a busy store for up to its busy timeout), so they run on tokio's
//! blocking pool, never on the two async workers that serve every connection.

use crate::error::WebError;
use crate::limits::RateLimit;
use gatehouse::config::Config;
use gatehouse::log::{Level, Logger};
use gatehouse::store::secrets::Secrets;
use gatehouse::store::sqlite::SqliteStore;
use gatehouse::store::{AdminStore, StoreError};

/// The key store the service writes: this host's SQLite file, or the shared PostgreSQL
/// with `[source]` (several instances may then run side by side).
pub type Store = Box<dyn AdminStore + Send>;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A few SQLite connections shared by the request handlers: SQLite serialises writers
/// itself, and readers never wait for them (WAL).
struct Pool<T> {
    items: Vec<Mutex<T>>,
    next: AtomicUsize,
}

impl<T> Pool<T> {
    fn new(items: Vec<T>) -> Pool<T> {
        Pool { items: items.into_iter().map(Mutex::new).collect(), next: AtomicUsize::new(0) }
    }

    /// A free connection if there is one, else the next in turn.
    fn get(&self) -> MutexGuard<'_, T> {
        for item in &self.items {
            if let Ok(guard) = item.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.items.len();
        self.items[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct App {
    pub config: Config,
    /// Reached through [`Db`] only, that is inside [`App::blocking`].
    stores: Pool<Store>,
    secrets: Pool<Secrets>,
    log: Mutex<Logger>,
    pub signin_limit: RateLimit,
    pub change_limit: RateLimit,
    /// The shared secret a trusted reverse proxy sends, when proxy sign-in is on.
    pub proxy_secret: Option<String>,
}

const CONNECTIONS: usize = 4;

impl App {
    pub fn open(config: Config) -> Result<App, String> {
        let mut stores = Vec::new();
        let mut secrets = Vec::new();
        for _ in 0..CONNECTIONS {
            let store: Store = match &config.shared {
                Some(shared) => Box::new(
                    gatehouse::store::postgres::PgStore::open(shared, config.users.uid_range())
                        .map_err(|e| e.to_string())?,
                ),
                None => Box::new(
                    SqliteStore::open_writer(
                        &config.store.path,
                        config.store.busy_timeout_ms,
                        config.users.uid_range(),
                    )
                    .map_err(|e| e.to_string())?,
                ),
            };
            stores.push(store);
            // With [source], in the shared PostgreSQL: every instance sees the same
            // sessions and tokens.
            secrets.push(Secrets::for_config(&config).map_err(|e| e.to_string())?);
        }
        let proxy_secret = match &config.web.proxy_secret_file {
            Some(path) => {
                gatehouse::trust::check_owned_path(path, &[nix_euid()])
                    .map_err(|e| format!("web.proxy_secret_file: {e}"))?;
                use std::os::unix::fs::MetadataExt;
                let mode = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.mode();
                if mode & 0o077 != 0 {
                    return Err(format!(
                        "{}: the proxy secret must be readable by its owner alone (mode 0600)",
                        path.display()
                    ));
                }
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let secret = text.trim().to_string();
                if secret.len() < 16 {
                    return Err(format!("{}: the proxy secret must be at least 16 characters", path.display()));
                }
                Some(secret)
            }
            None => None,
        };
        let log = Mutex::new(Logger::open("gatehoused", &config));
        Ok(App {
            signin_limit: RateLimit::new(config.web.signin_per_minute),
            change_limit: RateLimit::new(config.web.changes_per_minute),
            config,
            stores: Pool::new(stores),
            secrets: Pool::new(secrets),
            log,
            proxy_secret,
        })
    }

    pub fn log(&self, level: Level, pairs: &[(&str, &str)]) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).log(level, pairs);
    }

    /// A store error as the client sees it; the ones an administrator must hear of (a store
    /// locked too long, unreadable or damaged) are logged too.
    pub fn store_err(&self, e: StoreError) -> WebError {
        if matches!(
            e,
            StoreError::Busy { .. }
                | StoreError::UidsExhausted { .. }
                | StoreError::Unavailable { .. }
                | StoreError::IndexRace { .. }
                | StoreError::Corrupt { .. }
        ) {
            self.log(Level::Error, &[("error", &e.to_string())]);
        }
        e.into()
    }

    /// Runs `f` on tokio's blocking pool with the databases. Every SQLite call (store,
    /// secrets, login state) and every argon2 hash goes through here; a closure that
    /// panicked answers as an unavailable store.
    pub async fn blocking<T, F>(self: &Arc<App>, f: F) -> Result<T, WebError>
    where
        F: FnOnce(&Db<'_>) -> Result<T, WebError> + Send + 'static,
        T: Send + 'static,
    {
        let app = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&Db { app: &app })).await.unwrap_or(Err(WebError::Unavailable))
    }
}

/// The app inside [`App::blocking`]: everything `App` has, and the database connections.
pub struct Db<'a> {
    app: &'a App,
}

impl std::ops::Deref for Db<'_> {
    type Target = App;
    fn deref(&self) -> &App {
        self.app
    }
}

impl Db<'_> {
    /// A connection to the key store.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.app.stores.get()
    }

    /// A connection to the secrets: the file `web.secrets`, or with `[source]` the
    /// shared PostgreSQL.
    pub fn secrets(&self) -> MutexGuard<'_, Secrets> {
        self.app.secrets.get()
    }

    /// Runs a store change as `actor` (recorded in the audit trail with the change).
    pub fn with_admin<T>(
        &self,
        actor: String,
        f: impl FnOnce(&mut gatehouse::admin::Admin<'_>) -> Result<T, gatehouse::admin::AdminError>,
    ) -> Result<T, WebError> {
        let mut store = self.store();
        let mut log = self.app.log.lock().unwrap_or_else(|e| e.into_inner());
        let actor = gatehouse::store::Actor { name: actor, now: gatehouse::time::now() };
        let mut admin =
            gatehouse::admin::Admin { config: &self.config, store: &mut **store, actor, log: &mut log, columns: false };
        f(&mut admin).map_err(Into::into)
    }
}

fn nix_euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}
