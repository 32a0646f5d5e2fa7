//! [`Registry`]: entries loaded from registry files, the stores and shared resources built from
//! them, started in dependency order and stopped in reverse. No backend is named here: the kinds
//! come from `kinds.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_norway::{Mapping, Value};
use store_core::{Error, ErrorKind, Lifecycle, SharedClock, SharedStore};

use crate::build::{Build, Built, Ctx, Item, Kind, Reference, Settings, Shared};
use crate::context::NodeContext;
use crate::error::{ConfigError, ConfigErrors, closest};
use crate::kinds;
use crate::source::Source;

const ENTRY_KEYS: &[&str] = &["name", "kind", "meta", "lifecycle"];
const FILE_KEYS: &[&str] = &["version", "namespace", "entries"];

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
    settings: Box<dyn Settings>,
    item: Item,
    lifecycle: Arc<dyn Lifecycle>,
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

impl Entry {
    /// The effective settings (every default applied), as the backend crate's own type: the
    /// `Limits` of a `store.memory` entry, the `SqlStoreConfig` of a `store.sql` one (with
    /// `database` resolved to a full id), the `SqliteConfig` or `PostgresConfig` of a database
    /// entry (a SQLite `path` resolved against the file's folder). `None` when `T` is not the
    /// entry's type.
    pub fn settings<T: std::any::Any>(&self) -> Option<&T> {
        // Through the box to the value: `Box<dyn Settings>` is itself `Settings`.
        (*self.settings).as_any().downcast_ref::<T>()
    }

    /// The store, if this is a store entry.
    pub fn store(&self) -> Option<&SharedStore> {
        match &self.item {
            Item::Store(store) => Some(store),
            Item::Resource(_) => None,
        }
    }

    fn is_resource(&self) -> bool {
        matches!(self.item, Item::Resource(_))
    }
}

/// Stores and shared resources built from registry files. Loading does no I/O beyond reading
/// the files: databases connect on first use or on [`Registry::start`].
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
    node: Arc<NodeContext>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("entries", &self.entries.keys().collect::<Vec<_>>())
            .field("node", &self.node)
            .finish()
    }
}

/// Loads registries for one node (see [`NodeContext`]).
#[derive(Debug, Default)]
pub struct RegistryBuilder {
    node: NodeContext,
}

/// A parsed entry waiting to be built.
struct Raw {
    file: usize,
    index: usize,
    id: String,
    namespace: String,
    kind: &'static Kind,
    fields: Mapping,
    meta: Option<Value>,
    auto_start: bool,
}

impl RegistryBuilder {
    /// The node the stores run in: its name, data folder, clock and shared resources.
    #[must_use]
    pub fn node(mut self, node: NodeContext) -> Self {
        self.node = node;
        self
    }

