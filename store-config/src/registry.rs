//! [`Registry`]: entries loaded from registry files, their stores and databases.

// A build with only some backends leaves parts of this module unused.
#![cfg_attr(
    not(all(feature = "memory", feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused_imports, unused_variables)
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_norway::{Mapping, Value};
use store_core::{Error, ErrorKind, SharedClock, SharedStore, system_clock};

use crate::error::{ConfigError, ConfigErrors, closest};
use crate::kinds::{self, Build, Ctx, Reference};
use crate::source::Source;

const ENTRY_KEYS: &[&str] = &["name", "kind", "meta", "lifecycle"];
const FILE_KEYS: &[&str] = &["version", "namespace", "entries"];

/// A store's background work, started and stopped by the registry.
#[async_trait]
pub(crate) trait Lifecycle: Send + Sync {
    async fn start(&self) -> store_core::Result<()>;
    fn stop(&self);
}

#[cfg(feature = "memory")]
#[async_trait]
impl Lifecycle for store_memory::MemoryStore {
    async fn start(&self) -> store_core::Result<()> {
        store_memory::MemoryStore::start(self)
    }
    fn stop(&self) {
        store_memory::MemoryStore::stop(self);
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[async_trait]
impl Lifecycle for store_sql::SqlStore {
    async fn start(&self) -> store_core::Result<()> {
        store_sql::SqlStore::start(self).await
    }
    fn stop(&self) {
        store_sql::SqlStore::stop(self);
    }
}

/// The effective settings of an entry: its config with every default applied.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Settings {
    /// `store.memory`: the fields as written, and the limits in force.
    #[cfg(feature = "memory")]
    Memory(store_memory::MemoryConfig, store_memory::Limits),
    /// `store.sql` (with `database` resolved to a full id).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    Sql(store_sql::SqlStoreConfig),
    /// `db.sql.sqlite` (with `path` resolved against the file's folder).
    #[cfg(feature = "sqlite")]
    Sqlite(store_sql::SqliteConfig),
    /// `db.sql.postgres` (its `Debug` hides the password).
    #[cfg(feature = "postgres")]
    Postgres(store_sql::PostgresConfig),
}

/// A built store entry.
pub(crate) struct Built {
    store: SharedStore,
    lifecycle: Arc<dyn Lifecycle>,
    settings: Settings,
}

impl Built {
    #[cfg(feature = "memory")]
    pub(crate) fn memory(
        store: store_memory::MemoryStore,
        config: store_memory::MemoryConfig,
        limits: store_memory::Limits,
    ) -> Self {
        let store = Arc::new(store);
        Self {
            store: store.clone(),
            lifecycle: store,
            settings: Settings::Memory(config, limits),
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn sql(store: store_sql::SqlStore, config: store_sql::SqlStoreConfig) -> Self {
        let store = Arc::new(store);
        Self {
            store: store.clone(),
            lifecycle: store,
            settings: Settings::Sql(config),
        }
    }
}

/// A built database entry (a cheap handle: clones share the pool).
#[derive(Clone)]
pub(crate) enum Database {
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    Sql(store_sql::SqlDatabase),
    /// Keeps the enum inhabited in builds without SQL.
    #[allow(dead_code)]
    None(std::convert::Infallible),
}

impl Database {
    async fn close(&self) {
        match self {
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Self::Sql(db) => db.close().await,
            Self::None(never) => match *never {},
        }
    }
}

/// One loaded entry.
pub struct Entry {
    /// `namespace:name`.
    pub id: String,
    /// The kind, e.g. `store.memory`.
    pub kind: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Its `meta` mapping, as written.
    pub meta: Option<Value>,
    /// `lifecycle.auto_start`.
    pub auto_start: bool,
    settings: Option<Settings>,
    item: Item,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("file", &self.file)
            .field("auto_start", &self.auto_start)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

enum Item {
    Store {
        store: SharedStore,
        lifecycle: Arc<dyn Lifecycle>,
    },
    Database(Database),
}

impl Entry {
    /// The effective settings (every default applied).
    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }

    /// The largest value the store accepts, in bytes (for front ends that stream bodies).
    pub fn max_value_size(&self) -> usize {
        match &self.settings {
            #[cfg(feature = "memory")]
            Some(Settings::Memory(_, limits)) => limits.max_value_size,
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Some(Settings::Sql(c)) => c
                .max_value_size
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(store_core::validate::DEFAULT_MAX_VALUE_SIZE),
            _ => store_core::validate::DEFAULT_MAX_VALUE_SIZE,
        }
    }

    /// The store, if this is a store entry.
    pub fn store(&self) -> Option<&SharedStore> {
        match &self.item {
            Item::Store { store, .. } => Some(store),
            Item::Database(_) => None,
        }
    }
}

/// Stores and databases built from registry files. Loading does no I/O beyond reading the
/// files: databases connect on first use or on [`Registry::start`].
///
/// ```
/// use store_config::Registry;
///
/// let yaml = "namespace: app\nentries:\n  - name: cache\n    kind: store.memory\n    max_size: 100\n";
/// let registry = Registry::builder().load_str("app.yaml", yaml).unwrap();
/// assert_eq!(registry.store("app:cache").unwrap().info().id, "app:cache");
/// ```
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("entries", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Loads registries; carries the clock their stores read.
#[derive(Debug, Clone)]
pub struct RegistryBuilder {
    clock: SharedClock,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        Self {
            clock: system_clock(),
        }
    }
}

/// A parsed entry waiting to be built.
struct Raw {
    file: usize,
    index: usize,
    id: String,
    namespace: String,
    kind: &'static kinds::Kind,
    fields: Mapping,
    meta: Option<Value>,
    auto_start: bool,
}

impl RegistryBuilder {
    /// The clock every store reads (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Loads registry files and folders (every `*.yaml`/`*.yml` in a folder, in name order).
    pub fn load<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Registry, ConfigErrors> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            let path = path.as_ref();
            for file in expand(path, &mut errors) {
                match std::fs::read_to_string(&file) {
                    Ok(text) => sources.push(Source::new(&file, text)),
                    Err(e) => errors.push(ConfigError::invalid(
                        &file,
                        format!("cannot read the file: {e}"),
                    )),
                }
            }
        }
        self.build(&sources, errors)
    }

    /// Loads one registry file given as text; `name` stands for its path in errors.
    pub fn load_str(&self, name: &str, yaml: &str) -> Result<Registry, ConfigErrors> {
        let sources = [Source::new(Path::new(name), yaml.to_owned())];
        self.build(&sources, Vec::new())
    }

    fn build(
        &self,
        sources: &[Source],
        mut errors: Vec<ConfigError>,
    ) -> Result<Registry, ConfigErrors> {
        let mut raws: Vec<Raw> = Vec::new();
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (file, source) in sources.iter().enumerate() {
            for raw in parse_file(file, source, &mut errors) {
                if let Some((f, i)) = seen.get(&raw.id) {
                    let first = &sources[*f];
                    let at = |s: &Source, i| {
                        let line = s
                            .entry_position(i)
                            .map(|(l, _)| format!(":{l}"))
                            .unwrap_or_default();
                        format!("{}{line}", s.path.display())
                    };
                    errors.push(
                        ConfigError::new(
                            ErrorKind::AlreadyExists,
                            &source.path,
                            format!(
                                "duplicate entry id, first defined at {}, again at {}",
                                at(first, *i),
                                at(source, raw.index)
                            ),
                        )
                        .entry(&raw.id)
                        .at(source.entry_position(raw.index)),
                    );
                    continue;
                }
                seen.insert(raw.id.clone(), (raw.file, raw.index));
                raws.push(raw);
            }
        }

        // Databases first: stores reference them.
        let mut databases: BTreeMap<String, (Database, Settings)> = BTreeMap::new();
        let nothing = |reference: &str| Reference::Missing(reference.to_owned(), None);
        for raw in &raws {
            if let Build::Database(build) = raw.kind.build {
                match build(&ctx(raw, sources, &self.clock, &nothing)) {
                    Ok(built) => {
                        databases.insert(raw.id.clone(), built);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        let kinds_by_id: BTreeMap<&str, &'static str> =
            raws.iter().map(|r| (r.id.as_str(), r.kind.name)).collect();
        let mut entries = BTreeMap::new();
        for raw in &raws {
            let entry = |settings, item| Entry {
                id: raw.id.clone(),
                kind: raw.kind.name.to_owned(),
                file: sources[raw.file].path.clone(),
                meta: raw.meta.clone(),
                auto_start: raw.auto_start,
                settings: Some(settings),
                item,
            };
            match raw.kind.build {
                Build::Database(_) => {
                    if let Some((db, settings)) = databases.get(&raw.id).cloned() {
                        entries.insert(raw.id.clone(), entry(settings, Item::Database(db)));
                    }
                }
                Build::Unavailable(why) => {
                    let source = &sources[raw.file];
                    errors.push(
                        ConfigError::new(
                            ErrorKind::Unsupported,
                            &source.path,
                            format!("kind `{}` is not available: {why}", raw.kind.name),
                        )
                        .entry(&raw.id)
                        .field("kind")
                        .at(source.field_position(raw.index, "kind")),
                    );
                }
                Build::Store(build) => {
                    // References without a namespace mean the entry's own namespace.
                    let resolve = |reference: &str| {
                        let id = if reference.contains(':') {
                            reference.to_owned()
                        } else {
                            format!("{}:{reference}", raw.namespace)
                        };
                        match (databases.get(&id), kinds_by_id.get(id.as_str())) {
                            (Some((db, _)), _) => Reference::Database(id, db),
                            (None, Some(kind))
                                if kinds::find(kind)
                                    .is_some_and(|k| matches!(k.build, Build::Database(_))) =>
                            {
                                Reference::Broken(id)
                            }
                            (None, Some(kind)) => Reference::OtherKind(id, kind),
                            (None, None) => {
                                let ids: Vec<&str> = kinds_by_id.keys().copied().collect();
                                let near = closest(&id, &ids).map(str::to_owned);
                                Reference::Missing(id, near)
                            }
                        }
                    };
                    match build(&ctx(raw, sources, &self.clock, &resolve)) {
                        Ok(built) => {
                            let item = Item::Store {
                                store: built.store,
                                lifecycle: built.lifecycle,
                            };
                            entries.insert(raw.id.clone(), entry(built.settings, item));
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(Registry { entries })
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

fn ctx<'a>(
    raw: &'a Raw,
    sources: &'a [Source],
    clock: &'a SharedClock,
    resolve: &'a dyn Fn(&str) -> Reference<'a>,
) -> Ctx<'a> {
    Ctx {
        id: &raw.id,
        index: raw.index,
        source: &sources[raw.file],
        fields: &raw.fields,
        clock,
        resolve,
    }
}

/// A file, or every `*.yaml`/`*.yml` file of a folder in name order.
fn expand(path: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    match std::fs::read_dir(path) {
        Err(e) => {
            errors.push(ConfigError::invalid(
                path,
                format!("cannot read the folder: {e}"),
            ));
            Vec::new()
        }
        Ok(dir) => {
            let mut files: Vec<PathBuf> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            files
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn str_key(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".to_owned()),
    }
}

/// Checks a file's structure and returns its entries (errors go to `errors`).
fn parse_file(file: usize, source: &Source, errors: &mut Vec<ConfigError>) -> Vec<Raw> {
    let path = &source.path;
    let doc: Value = match serde_norway::from_str(&source.text) {
        Ok(v) => v,
        Err(e) => {
            let at = e.location().map(|l| (l.line(), l.column()));
            errors.push(ConfigError::invalid(path, format!("invalid YAML: {e}")).at(at));
            return Vec::new();
        }
    };
    let Value::Mapping(top) = doc else {
        errors.push(ConfigError::invalid(
            path,
            format!(
                "a registry file is a mapping with `namespace` and `entries`, not {}",
                type_name(&doc)
            ),
        ));
        return Vec::new();
    };
    let top_error = |field: &str, message: String| {
        ConfigError::invalid(path, message)
            .field(field)
            .at(source.top_level_position(field))
    };
    for key in top.keys() {
        let k = str_key(key);
        if !FILE_KEYS.contains(&k.as_str()) {
            let hint = closest(&k, FILE_KEYS)
                .map(|c| format!(", did you mean `{c}`?"))
                .unwrap_or_else(|| format!("; known: {}", FILE_KEYS.join(", ")));
            errors.push(top_error(&k, format!("unknown field `{k}`{hint}")));
        }
    }
    match top.get("version") {
        None | Some(Value::String(_)) => {}
        Some(Value::Number(n)) => errors.push(top_error(
            "version",
            format!("must be a string: write version: \"{n}\""),
        )),
        Some(other) => errors.push(top_error(
            "version",
            format!("must be a string, not {}", type_name(other)),
        )),
    }
    let namespace = match top.get("namespace") {
        Some(Value::String(ns)) if is_name(ns) => ns.clone(),
        Some(Value::String(ns)) => {
            errors.push(top_error(
                "namespace",
                format!("`{ns}`: must match ^[a-zA-Z][a-zA-Z0-9_.-]*$"),
            ));
            return Vec::new();
        }
        Some(other) => {
            errors.push(top_error(
                "namespace",
                format!("must be a string, not {}", type_name(other)),
            ));
            return Vec::new();
        }
        None => {
            errors.push(ConfigError::invalid(path, "missing field `namespace`").field("namespace"));
            return Vec::new();
        }
    };
    let items = match top.get("entries") {
        Some(Value::Sequence(items)) => items,
        None | Some(Value::Null) => return Vec::new(),
        Some(other) => {
            errors.push(top_error(
                "entries",
                format!("must be a list of entries, not {}", type_name(other)),
            ));
            return Vec::new();
        }
    };

    let mut raws = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let at_entry = source.entry_position(index);
        let Value::Mapping(map) = item else {
            errors.push(
                ConfigError::invalid(
                    path,
                    format!(
                        "entry #{}: must be a mapping, not {}",
                        index + 1,
                        type_name(item)
                    ),
                )
                .at(at_entry),
            );
            continue;
        };
        let name = match map.get("name") {
            Some(Value::String(n)) if is_name(n) => n.clone(),
            Some(Value::String(n)) => {
                errors.push(
                    ConfigError::invalid(
                        path,
                        format!("`{n}`: must match ^[a-zA-Z][a-zA-Z0-9_.-]*$"),
                    )
                    .entry(&format!("{namespace}:{n}"))
                    .field("name")
                    .at(source.field_position(index, "name")),
                );
                continue;
            }
            _ => {
                errors.push(
                    ConfigError::invalid(
                        path,
                        format!("entry #{}: missing field `name`", index + 1),
                    )
                    .field("name")
                    .at(at_entry),
                );
                continue;
            }
        };
        let id = format!("{namespace}:{name}");
        let err = |field: &str, message: String| {
            ConfigError::invalid(path, message)
                .entry(&id)
                .field(field)
                .at(source.field_position(index, field).or(at_entry))
        };
        let kind = match map.get("kind") {
            Some(Value::String(k)) => match kinds::find(k) {
                Some(kind) => kind,
                None => {
                    let names = kinds::names();
                    let hint = closest(k, &names)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    errors.push(err(
                        "kind",
                        format!(
                            "unknown kind `{k}`{hint}; known kinds: {}",
                            names.join(", ")
                        ),
                    ));
                    continue;
                }
            },
            _ => {
                errors.push(err(
                    "kind",
                    format!(
                        "missing field `kind`; known kinds: {}",
                        kinds::names().join(", ")
                    ),
                ));
                continue;
            }
        };
        let mut auto_start = false;
        match map.get("lifecycle") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(l)) => {
                for (k, v) in l {
                    match (str_key(k).as_str(), v) {
                        ("auto_start", Value::Bool(b)) => auto_start = *b,
                        ("auto_start", other) => errors.push(err(
                            "lifecycle",
                            format!(
                                "lifecycle.auto_start must be true or false, not {}",
                                type_name(other)
                            ),
                        )),
                        (other, _) => errors.push(err(
                            "lifecycle",
                            format!("unknown field `lifecycle.{other}`; known: auto_start"),
                        )),
                    }
                }
            }
            Some(other) => errors.push(err(
                "lifecycle",
                format!("must be a mapping, not {}", type_name(other)),
            )),
        }
        let mut fields = Mapping::new();
        let mut bad = false;
        for (k, v) in map {
            let key = str_key(k);
            if ENTRY_KEYS.contains(&key.as_str()) {
                continue;
            }
            if !kind.fields.contains(&key.as_str()) {
                let mut known: Vec<&str> = kind.fields.to_vec();
                known.extend_from_slice(ENTRY_KEYS);
                let hint = closest(&key, &known)
                    .map(|c| format!(", did you mean `{c}`?"))
                    .unwrap_or_else(|| {
                        format!("; {} fields: {}", kind.name, kind.fields.join(", "))
                    });
                errors.push(err(&key, format!("unknown field `{key}`{hint}")));
                bad = true;
                continue;
            }
            fields.insert(k.clone(), v.clone());
        }
        if bad {
            continue;
        }
        raws.push(Raw {
            file,
            index,
            id,
            namespace: namespace.clone(),
            kind,
            fields,
            meta: map.get("meta").cloned(),
            auto_start,
        });
    }
    raws
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Registry {
    /// A builder (to choose the clock); [`Registry::load`] uses the system clock.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Loads registry files and folders with the system clock.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, ConfigErrors> {
        RegistryBuilder::default().load(paths)
    }

    /// The store with id `id`; `NotFound` names the known store ids.
    pub fn store(&self, id: &str) -> store_core::Result<SharedStore> {
        if let Some(store) = self.entries.get(id).and_then(Entry::store) {
            return Ok(Arc::clone(store));
        }
        let known: Vec<&str> = self.store_ids().collect();
        Err(Error::not_found(format!(
            "no store `{id}`; known stores: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )))
    }

    /// Ids of every store entry, in order.
    pub fn store_ids(&self) -> impl Iterator<Item = &str> {
        self.entries
            .values()
            .filter(|e| e.store().is_some())
            .map(|e| e.id.as_str())
    }

    /// Every entry (stores and databases), in id order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// One entry.
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Starts the background work (cleanup timers) of every `auto_start` store. Idempotent.
    pub async fn start(&self) -> store_core::Result<()> {
        for entry in self.entries.values().filter(|e| e.auto_start) {
            if let Item::Store { lifecycle, .. } = &entry.item {
                lifecycle
                    .start()
                    .await
                    .map_err(|e| e.context(format!("starting `{}`", entry.id)))?;
            }
        }
        Ok(())
    }

    /// Stops every store's background work and closes every database. Idempotent; afterwards
    /// SQL stores answer `Closed`.
    pub async fn shutdown(&self) {
        for entry in self.entries.values() {
            match &entry.item {
                Item::Store { lifecycle, .. } => lifecycle.stop(),
                Item::Database(db) => db.close().await,
            }
        }
    }
}
