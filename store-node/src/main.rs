//! `store-node`: runs a node of the store family from YAML and serves its HTTP API; its other
//! subcommands are a command-line client of that API.
//!
//! ```text
//! store-node serve --config examples/local.yaml
//! store-node set app:cache greeting hello --ttl 30s
//! store-node get app:cache greeting
//! ```
//!
//! `serve` binds loopback unless the config names a token (or says `insecure: true`), and must
//! never answer a request for a non-loopback client without checking its bearer token then.

mod client;
mod failures;
mod metrics;
mod server;
#[cfg(feature = "test-clock")]
mod test_clock;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use store_config::{NodeConfig, Registry};
use store_core::Condition;

#[derive(Parser)]
#[command(
    name = "store-node",
    version,
    about = "Run a store node, or talk to one."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Remote {
    /// The node's address.
    #[arg(
        long,
        default_value = "127.0.0.1:7700",
        env = "STORE_ADDR",
        global = true
    )]
    addr: String,
    /// Bearer token, for nodes that require one.
    #[arg(long, env = "STORE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: load its config and registry, serve the HTTP API until SIGINT/SIGTERM.
    Serve {
        /// The node config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Listen here instead of the config's http.bind (port 0 picks a free port).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Load a node config and its registry without opening anything; report every error.
    Validate {
        /// The node config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List the node's stores.
    Stores(#[command(flatten)] Remote),
    /// Show one store's info.
    Info {
        /// Store id, e.g. app:cache.
        store: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a key's value.
    Get {
        /// Store id.
        store: String,
        /// Key.
        key: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write a value (from the argument, or stdin).
    Set {
        /// Store id.
        store: String,
        /// Key.
        key: String,
        /// Value; read from stdin when absent.
        value: Option<String>,
        /// Time to live: 30s, 5m, 1h30m, or seconds.
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write a value if a condition holds.
    Put {
        /// Store id.
        store: String,
        /// Key.
        key: String,
        /// Value; read from stdin when absent.
        value: Option<String>,
        /// Time to live: 30s, 5m, 1h30m, or seconds.
        #[arg(long)]
        ttl: Option<String>,
        /// Only if the key is absent.
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Only if the key's version is this one.
        #[arg(long)]
        if_version: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a key.
    Delete {
        /// Store id.
        store: String,
        /// Key.
        key: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// The cluster: status, or add and remove Raft members.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// List keys.
    List {
        /// Store id.
        store: String,
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only keys after this one (a previous page's cursor).
        #[arg(long)]
        after: Option<String>,
        /// Page size (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Follow cursors to the end.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// The node's view of its cluster: leader, term, indexes, members.
    Status,
    /// Add a node (by its name and internode address) as a learner, then promote it to voter
    /// once it has caught up.
    Add {
        /// The new node's `cluster.name`.
        name: String,
        /// Its internode address (`cluster.raft.advertise`).
        #[arg(value_name = "ADDR")]
        address: String,
        /// Keep it a learner (it receives the log but does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    Remove {
        /// The member's name.
        name: String,
    },
}

fn client(r: &Remote) -> anyhow::Result<client::Cli> {
    client::Cli::new(&r.addr, r.token.clone(), r.json)
}

fn validate(config: &PathBuf) -> ExitCode {
    let node = match NodeConfig::load(config) {
        Ok(n) => n,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let context = node.context();
    if node.cluster.as_ref().is_some_and(|c| c.raft.is_some())
        && let Err(e) = store_config::raft_node(&context)
    {
        eprintln!("{}: {e}", config.display());
        return ExitCode::FAILURE;
    }
    if node.cluster.as_ref().is_some_and(|c| c.gossip.is_some())
        && let Err(e) = store_config::crdt_node(&context)
    {
        eprintln!("{}: {e}", config.display());
        return ExitCode::FAILURE;
    }
    match node.load_registry(Registry::builder().node(context)) {
        Ok(registry) => {
            println!("ok: {} (listen on {})", config.display(), node.bind);
            for entry in registry.entries() {
                let what = entry.store().map_or_else(
                    || "database".to_owned(),
                    |s| {
                        let i = s.info();
                        format!(
                            "{} {}, versioned={}",
                            i.backend, i.consistency, i.capabilities.versioned
                        )
                    },
                );
                println!(
                    "  {:<24} {:<16} {what}{}",
                    entry.id,
                    entry.kind,
                    if entry.auto_start { ", auto_start" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

/// The log filter when `RUST_LOG` is not set.
const QUIET_BY_DEFAULT: &str =
    "info,openraft::replication=error,openraft::engine::handler::replication_handler=error";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { config } => return validate(&config),
        Command::Serve { config, bind } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        // openraft retries an unreachable peer every half second with three
                        // warnings each time; `cluster status` shows who is unreachable.
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(QUIET_BY_DEFAULT)),
                )
                .with_writer(std::io::stderr)
                // Colour codes only on a terminal, never in a log file.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let node = match NodeConfig::load(&config) {
                Ok(n) => n,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(server::serve(&node, bind)))
        }
        Command::Stores(r) => client(&r).and_then(|c| c.stores()),
        Command::Info { store, remote } => client(&remote).and_then(|c| c.info(&store)),
        Command::Get { store, key, remote } => client(&remote).and_then(|c| c.get(&store, &key)),
        Command::Set {
            store,
            key,
            value,
            ttl,
            remote,
        } => client(&remote)
            .and_then(|c| c.put(&store, &key, value, ttl.as_deref(), Condition::Always)),
        Command::Put {
            store,
            key,
            value,
            ttl,
            if_absent,
            if_version,
            remote,
        } => {
            let condition = match (if_absent, if_version) {
                (true, _) => Condition::IfAbsent,
                (false, Some(v)) => Condition::IfVersion(v),
                (false, None) => Condition::Always,
            };
            client(&remote).and_then(|c| c.put(&store, &key, value, ttl.as_deref(), condition))
        }
        Command::Cluster { action, remote } => client(&remote).and_then(|c| match action {
            ClusterAction::Status => c.cluster_status(),
            ClusterAction::Add {
                name,
                address,
                learner,
            } => c.add_member(&name, &address, learner),
            ClusterAction::Remove { name } => c.remove_member(&name),
        }),
        Command::Delete { store, key, remote } => {
            client(&remote).and_then(|c| c.delete(&store, &key))
        }
        Command::List {
            store,
            prefix,
            after,
            limit,
            all,
            remote,
        } => client(&remote).and_then(|c| c.list(&store, prefix.as_deref(), after, limit, all)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