    /// The clock every store reads (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.node = self.node.clock(clock);
        self
    }

    /// Loads registry files and folders (every `*.yaml`/`*.yml` in a folder, in name order).
    pub fn load<P: AsRef<Path>>(self, paths: &[P]) -> Result<Registry, ConfigErrors> {
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
    pub fn load_str(self, name: &str, yaml: &str) -> Result<Registry, ConfigErrors> {
        let sources = [Source::new(Path::new(name), yaml.to_owned())];
        self.build(&sources, Vec::new())
    }

    fn build(
        self,
        sources: &[Source],
        mut errors: Vec<ConfigError>,
    ) -> Result<Registry, ConfigErrors> {
        let raws = unique(sources, &mut errors);
        let node = self.node;
        let mut entries = BTreeMap::new();
        // Resources first: stores reference them.
        let nothing = |reference: &str| Reference::Missing(reference.to_owned(), None);
        for raw in &raws {
            if let Build::Resource(build) = raw.kind.build {
                match build(&ctx(raw, sources, &node, &nothing)) {
                    Ok(b) => {
                        entries.insert(raw.id.clone(), entry_of(raw, sources, b));
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        let resources: BTreeMap<String, Shared> = entries
            .values()
            .filter_map(|e| match &e.item {
                Item::Resource(r) => Some((e.id.clone(), Arc::clone(r))),
                Item::Store(_) => None,
            })
            .collect();
        let kinds_by_id: BTreeMap<&str, &'static Kind> =
            raws.iter().map(|r| (r.id.as_str(), r.kind)).collect();
        let mut stores = Vec::new();
        for raw in &raws {
            match raw.kind.build {
                Build::Resource(_) => {}
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
                    let resolve = |reference: &str| {
                        resolve(reference, &raw.namespace, &resources, &kinds_by_id)
                    };
                    match build(&ctx(raw, sources, &node, &resolve)) {
                        Ok(b) => stores.push((raw.id.clone(), entry_of(raw, sources, b))),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        entries.extend(stores);
        if errors.is_empty() {
            Ok(Registry {
                entries,
                node: Arc::new(node),
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// An entry as the registry keeps it.
fn entry_of(raw: &Raw, sources: &[Source], built: Built) -> Entry {
    Entry {
        id: raw.id.clone(),
        kind: raw.kind.name.to_owned(),
        file: sources[raw.file].path.clone(),
        meta: raw.meta.clone(),
        auto_start: raw.auto_start,
        settings: built.settings,
        item: built.item,
        lifecycle: built.lifecycle,
    }
}

/// The kind called `name`.
fn find_kind(name: &str) -> Option<&'static Kind> {
    kinds::KINDS.iter().find(|k| k.name == name)
}

/// The names of every kind, for "unknown kind" errors.
fn kind_names() -> Vec<&'static str> {
    kinds::KINDS.iter().map(|k| k.name).collect()
}

/// The entries of every file, without duplicate ids (each duplicate is an error).
fn unique(sources: &[Source], errors: &mut Vec<ConfigError>) -> Vec<Raw> {
    let mut raws: Vec<Raw> = Vec::new();
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (file, source) in sources.iter().enumerate() {
        for raw in parse_file(file, source, errors) {
            if let Some((f, i)) = seen.get(&raw.id) {
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
                            at(&sources[*f], *i),
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
    raws
}

/// What `reference` (written in namespace `namespace`; without one it means that namespace)
/// points at.
fn resolve<'a>(
    reference: &str,
    namespace: &str,
    resources: &'a BTreeMap<String, Shared>,
    kinds_by_id: &BTreeMap<&str, &'static Kind>,
) -> Reference<'a> {
    let id = if reference.contains(':') {
        reference.to_owned()
    } else {
        format!("{namespace}:{reference}")
    };
    match (resources.get(&id), kinds_by_id.get(id.as_str())) {
        (Some(resource), _) => Reference::Resource(id, resource),
        (None, Some(kind)) if matches!(kind.build, Build::Resource(_)) => Reference::Broken(id),
        (None, Some(kind)) => Reference::OtherKind(id, kind.name),
        (None, None) => {
            let ids: Vec<&str> = kinds_by_id.keys().copied().collect();
            let near = closest(&id, &ids).map(str::to_owned);
            Reference::Missing(id, near)
        }
    }
}

fn ctx<'a>(
    raw: &'a Raw,
    sources: &'a [Source],
    node: &'a NodeContext,
    resolve: &'a dyn Fn(&str) -> Reference<'a>,
) -> Ctx<'a> {
    Ctx {
        id: &raw.id,
        index: raw.index,
        source: &sources[raw.file],
        fields: &raw.fields,
        required: raw.kind.required,
        node,
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
            Some(Value::String(k)) => match find_kind(k) {
                Some(kind) => kind,
                None => {
                    let names = kind_names();
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
                        kind_names().join(", ")
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
    /// A builder (to choose the node and clock); [`Registry::load`] uses the system clock.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Loads registry files and folders with the system clock.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, ConfigErrors> {
        RegistryBuilder::default().load(paths)
    }

    /// The node these entries were built for.
    pub fn node(&self) -> &NodeContext {
        &self.node
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

    /// Everything there is to start and stop, in dependency order: the node's shared resources,
    /// then resource entries (databases), then stores. Stopping walks it backwards.
    fn in_order(&self) -> Vec<(Option<&Entry>, Arc<dyn Lifecycle>)> {
        let mut out: Vec<_> = self
            .node
            .lifecycles()
            .into_iter()
            .map(|l| (None, l))
            .collect();
        let (resources, stores): (Vec<&Entry>, Vec<&Entry>) =
            self.entries.values().partition(|e| e.is_resource());
        for e in resources.into_iter().chain(stores) {
            out.push((Some(e), Arc::clone(&e.lifecycle)));
        }
        out
    }

    /// Starts the node's shared resources and resource entries, then the background work
    /// (cleanup timers) of every `auto_start` store. Idempotent.
    pub async fn start(&self) -> store_core::Result<()> {
        for (entry, lifecycle) in self.in_order() {
            if entry.is_some_and(|e| !e.is_resource() && !e.auto_start) {
                continue;
            }
            lifecycle.start().await.map_err(|e| match entry {
                Some(entry) => e.context(format!("starting `{}`", entry.id)),
                None => e.context("starting a node-wide resource"),
            })?;
        }
        Ok(())
    }

    /// Stops every store, then closes resource entries and the node's shared resources: the
    /// reverse of [`Registry::start`]. Idempotent; afterwards SQL stores answer `Closed`.
    pub async fn shutdown(&self) {
        let order = self.in_order();
        for (_, lifecycle) in order.iter().rev() {
            lifecycle.stop().await;
        }
        for (_, lifecycle) in order.iter().rev() {
            lifecycle.close().await;
        }
    }
}
