//! The client subcommands: the node's HTTP API through `store-client`, printed for people (or
//! as JSON for scripts).

use std::io::{Read as _, Write as _};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use store_client::Client;
use store_core::{Condition, Entry, ListOptions, PutOptions, to_millis};

/// The CLI's view of one node.
pub(crate) struct Cli {
    client: Client,
    runtime: tokio::runtime::Runtime,
    json: bool,
}

/// A store error as the CLI prints it: `Kind: message`, and whether a write may have been
/// applied.
fn failed(e: store_core::Error) -> anyhow::Error {
    let unknown = if e.is_indeterminate() {
        "; the write may or may not have been applied"
    } else {
        ""
    };
    anyhow::anyhow!("{e}{unknown}")
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "key": e.key,
        "value": base64::engine::general_purpose::STANDARD.encode(&e.value),
        "version": e.version,
        "expires_at": e.expires_at.map(to_millis),
    })
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// One line per member: name, address, role, and reachability or leadership when known.
fn print_members(members: &Value, leader: Option<&str>) {
    for m in members.as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("?");
        let mut notes = Vec::new();
        if leader == Some(name) {
            notes.push("leader");
        }
        match m["reachable"].as_bool() {
            Some(true) => notes.push("reachable"),
            Some(false) => notes.push("UNREACHABLE"),
            None => {}
        }
        println!(
            "  {name:<12} {:<22} {:<8} {}",
            m["addr"].as_str().unwrap_or("?"),
            m["role"].as_str().unwrap_or("?"),
            notes.join(", ")
        );
    }
}

impl Cli {
    pub(crate) fn new(addr: &str, token: Option<String>, json: bool) -> Result<Self> {
        let client = Client::new(addr).map_err(failed)?.token(token);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        Ok(Self {
            client,
            runtime,
            json,
        })
    }

    fn run<T>(&self, f: impl std::future::Future<Output = store_core::Result<T>>) -> Result<T> {
        self.runtime.block_on(f).map_err(failed)
    }

    pub(crate) fn stores(&self) -> Result<()> {
        let stores = self.run(self.client.stores())?;
        if self.json {
            let all: Vec<Value> = stores
                .iter()
                .map(|s| {
                    let mut v = json!(s.info);
                    if let (Some(usage), Some(fields)) = (s.usage, v.as_object_mut()) {
                        fields.insert("usage".to_owned(), json!(usage));
                    }
                    v
                })
                .collect();
            return print_json(&json!({ "stores": all }));
        }
        for s in stores {
            let i = &s.info;
            println!(
                "{:<24} {:<8} {:<12} durable={} versioned={}",
                i.id, i.backend, i.consistency, i.durable, i.capabilities.versioned
            );
        }
        Ok(())
    }

    pub(crate) fn cluster_status(&self) -> Result<()> {
        let v = self.run(self.client.cluster())?;
        if self.json {
            return print_json(&v);
        }
        let name = v["name"].as_str().unwrap_or("?");
        match v.get("raft").filter(|r| !r.is_null()) {
            None => println!("node {name}: no raft engine"),
            Some(raft) => {
                let leader = raft["leader"].as_str().unwrap_or("(none)");
                println!(
                    "node {name}: raft leader {leader}, term {}, commit {}, applied {}",
                    raft["term"], raft["commit_index"], raft["applied_index"]
                );
                print_members(&raft["members"], Some(leader));
            }
        }
        match v.get("gossip").filter(|g| !g.is_null()) {
            None => println!("node {name}: no gossip engine"),
            Some(gossip) => {
                let joined = if gossip["joined"] == json!(true) {
                    "joined"
                } else {
                    "not joined yet"
                };
                println!("node {name}: gossip {joined}");
                for m in gossip["members"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<12} {:<22} {}",
                        m["name"].as_str().unwrap_or("?"),
                        m["addr"].as_str().unwrap_or("?"),
                        m["state"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        Ok(())
    }

    pub(crate) fn add_member(&self, name: &str, addr: &str, learner: bool) -> Result<()> {
        let v = self.run(self.client.add_member(name, addr, learner))?;
        if self.json {
            return print_json(&v);
        }
        print_members(&v["members"], None);
        Ok(())
    }

    pub(crate) fn remove_member(&self, name: &str) -> Result<()> {
        let v = self.run(self.client.remove_member(name))?;
        if self.json {
            return print_json(&v);
        }
        print_members(&v["members"], None);
        Ok(())
    }

    pub(crate) fn info(&self, store: &str) -> Result<()> {
        let s = self.run(self.client.describe(store))?;
        let mut v = json!(s.info);
        if let (Some(usage), Some(fields)) = (s.usage, v.as_object_mut()) {
            fields.insert("usage".to_owned(), json!(usage));
        }
        print_json(&v)
    }

    pub(crate) fn get(&self, store: &str, key: &str) -> Result<()> {
        let entry = self.run(self.client.entry(store, key))?;
        if self.json {
            return print_json(&entry_json(&entry));
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&entry.value)?;
        if entry.value.last() != Some(&b'\n') && std::io::IsTerminal::is_terminal(&out) {
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub(crate) fn put(
        &self,
        store: &str,
        key: &str,
        value: Option<String>,
        ttl: Option<&str>,
        condition: Condition,
    ) -> Result<()> {
        let ttl = ttl
            .map(store_client::parse_ttl)
            .transpose()
            .map_err(failed)?
            .flatten();
        let body = match value {
            Some(v) => v.into_bytes(),
            None => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the value from stdin")?;
                buf
            }
        };
        let options = PutOptions::new().with_ttl(ttl).condition(condition);
        let written = self.run(self.client.put(store, key, body.into(), options))?;
        if self.json {
            return print_json(&json!({
                "key": written.key,
                "version": written.version,
                "expires_at": written.expires_at.map(to_millis),
            }));
        }
        match written.expires_at {
            Some(at) => println!(
                "ok: version {} (expires at {} ms)",
                written.version,
                to_millis(at)
            ),
            None => println!("ok: version {}", written.version),
        }
        Ok(())
    }

    pub(crate) fn delete(&self, store: &str, key: &str) -> Result<()> {
        let deleted = self.run(self.client.delete(store, key))?;
        if self.json {
            return print_json(&json!({ "deleted": deleted }));
        }
        println!("{}", if deleted { "deleted" } else { "not found" });
        Ok(())
    }

    pub(crate) fn list(
        &self,
        store: &str,
        prefix: Option<&str>,
        after: Option<String>,
        limit: Option<usize>,
        all: bool,
    ) -> Result<()> {
        let mut options = ListOptions::new()
            .prefix(prefix.unwrap_or_default())
            .with_after(after);
        options.limit = limit;
        let mut collected = Vec::new();
        loop {
            let page = self.run(self.client.list(store, &options))?;
            if !self.json {
                for item in &page.items {
                    println!(
                        "{}\t{}\tversion={}",
                        item.key,
                        String::from_utf8_lossy(&item.value),
                        item.version
                    );
                }
            }
            collected.extend(page.items.iter().map(entry_json));
            if !(all && page.has_more) {
                if self.json {
                    print_json(&json!({
                        "items": collected,
                        "cursor": page.cursor,
                        "has_more": page.has_more,
                    }))?;
                } else if page.has_more {
                    eprintln!(
                        "(more: --after {} or --all)",
                        page.cursor.as_deref().unwrap_or("")
                    );
                }
                return Ok(());
            }
            if page.cursor.is_none() {
                bail!("the node said has_more without a cursor");
            }
            options = options.with_after(page.cursor);
        }
    }
}
